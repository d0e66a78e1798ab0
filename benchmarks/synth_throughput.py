"""Synthesis throughput: compositing against its I/O floor, and the Ray job against a plain loop.

    python benchmarks/synth_throughput.py [--samples 2000] [--per-core 200] [--workers 2]

1. Per core, at 512 and 1024 px: composites per second (decode the cutout and background,
   ``make_sample``, encode image JPEG + mask PNG) against the floor no compositor can beat (the
   same decodes and encodes for the same images, nothing else). Printed as a ratio
   (target: compositing within 2x of the floor).
3. Streaming: the peak resident memory of the whole local Ray (driver and workers) while the job
   makes ``--memory-samples`` samples, then ten times as many (target: ratio close to 1).
2. The Ray Data job (``segsynth synth``, not counting Ray start-up) against the same shards in
   a plain loop over the same cores (a ``multiprocessing`` pool of ``--workers`` processes),
   ``--samples`` samples at 512 px (target: Ray within 15% of the plain loop).

Needs a cutout manifest: ``--cutouts`` (default ``outputs/demo/cutouts``, made from the demo
kit with ``segsynth cutouts`` when missing).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))
from _sections import write_section  # noqa: E402
from segsynth import io  # noqa: E402
from segsynth.config import load_config  # noqa: E402
from segsynth.pipeline.synth import ShardWriter, SynthConfig, manifest_path, plan_shards  # noqa: E402
from segsynth.synth import make_sample  # noqa: E402


def ensure_cutouts(path: str) -> str:
    if io.exists(manifest_path(path)):
        return path
    from segsynth.pipeline import cutouts

    cfg = load_config(cutouts.CutoutsConfig, REPO / "configs/demo/cutouts.yaml", [f"out={path}"])
    cutouts.run(cfg)
    return path


def per_core(cfg: SynthConfig, size: int, n: int, n_cutouts: int) -> dict:
    """Composite vs floor, single process: same inputs decoded, same outputs encoded."""
    cfg = dataclasses.replace(cfg, size=size, samples_per_cutout=max(1, -(-n // n_cutouts)))
    writer = ShardWriter(cfg)
    pairs = [(c, k) for s in plan_shards(cfg) for c, k in zip(s["cutout_ids"], s["ks"])]
    pairs = sorted(pairs, key=lambda p: (p[1], p[0]))[:n]  # every cutout, then again
    bg_jpegs = {b.bg_id: io.encode_jpeg(b.rgb) for b in writer.backgrounds}
    samples = []
    t0 = time.perf_counter()
    for cutout_id, k in pairs:
        cutout = writer._decode_cutout(cutout_id)           # decode the cutout
        sample = make_sample(cutout, k, seed=cfg.seed, size=size, cfg=cfg.composite,
                             backgrounds=writer.backgrounds, distractors=writer.distractors)
        if sample.meta.get("bg_id") in bg_jpegs:              # decode the background it used
            io.decode_image(bg_jpegs[sample.meta["bg_id"]])
        io.encode_jpeg(sample.image, cfg.jpeg_quality)
        io.encode_png(sample.mask)
        samples.append((cutout_id, sample.meta.get("bg_id"), sample.image, sample.mask))
    composite_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for cutout_id, bg_id, image, mask in samples:            # the floor: the same I/O, no compositing
        io.decode_rgba(writer._rgba[cutout_id])
        if bg_id in bg_jpegs:
            io.decode_image(bg_jpegs[bg_id])
        io.encode_jpeg(image, cfg.jpeg_quality)
        io.encode_png(mask)
    floor_s = time.perf_counter() - t0
    return {"size": size, "samples": len(samples), "composites_per_s": round(len(samples) / composite_s, 1),
            "floor_per_s": round(len(samples) / floor_s, 1), "ratio_vs_floor": round(composite_s / floor_s, 2)}


def _plain_worker(args):
    cfg, shards = args
    writer = ShardWriter(cfg)
    for s in shards:
        writer({"shard": [s["shard"]], "cutout_ids": [s["cutout_ids"]], "ks": [s["ks"]]})
    return sum(len(s["ks"]) for s in shards)


def plain_loop(cfg: SynthConfig, workers: int) -> float:
    shards = plan_shards(cfg)
    chunks = [shards[i::workers] for i in range(workers)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_plain_worker, [(cfg, c) for c in chunks])
    return time.perf_counter() - t0


def ray_job(cfg: SynthConfig) -> float:
    from segsynth.pipeline import synth
    from segsynth.pipeline.ray_env import init_ray

    ray = init_ray()  # cluster start-up is not counted: Ray itself, and Ray Data's own actors
    ray.data.range(2).map_batches(lambda b: b).take_all()  # (stats and autoscaling actors), started once per cluster
    t0 = time.perf_counter()
    synth.run(cfg)
    return time.perf_counter() - t0


class PeakRSS:
    """Samples the summed RSS of this process and all its descendants (the local Ray) in a thread."""

    def __init__(self, interval: float = 0.2):
        import threading

        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def streaming_memory(base: SynthConfig, samples: int, n_cutouts: int) -> dict:
    from segsynth.pipeline import synth
    from segsynth.pipeline.ray_env import init_ray

    init_ray()
    out = {}
    tmp = Path(tempfile.mkdtemp(prefix="segsynth-mem-"))
    try:
        for label, n in (("1x", samples), ("10x", samples * 10)):
            cfg = dataclasses.replace(base, out=str(tmp / label), samples_per_cutout=max(1, -(-n // n_cutouts)))
            with PeakRSS() as peak:
                synth.run(cfg)
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
    p.add_argument("--write", action="store_true", help="rewrite the Synthesis section of BENCHMARKS.md")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cutouts = ensure_cutouts(args.cutouts)
    n_cutouts = io.read_parquet(manifest_path(cutouts), columns=["cutout_id"]).num_rows
    base = SynthConfig(cutouts=cutouts, backgrounds=args.backgrounds, size=512, workers=args.workers,
                       samples_per_cutout=1, shard_size=50, contact_sheet=0)
    results = {"cpu_count": os.cpu_count(), "per_core": [per_core(base, s, args.per_core, n_cutouts) for s in (512, 1024)]}
    for r in results["per_core"]:
        print(f"per core, {r['size']} px: {r['composites_per_s']} composites/s, floor {r['floor_per_s']}/s, "
              f"ratio {r['ratio_vs_floor']}x the I/O floor (target <= 2)")
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
                  f"Ray job {j['ray_job_s']} s, ratio {j['ray_over_plain']} (target <= 1.15)")
        m = results["memory"] = streaming_memory(base, args.memory_samples, n_cutouts)
        print(f"streaming: peak RSS {m['1x']['peak_rss_mb']} MB for {m['1x']['samples']} samples, "
              f"{m['10x']['peak_rss_mb']} MB for {m['10x']['samples']}, ratio {m['ratio_10x_vs_1x']}")
    print(json.dumps(results))
    if args.write:
        write_section(REPO / "BENCHMARKS.md", "## Synthesis", section(results, " ".join(sys.argv[1:])))


def section(r: dict, argv: str) -> str:
    lines = ["## Synthesis", "", f"`python benchmarks/synth_throughput.py {argv}` (demo kit cutouts and rooms, "
             f"{r['cpu_count']} cores, {time.strftime('%Y-%m-%d')}).", "",
             "Compositing per core (one process; decode the cutout and the room it used, composite, encode "
             "image JPEG + mask PNG) against the floor no compositor can beat (the same decodes and encodes alone). "
             "Target: within 2x of the floor.", "",
             "| size | samples | composites/s | I/O floor/s | ratio to floor |", "|---|---|---|---|---|"]
    for c in r["per_core"]:
        lines.append(f"| {c['size']} | {c['samples']} | {c['composites_per_s']} | {c['floor_per_s']} | {c['ratio_vs_floor']}x |")
    if "job" in r:
        m = r["memory"]
        lines += ["", f"The Ray Data job (`segsynth synth`; Ray's start-up, including Ray Data's own per-cluster actors, not "
                  "counted; the job's actor pool start-up counted) against the "
                  f"same samples at 512 px written by a plain loop over the same {r['job'][0]['workers']} cores (a "
                  "multiprocessing pool of as many processes). Target: Ray within 15% (ratio <= 1.15) at 2000 samples.", "",
                  "| samples | plain loop (s) | Ray job (s) | Ray / plain | Ray's extra seconds |", "|---|---|---|---|---|"]
        for j in r["job"]:
            lines.append(f"| {j['samples']} | {j['plain_loop_s']} | {j['ray_job_s']} | {j['ray_over_plain']} | {j['ray_fixed_s']} |")
        lines += ["", "Most of Ray's extra time is start-up per job (the job's actor pool and the streaming executor: "
                  "3-5 s measured here even for no-op actors), so the ratio falls as the job grows; the rest is "
                  "run-to-run noise on a 2-core machine (the 10000-sample job's extra time has been 3.4 s and 7.7 s in "
                  "two runs). At 2000 samples (about 10 s of work on 2 cores) the start-up alone keeps the job outside "
                  "the 15% target.", "",
                  "Streaming: peak resident memory of the whole local Ray (driver and all workers) while the job runs.", "",
                  "| samples | peak RSS (MB) |", "|---|---|",
                  f"| {m['1x']['samples']} | {m['1x']['peak_rss_mb']} |", f"| {m['10x']['samples']} | {m['10x']['peak_rss_mb']} |",
                  "", f"Ten times the samples: {m['ratio_10x_vs_1x']}x the peak memory."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
