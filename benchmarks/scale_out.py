"""Scaling synthesis out: one node against two, one worker against two, and a worker's memory
for the catalog against a ten times larger one.

    python benchmarks/scale_out.py --write     # about 10 min on 2 cores; needs the CPU recipe's
                                               # cutouts (outputs/cpu/cutouts) and ../shared/data

Every run is the real job (:func:`segsynth.synth.job.run`, the CPU recipe's settings of
``configs/cpu/synth.yaml`` at 320 px) on a Ray cluster started for it in a fresh process
(``ray.cluster_utils.Cluster``: every node on this machine, each with its own raylet and CPU
count), and connected to with ``--address``, so every case pays the same connection cost.

1. Nodes: ``--samples`` samples with two workers of one CPU each, on one node with two CPUs
   against two nodes with one CPU each (one worker lands on each). Ratio: two nodes' samples/s
   over one node's.
2. Workers: the same samples on one node with two CPUs, one worker against two. Ratio: two
   workers' samples/s over one worker's; one worker's rate is the throughput per worker in docs/operations.md.
3. Memory: ``--memory-samples`` samples with two workers, from the catalog's manifest and from a
   ten times larger one (the same cutouts repeated under new ids, written here in row groups of
   64), same shard size and workers. The figure is the summary's ``peak_worker_rss_mb`` (the
   largest worker's peak resident memory); the ratio 10x over 1x is the target (close to 1).
   The manifests' sizes say what a worker held before, when it loaded the catalog.

Results go to ``--results``; :func:`section` renders the "## Scaling out" section from them alone.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _sections import finish  # noqa: E402

HEADING = "## Scaling out"
CONFIG = "configs/cpu/synth.yaml"
COPIES = 10
MEMORY_TARGET = 1.1  # 10x catalog over 1x: peak worker memory within 10% (it held the catalog before)


def _case(spec: dict) -> dict:
    """One run of the synthesis job on a fresh local cluster of ``spec["nodes"]`` (CPUs per node)."""
    import resource

    from ray.cluster_utils import Cluster

    from segsynth.config import load_config
    from segsynth.synth.config import SynthConfig
    from segsynth.synth.job import run

    nodes = spec["nodes"]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": nodes[0], "object_store_memory": 200 * 2**20})
    for cpus in nodes[1:]:
        cluster.add_node(num_cpus=cpus, object_store_memory=200 * 2**20)
    cluster.wait_for_nodes()
    try:
        cfg = load_config(SynthConfig, REPO / CONFIG, [
            f"cutouts={spec['cutouts']}", f"out={spec['out']}", f"workers={spec['workers']}", "cpus_per_worker=1",
            f"samples_per_cutout={spec['per_cutout']}", f"limit_cutouts={spec['products']}",
            f"shard_size={spec['shard_size']}", "contact_sheet=0"])
        t0 = time.perf_counter()
        summary = run(cfg, address=cluster.address)
        wall = time.perf_counter() - t0
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    return {"nodes": nodes, "workers": spec["workers"], "samples": summary["samples_written"],
            "shards": summary["shards"], "wall_s": round(wall, 1),
            "samples_per_s": round(summary["samples_written"] / wall, 2),
            "samples_per_node": sorted(summary["samples_per_node"].values(), reverse=True),
            "peak_worker_rss_mb": summary["peak_worker_rss_mb"],
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_case(spec: dict) -> dict:
    """:func:`_case` in a fresh process (its own Ray session and temp dir)."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="so-", dir="/tmp"))  # short: Ray's socket paths must fit 107 characters
    (tmp / "ray").mkdir()
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import scale_out; "
            "print('RESULT', json.dumps(scale_out._case(json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3600)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"case {spec} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    shutil.rmtree(tmp, ignore_errors=True)
    result = json.loads(lines[-1][len("RESULT "):])
    print(json.dumps(result), flush=True)
    return result


def repeat_catalog(src: str, dest: Path, copies: int) -> int:
    """``copies`` times the manifest ``src`` (a folder or file) under new ids (``x<j>/<id>`` for
    copy j > 0, the originals first), in row groups of 64; returns its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from segsynth.synth.shards import manifest_path

    source = pq.ParquetFile(manifest_path(src))
    dest.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(dest / "manifest.parquet", source.schema_arrow) as writer:
        for j in range(copies):
            for g in range(source.num_row_groups):
                t = source.read_row_group(g)
                if j:
                    ids = pa.array([f"x{j}/{c}" for c in t.column("cutout_id").to_pylist()])
                    t = t.set_column(t.schema.get_field_index("cutout_id"), "cutout_id", ids)
                writer.write_table(t, row_group_size=64)
                rows += t.num_rows
    return rows


def run(args) -> dict:
    from segsynth.synth.shards import manifest_path

    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    load0 = os.getloadavg()[0]
    base = {"cutouts": str(Path(args.cutouts).resolve()), "per_cutout": args.per_cutout,
            "products": args.samples // args.per_cutout, "shard_size": args.shard_size}
    cases = {}
    for name, nodes, workers in (("one_node", [2], 2), ("two_nodes", [1, 1], 2), ("one_worker", [2], 1)):
        cases[name] = run_case({**base, "nodes": nodes, "workers": workers, "out": str(out / name)})
    big = out / "catalog-10x"
    rows = repeat_catalog(args.cutouts, big, COPIES)
    memory = {}
    mem = {**base, "products": args.memory_samples // args.per_cutout, "nodes": [2], "workers": 2}
    for name, cutouts in (("1x", base["cutouts"]), ("10x", str(big))):
        memory[name] = run_case({**mem, "cutouts": cutouts, "out": str(out / f"memory-{name}")})
        memory[name]["manifest_mb"] = round(os.path.getsize(manifest_path(cutouts)) / 2**20, 1)
    memory["10x"]["cutouts"] = rows
    memory["1x"]["cutouts"] = rows // COPIES
    shutil.rmtree(big)  # 1.5 GB of repeated bytes
    return {"argv": " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
            "load_avg": [round(load0, 1), round(os.getloadavg()[0], 1)], "config": CONFIG,
            "cutouts": os.path.relpath(base["cutouts"], REPO), "size": 320, "shard_size": args.shard_size,
            "cases": cases, "memory": memory, "memory_target": MEMORY_TARGET,
            "nodes_ratio": round(cases["two_nodes"]["samples_per_s"] / cases["one_node"]["samples_per_s"], 2),
            "workers_ratio": round(cases["one_node"]["samples_per_s"] / cases["one_worker"]["samples_per_s"], 2),
            "memory_ratio": round(memory["10x"]["peak_worker_rss_mb"] / memory["1x"]["peak_worker_rss_mb"], 3)}


def section(r: dict) -> str:
    """The "## Scaling out" section of BENCHMARKS.md from one run's results (nothing else)."""
    c, m = r["cases"], r["memory"]
    one, two, single = c["one_node"], c["two_nodes"], c["one_worker"]
    lines = [HEADING, "",
             f"`python benchmarks/scale_out.py {r['argv']}` ({r['date']}; {r['cores']} cores, one-minute load average "
             f"{r['load_avg'][0]} at the start and {r['load_avg'][1]} at the end). The synthesis job with the CPU "
             f"recipe's settings (`{r['config']}`, {r['size']} px, shards of {r['shard_size']}, cutouts of "
             f"`{r['cutouts']}`), each case on its own local Ray cluster (`ray.cluster_utils.Cluster`, every node on "
             "this machine), timed from the job's start to its summary.", "",
             "| case | CPUs of each node | workers | samples | shards | seconds | samples/s | samples per node |",
             "|---|---|---|---|---|---|---|---|"]
    for label, x in (("one node", one), ("two nodes", two), ("one worker", single)):
        lines.append(f"| {label} | {' + '.join(map(str, x['nodes']))} | {x['workers']} | "
                     f"{x['samples']} | {x['shards']} | {x['wall_s']} | {x['samples_per_s']} | "
                     f"{', '.join(map(str, x['samples_per_node']))} |")
    per_worker = single["samples_per_s"]
    lines += ["",
              f"- **Two nodes of one CPU against one node of two: {r['nodes_ratio']}x** the samples per second "
              f"({two['samples_per_s']} against {one['samples_per_s']}). The two nodes made "
              f"{' and '.join(map(str, two['samples_per_node']))} samples.",
              f"- **Two workers against one, on one node of two CPUs: {r['workers_ratio']}x** "
              f"({one['samples_per_s']} against {single['samples_per_s']} samples/s; linear would be twice).",
              f"- **Throughput per worker** (one CPU, {r['size']} px, these settings): {per_worker} samples/s, "
              f"{round(per_worker * 3600)} an hour.",
              f"- What limits scaling here: this machine has {r['cores']} cores, and the job's driver, each node's "
              "raylet and object store, and the workers all share them, so a second worker or node adds less than "
              "one core of compositing. On a cluster each node brings its own cores; the per-worker rate is the "
              "figure to plan with.", ""]
    x1, x10 = m["1x"], m["10x"]
    verdict = "met" if r["memory_ratio"] <= r["memory_target"] else "missed"
    lines += [f"Memory: {x1['samples']} samples with {x1['workers']} workers from the catalog ({x1['cutouts']} cutouts, "
              f"a {x1['manifest_mb']} MB manifest) and from ten copies of it under new ids ({x10['cutouts']} cutouts, "
              f"{x10['manifest_mb']} MB), same shard size and workers.", "",
              "| catalog | cutouts | manifest (MB) | peak worker memory (MB) | driver peak (MB) | samples/s |",
              "|---|---|---|---|---|---|",
              f"| 1x | {x1['cutouts']} | {x1['manifest_mb']} | {x1['peak_worker_rss_mb']} | {x1['driver_peak_rss_mb']} | "
              f"{x1['samples_per_s']} |",
              f"| 10x | {x10['cutouts']} | {x10['manifest_mb']} | {x10['peak_worker_rss_mb']} | "
              f"{x10['driver_peak_rss_mb']} | {x10['samples_per_s']} |", "",
              f"Peak worker memory, 10x over 1x: **{r['memory_ratio']}** (target <= {r['memory_target']}: "
              f"**{verdict}**). A worker holds an index of the catalog (ids and categories) and one shard's inputs; "
              f"before, each worker loaded every cutout's bytes, {x10['manifest_mb']} MB for the larger catalog."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cutouts", default="outputs/cpu/cutouts", help="a cutout folder (manifest.parquet) or manifest")
    p.add_argument("--samples", type=int, default=3072, help="samples of the nodes and workers cases")
    p.add_argument("--memory-samples", type=int, default=512, help="samples of each memory case")
    p.add_argument("--per-cutout", type=int, default=4, help="samples per cutout")
    p.add_argument("--shard-size", type=int, default=32)
    p.add_argument("--out", default="outputs/bench/scale_out")
    p.add_argument("--results", default="outputs/bench/scale_out/results.json")
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    p.add_argument("--section-only", action="store_true", help="render --results again, measure nothing")
    args = p.parse_args()
    return finish(args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
