"""Synthesis throughput: compositing against its I/O floor, and the Ray job against a plain loop.

    python benchmarks/synth_throughput.py [--samples 2000 10000] [--per-core 200] [--workers 2] [--write]

1. Per core, at 512 and 1024 px: composites per second of the job's own ``ShardWriter.make_shard``
   (one fresh writer, as one actor: the planned shards in order, ``--per-core`` samples) against
   the floor no compositor can beat: exactly the reading, decoding and encoding that ``make_shard``
   did for those samples, nothing else (each shard's inputs: its cutouts and its sample of
   distractors and photos, ``ShardWriter.shard_inputs``, which keeps them for the next shard when
   it draws the same ones; one image encode and one mask PNG encode per sample). A writer's start-up (indexing the inputs) is reported beside them. Target: within 2x.
2. The Ray Data job (``segsynth synth``, not counting Ray start-up) against the same shards in
   a plain loop over the same cores (a ``multiprocessing`` pool of ``--workers`` processes),
   ``--samples`` samples at 512 px (target: Ray within 15% of the plain loop at the first size).
3. Streaming: the peak resident memory of the whole local Ray (driver and workers) while the job
   makes ``--memory-samples`` samples, then ten times as many (target: ratio close to 1).

Needs a cutout manifest: ``--cutouts`` (default ``outputs/demo/cutouts``, made from the demo
kit with ``segsynth cutouts`` when missing). ``--write`` rewrites the "## Synthesis" section of
BENCHMARKS.md with :func:`section`, built from this run's results alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import _procs  # noqa: E402
from _sections import write_section  # noqa: E402

SECTION = "## Synthesis"
TARGETS = {"per_core_ratio": 2.0, "ray_over_plain": 1.15}


def ensure_cutouts(path: str) -> str:
    from segsynth import io
    from segsynth.synth.shards import manifest_path

    if io.exists(manifest_path(path)):
        return path
    from segsynth.config import load_config
    from segsynth.cutouts.config import CutoutsConfig
    from segsynth.cutouts.job import run

    run(load_config(CutoutsConfig, REPO / "configs/demo/cutouts.yaml", [f"out={path}"]))
    return path


def per_core(cfg, size: int, n: int, n_cutouts: int) -> dict:
    """The job's per-sample work in one process against the same decodes and encodes alone.

    Composite side: ``ShardWriter.make_shard`` over the first ``n`` planned samples, shard by
    shard, on one fresh writer (an actor's start-up, timed apart). Floor: the same reads and
    decodes of each shard's inputs, then the same encodes of the very arrays it composited.
    """
    from segsynth import io
    from segsynth.synth.shards import ShardWriter, plan_shards

    cfg = dataclasses.replace(cfg, size=size, samples_per_cutout=max(1, -(-n // n_cutouts)))
    shards, left = [], n
    for s in plan_shards(cfg):  # the job's order: a cutout's samples are consecutive
        if left <= 0:
            break
        shards.append({**s, "cutout_ids": s["cutout_ids"][:left], "ks": s["ks"][:left]})
        left -= len(shards[-1]["ks"])

    read: list[tuple[int, list[str]]] = []

    class RecordingWriter(ShardWriter):
        def shard_inputs(self, shard, cutout_ids):  # each shard reads and decodes its inputs once
            read.append((shard, list(cutout_ids)))
            return super().shard_inputs(shard, cutout_ids)

    t0 = time.perf_counter()
    writer = RecordingWriter(cfg)
    init_s = time.perf_counter() - t0
    # Keep the arrays make_shard composites (not its encoded bytes: a JPEG round trip would change
    # them), so the floor encodes exactly what the job encoded.
    module = inspect.getmodule(ShardWriter)
    made = []
    real_make_sample = module.make_sample

    def recording_make_sample(*a, **kw):
        sample = real_make_sample(*a, **kw)
        made.append(sample)
        return sample

    composite_s = 0.0
    with mock.patch.object(module, "make_sample", recording_make_sample):
        for s in shards:
            t0 = time.perf_counter()
            _, inputs = writer.make_shard(list(s["cutout_ids"]), list(s["ks"]), shard=int(s["shard"]))
            composite_s += time.perf_counter() - t0
            if inputs.corrupt:
                raise RuntimeError(f"corrupt cutouts in {cfg.cutouts}: {inputs.corrupt}")
    writer._last.clear()  # the floor starts as the writer did: without the inputs a shard kept for the next
    t0 = time.perf_counter()
    for shard, cutout_ids in read:                           # the floor: the same reads and decodes ...
        inputs = ShardWriter.shard_inputs(writer, shard, cutout_ids)
    for sample in made:                                      # ... and the same encodes, nothing else
        writer._encode(sample.image)
        io.encode_png(sample.mask)
    floor_s = time.perf_counter() - t0
    return {"size": size, "samples": len(made), "cutout_decodes": sum(len(set(c)) for _, c in read),
            "image_format": cfg.image_format, "jpeg_quality": cfg.jpeg_quality,
            "backgrounds": len(inputs.backgrounds), "distractors": len(inputs.distractors),
            "writer_start_s": round(init_s, 2),
            "composites_per_s": round(len(made) / composite_s, 1), "floor_per_s": round(len(made) / floor_s, 1),
            "ratio_vs_floor": round(composite_s / floor_s, 2)}


def _plain_worker(args):
    from segsynth.synth.shards import ShardWriter

    cfg, shards = args
    writer = ShardWriter(cfg)
    for s in shards:
        writer({"shard": [s["shard"]], "cutout_ids": [s["cutout_ids"]], "ks": [s["ks"]]})
    return sum(len(s["ks"]) for s in shards)


def plain_loop(cfg, workers: int) -> float:
    from segsynth.synth.shards import plan_shards

    shards = plan_shards(cfg)
    chunks = [shards[i::workers] for i in range(workers)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_plain_worker, [(cfg, c) for c in chunks])
    return time.perf_counter() - t0


def ray_job(cfg) -> float:
    from segsynth.ray_env import init_ray
    from segsynth.synth.job import run

    ray = init_ray()  # cluster start-up is not counted: Ray itself, and Ray Data's own actors
    ray.data.range(2).map_batches(lambda b: b).take_all()  # (stats and autoscaling actors), started once per cluster
    t0 = time.perf_counter()
    run(cfg)
    return time.perf_counter() - t0


class PeakRSS(_procs.Sampler):
    """The peak of the summed RSS of this process and all its descendants (the local Ray), sampled in a thread."""

    def __init__(self, interval: float = 0.2):
        self.peak = 0
        super().__init__(self.read, interval)

    def read(self):
        table = _procs.proc_table()
        self.peak = max(self.peak, sum(table[pid].rss for pid in _procs.below(table, os.getpid()) if pid in table))


def streaming_memory(base, samples: int, n_cutouts: int) -> dict:
    from segsynth.ray_env import init_ray
    from segsynth.synth.job import run
    from segsynth.synth.shards import plan_shards

    init_ray()
    out = {}
    tmp = Path(tempfile.mkdtemp(prefix="segsynth-mem-"))
    try:
        for label, n in (("1x", samples), ("10x", samples * 10)):
            cfg = dataclasses.replace(base, out=str(tmp / label), samples_per_cutout=max(1, -(-n // n_cutouts)))
            with PeakRSS() as peak:
                run(cfg)
            out[label] = {"samples": sum(len(s["ks"]) for s in plan_shards(cfg)), "peak_rss_mb": round(peak.peak / 2**20)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["ratio_10x_vs_1x"] = round(out["10x"]["peak_rss_mb"] / out["1x"]["peak_rss_mb"], 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cutouts", default=str(REPO / "outputs/demo/cutouts"))
    p.add_argument("--backgrounds", nargs="*", default=[str(REPO / "demo_kit/backgrounds/rooms")])
    p.add_argument("--samples", type=int, nargs="+", default=[2000, 10000],
                   help="job sizes for the Ray-vs-plain comparison (the first is the target's)")
    p.add_argument("--per-core", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-samples", type=int, default=300)
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--out", default=str(REPO / "outputs" / "bench" / "synth_throughput.json"),
                   help="where the results JSON goes")
    p.add_argument("--write", action="store_true", help="rewrite the Synthesis section of BENCHMARKS.md")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from segsynth import io
    from segsynth.synth.config import SynthConfig
    from segsynth.synth.shards import manifest_path, plan_shards

    cutouts = ensure_cutouts(args.cutouts)
    n_cutouts = io.read_parquet(manifest_path(cutouts), columns=["cutout_id"]).num_rows
    base = SynthConfig(cutouts=cutouts, backgrounds=args.backgrounds, size=512, workers=args.workers,
                       samples_per_cutout=1, shard_size=50, contact_sheet=0)
    results = {"argv": " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
               "load_avg_start": round(os.getloadavg()[0], 1),
               "cutouts": os.path.relpath(cutouts, REPO), "n_cutouts": n_cutouts,
               "backgrounds": [os.path.relpath(b, REPO) for b in args.backgrounds], "targets": TARGETS,
               "per_core": [per_core(base, s, args.per_core, n_cutouts) for s in (512, 1024)]}
    for r in results["per_core"]:
        print(f"per core, {r['size']} px: {r['composites_per_s']} composites/s, floor {r['floor_per_s']}/s, "
              f"ratio {r['ratio_vs_floor']}x the I/O floor (target <= {TARGETS['per_core_ratio']})")
    if not args.skip_ray:
        results["job"] = []
        for samples in args.samples:
            cfg = dataclasses.replace(base, samples_per_cutout=max(1, -(-samples // n_cutouts)))
            tmp = Path(tempfile.mkdtemp(prefix="segsynth-bench-"))
            try:
                n = sum(len(s["ks"]) for s in plan_shards(cfg))
                plain_s = plain_loop(dataclasses.replace(cfg, out=str(tmp / "plain")), args.workers)
                ray_s = ray_job(dataclasses.replace(cfg, out=str(tmp / "ray")))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            j = {"samples": n, "size": 512, "workers": args.workers, "plain_loop_s": round(plain_s, 2),
                 "ray_job_s": round(ray_s, 2), "ray_over_plain": round(ray_s / plain_s, 3),
                 "ray_fixed_s": round(ray_s - plain_s, 2)}
            results["job"].append(j)
            print(f"{n} samples at 512 px on {args.workers} workers: plain loop {j['plain_loop_s']} s, "
                  f"Ray job {j['ray_job_s']} s, ratio {j['ray_over_plain']} (target <= {TARGETS['ray_over_plain']})")
        m = results["memory"] = streaming_memory(base, args.memory_samples, n_cutouts)
        print(f"streaming: peak RSS {m['1x']['peak_rss_mb']} MB for {m['1x']['samples']} samples, "
              f"{m['10x']['peak_rss_mb']} MB for {m['10x']['samples']}, ratio {m['ratio_10x_vs_1x']}")
    results["load_avg_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(results))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    if args.write:
        write_section(REPO / "BENCHMARKS.md", SECTION, section(results))


def _verdict(value: float, target: float, label: str) -> str:
    return f"**{'met' if value <= target else 'missed'}** ({label} {value} against <= {target})"


def section(r: dict) -> str:
    """The "## Synthesis" section of BENCHMARKS.md from one run's results (nothing else)."""
    t = r["targets"]
    command = " ".join(["python benchmarks/synth_throughput.py", r["argv"]]).strip()
    lines = [SECTION, "", f"`{command}` ({r['n_cutouts']} cutouts in `{r['cutouts']}`, backgrounds "
             + ", ".join(f"`{b}`" for b in r["backgrounds"])
             + f"; {r['cpu_count']} cores, one-minute load average {r['load_avg_start']} at the start and "
             f"{r['load_avg_end']} at the end; {r['date']}).", ""]
    pc = r["per_core"]
    first = pc[0]
    fmt = "JPEG" if first["image_format"] == "jpeg" else "PNG"
    quality = f" quality {first['jpeg_quality']}" if first["image_format"] == "jpeg" else ""
    lines += [f"Compositing per core: the job's own `ShardWriter.make_shard` in one process (one fresh writer, "
              "as one actor, over the planned shards in the job's order) against the floor no compositor can beat: "
              "exactly the reading, decoding and encoding `make_shard` did for those samples, alone. The floor "
              "counts each shard's inputs (its cutouts, and the distractors and room photos drawn for the shard, "
              "read and decoded once per shard, or kept from the shard before when it drew the same ones) and, "
              f"per sample, one image encode ({fmt}{quality}) and one mask "
              "PNG encode. A writer's start-up (indexing its inputs, no pixels) is the last column. "
              f"Target: within {t['per_core_ratio']}x of the floor.", "",
              "| size | samples | cutout decodes | composites/s | I/O floor/s | ratio to floor | writer start-up (s) |",
              "|---|---|---|---|---|---|---|"]
    for c in pc:
        lines.append(f"| {c['size']} | {c['samples']} | {c['cutout_decodes']} | {c['composites_per_s']} | "
                     f"{c['floor_per_s']} | {c['ratio_vs_floor']}x | {c['writer_start_s']} |")
    lines += ["", "Per core target: " + "; ".join(
        f"{c['size']} px {_verdict(c['ratio_vs_floor'], t['per_core_ratio'], 'ratio')}" for c in pc) + "."]
    if "job" in r:
        jobs, m = r["job"], r["memory"]
        j0 = jobs[0]
        lines += ["", f"The Ray Data job (`segsynth synth`; Ray's start-up, including Ray Data's own per-cluster "
                  "actors, not counted; the job's actor pool start-up counted) against the same samples at "
                  f"{j0['size']} px written by a plain loop over the same {j0['workers']} cores (a multiprocessing "
                  f"pool of as many processes). Target: Ray / plain <= {t['ray_over_plain']} at the first job size.", "",
                  "| samples | plain loop (s) | Ray job (s) | Ray / plain | Ray's extra seconds |", "|---|---|---|---|---|"]
        for j in jobs:
            lines.append(f"| {j['samples']} | {j['plain_loop_s']} | {j['ray_job_s']} | {j['ray_over_plain']} | {j['ray_fixed_s']} |")
        prose = [f"Target at {j0['samples']} samples: {_verdict(j0['ray_over_plain'], t['ray_over_plain'], 'Ray / plain')}."]
        if len(jobs) > 1:
            last = jobs[-1]
            trend = ("fell" if last["ray_over_plain"] < j0["ray_over_plain"] else
                     "rose" if last["ray_over_plain"] > j0["ray_over_plain"] else "stayed")
            prose.append(f"From {j0['samples']} to {last['samples']} samples the ratio {trend} "
                         f"({j0['ray_over_plain']} to {last['ray_over_plain']}) and Ray's extra time went from "
                         f"{j0['ray_fixed_s']} s to {last['ray_fixed_s']} s.")
            fixed = [j["ray_fixed_s"] for j in jobs]
            if min(fixed) > 0 and max(fixed) <= 2 * min(fixed) and last["samples"] > 2 * j0["samples"]:
                prose.append("An extra time that grows much less than the work points to a cost per job (the "
                             "actor pool's start and the streaming executor) rather than per sample; one run "
                             "per size cannot separate it from run-to-run noise.")
        lines += ["", " ".join(prose), "",
                  "Streaming: peak resident memory of the whole local Ray (driver and all workers) while the job runs.", "",
                  "| samples | peak RSS (MB) |", "|---|---|",
                  f"| {m['1x']['samples']} | {m['1x']['peak_rss_mb']} |", f"| {m['10x']['samples']} | {m['10x']['peak_rss_mb']} |",
                  "", f"{m['10x']['samples'] / m['1x']['samples']:.2f} times the samples: {m['ratio_10x_vs_1x']}x "
                  "the peak memory."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
