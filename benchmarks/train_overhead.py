"""Training throughput: the Ray Train loop against a plain single-process PyTorch loop, and the
production model's samples per second.

    python benchmarks/train_overhead.py            # CPU figures (GPU ones too when CUDA is there)
    python benchmarks/train_overhead.py --write    # also rewrite "## Training overhead" in BENCHMARKS.md

1. Overhead ratio: optimizer steps per second of ``segsynth train`` (1 Ray Train worker, Ray Data
   shard, ``iter_torch_batches`` with the augmenting collate, reports) against a plain loop in
   this process over the same decoded rows, same model, batch, augmentation, ``Stepper`` and
   torch thread count. Ray's rate is the mean of the per-epoch training rates after the first
   epoch (that one includes the iterator's start); the plain loop is timed after 2 warm-up steps.
2. EfficientNet-B5 FPN on CPU at 320 px: training samples per second (forward, backward, AdamW).
3. On a GPU: EfficientNet-B5 FPN at 512 px with AMP (bf16, channels_last): training samples per
   second and peak GPU memory.

Data: a generated synthetic set in the synth contract (boxes/ellipses on noise, 128 px), so the
script needs nothing but the repo. Models use random weights (same FLOPs as trained ones).
``--write`` renders the section with :func:`section` from this run's results alone (also saved
as JSON to ``--out``).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import _procs  # noqa: E402
from _sections import write_section  # noqa: E402

log = logging.getLogger("bench.train")

SECTION = "## Training overhead"
TINY = ["encoder_name=tu-mobilenetv3_small_050", "encoder_weights=null", "decoder_pyramid_channels=64",
        "decoder_segmentation_channels=32"]
# the CPU recipe's model and worker (configs/cpu/train.yaml), random weights: the same FLOPs
RECIPE = ["encoder_name=tu-tf_efficientnet_lite2", "encoder_weights=null", "decoder_pyramid_channels=128",
          "decoder_segmentation_channels=64", "cpus_per_worker=1"]
MODELS = {"tiny": (TINY, "tu-mobilenetv3_small_050 FPN-64"), "recipe": (RECIPE, "the CPU recipe's tu-tf_efficientnet_lite2 FPN-128")}


def make_synth(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` samples (4 per cutout) in the synthetic-dataset contract."""
    from segsynth import io

    rng = np.random.default_rng(seed)
    rows = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = np.clip(rng.integers(0, 255, 3) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        ry, rx = rng.integers(size // 8, size // 3, 2)
        mask = ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1).astype(np.uint8) * 255
        image[mask > 0] = rng.integers(0, 255, 3)
        rows.append({"sample_id": f"bench/{i // 4:04d}#{i % 4}", "cutout_id": f"bench/{i // 4:04d}", "category": "x",
                     "image": io.encode_jpeg(image), "mask": io.encode_png(mask), "bg_kind": "noise"})
    io.write_parquet(rows, folder / "shards" / "shard-00000.parquet")
    return folder


# ---------------------------------------------------------------- where the CPU goes (Linux /proc)
def cpu_snapshot() -> dict | None:
    """The machine's CPU time by state and every process, now; None where there is no /proc."""
    if not _procs.available():
        return None
    return {"t": time.perf_counter(), "states": _procs.cpu_states(), "procs": _procs.proc_table()}


def cpu_shares(a: dict | None, b: dict | None, loop: set[int], root: int) -> dict | None:
    """Between snapshots ``a`` and ``b``: shares of the machine's CPU time taken by the ``loop``
    processes (user and kernel), by the other processes under ``root`` (this benchmark's process:
    the embedded Ray's raylet, GCS and workers are its descendants) and by everything else, and idle."""
    if a is None or b is None:
        return None
    total = sum(y - x for x, y in zip(a["states"], b["states"])) or 1
    idle = (b["states"][3] - a["states"][3]) + (b["states"][4] - a["states"][4])
    ours = _procs.below(b["procs"], root)
    user = kernel = ray_others = other = 0
    for pid, p in b["procs"].items():
        before = a["procs"].get(pid)
        du, dk = p.user - (before.user if before else 0), p.kernel - (before.kernel if before else 0)
        if pid in loop:
            user, kernel = user + du, kernel + dk
        elif pid in ours:
            ray_others += du + dk
        else:
            other += du + dk
    return {"seconds": b["t"] - a["t"], "loop_user": user / total, "loop_kernel": kernel / total,
            "ray_others": ray_others / total, "other": other / total, "idle": idle / total}


def worker_window(snaps: list[dict], title: str = "ray::RayTrainWorker", skip_s: float = 20.0) -> dict | None:
    """CPU shares over the training worker's life in ``snaps``, from ``skip_s`` after it appears
    (model build, first batches) to the last snapshot that saw it; None when too short to tell."""
    seen = [i for i, s in enumerate(snaps) if any(p.cmdline.startswith(title) for p in s["procs"].values())]
    if len(seen) < 3:
        return None
    first = next((i for i in seen if snaps[i]["t"] - snaps[seen[0]]["t"] >= skip_s), seen[1])
    a, b = snaps[first], snaps[seen[-1]]
    if b["t"] - a["t"] < 5:
        return None
    workers = {pid for pid, p in b["procs"].items() if p.cmdline.startswith(title)}
    return {**cpu_shares(a, b, workers, os.getpid()), "skipped_s": a["t"] - snaps[seen[0]]["t"]}


def ray_loop(cfg) -> dict:
    from segsynth.train.job import run

    snaps: list[dict] = []

    def sample():
        snap = cpu_snapshot()
        if snap is not None:
            snaps.append(snap)

    t0 = time.perf_counter()
    with _procs.Sampler(sample, every_s=2.0):
        summary = run(cfg)
    wall = time.perf_counter() - t0
    rows = list(csv.DictReader(open(Path(cfg.out) / "metrics.csv")))
    rows = rows[1:] or rows  # the first epoch also warms up the model and allocator
    steps = [float(r["samples_per_s"]) * float(r["train_s"]) / cfg.batch_size for r in rows]
    train_s = [float(r["train_s"]) for r in rows]
    start_s = [float(r["first_batch_s"]) for r in rows]
    return {"steps_per_s": sum(steps) / sum(train_s),  # the iterator's start each epoch included
            "steady_steps_per_s": (sum(steps) - len(rows)) / (sum(train_s) - sum(start_s)),  # first step excluded
            "iterator_start_s": float(np.mean(start_s)), "epochs_timed": len(rows), "steps": summary["steps"], "wall_s": wall,
            "cpu": worker_window(snaps)}


def plain_loop(cfg, steps: int, warmup: int = 2) -> dict:
    """The same training step without Ray: decoded rows in memory, collate, Stepper."""
    import torch

    from segsynth.model import build_model
    from segsynth.train.data import decoded_locally
    from segsynth.train.loop import Augmenter, Stepper, model_spec

    torch.set_num_threads(cfg.threads)
    rows = decoded_locally(cfg, "train")
    rng = np.random.default_rng(cfg.seed)
    model = build_model(model_spec(cfg), encoder_weights=None)
    device = torch.device("cpu")
    stepper = Stepper(model, cfg, total_steps=steps + warmup, device=device)
    aug = Augmenter(cfg.augment, cfg.seed, train=True)
    b = cfg.batch_size

    def batches():
        epoch = 0
        while True:
            aug.epoch = epoch
            order = rng.permutation(len(rows))
            for s in range(0, len(order) - b + 1, b):
                chunk = [rows[i] for i in order[s:s + b]]
                yield {"key": np.array([r["key"] for r in chunk], dtype=object),
                       "image": np.stack([r["image"] for r in chunk]), "mask": np.stack([r["mask"] for r in chunk])}
            epoch += 1

    it = batches()
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0, snap0 = time.perf_counter(), cpu_snapshot()
        for micro in range(cfg.grad_accum):
            stepper.micro_step(aug(next(it)), sync=micro == cfg.grad_accum - 1)
        stepper.optimizer_step()
    dt = time.perf_counter() - t0
    cpu = cpu_shares(snap0, cpu_snapshot(), {os.getpid()}, os.getpid())
    return {"steps_per_s": steps / dt, "samples_per_s": steps * b * cfg.grad_accum / dt, "steps": steps, "cpu": cpu}


def model_throughput(encoder: str, size: int, batch: int, steps: int, device: str, amp: str = "fp32") -> dict:
    """Training samples/s of the FPN with ``encoder`` on random data (forward, backward, AdamW)."""
    import torch

    from segsynth.config import load_config
    from segsynth.model import build_model
    from segsynth.train.config import TrainConfig
    from segsynth.train.loop import Stepper, model_spec

    cfg = load_config(TrainConfig, None, ["data=[{path: unused}]", f"encoder_name={encoder}", "encoder_weights=null",
                                          f"size={size}", f"batch_size={batch}", f"amp={amp}"])
    dev = torch.device(device)
    model = build_model(model_spec(cfg), encoder_weights=None).to(dev)
    stepper = Stepper(model, cfg, total_steps=steps + 2, device=dev)
    if stepper.channels_last:
        model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    batch_np = {"image": torch.from_numpy(rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)),
                "mask": torch.from_numpy(rng.integers(0, 2, (batch, 1, size, size), dtype=np.uint8) * 255)}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(2 + steps):
        if i == 2:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        stepper.micro_step(batch_np)
        stepper.optimizer_step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"encoder": encoder, "size": size, "batch": batch, "device": device, "amp": amp if dev.type == "cuda" else "fp32",
           "samples_per_s": steps * batch / dt, "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if dev.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["device_name"] = torch.cuda.get_device_name(0)
    return out


def section(r: dict) -> str:
    """The "## Training overhead" section of BENCHMARKS.md from one run's results (nothing else)."""
    o, cpu, gpu, want = r["overhead"], r["b5_cpu"], r.get("b5_gpu"), r["gpu_setting"]
    ray, plain = o["ray"], o["plain"]
    ratio = ray["steps_per_s"] / plain["steps_per_s"]
    steady = ray["steady_steps_per_s"] / plain["steps_per_s"]
    command = " ".join(["python benchmarks/train_overhead.py", r["argv"]]).strip()
    lines = [SECTION, "",
             f"`{command}` ({r['date']}): optimizer steps per second of the Ray Train loop "
             f"(`segsynth train`, {o['workers']} worker(s), Ray Data shard, augmenting collate, reports) against a plain "
             "single-process PyTorch loop with the same model, batch, data, augmentation and `Stepper`; then "
             f"training samples per second of the production model (FPN + {cpu['encoder']}, random weights).", "",
             "| comparison | setting | Ray Train | plain PyTorch | Ray / plain |", "|---|---|---|---|---|",
             f"| steps/s, whole epochs | {o['setting']} | {ray['steps_per_s']:.3g} | {plain['steps_per_s']:.3g} | "
             f"{ratio:.2f} |",
             f"| steps/s, steady state (iterator start excluded) | same | {ray['steady_steps_per_s']:.3g} | "
             f"{plain['steps_per_s']:.3g} | {steady:.2f} |"]
    if plain.get("tuned_malloc"):
        lines.append(f"| steps/s, whole epochs; plain loop with segsynth's malloc settings too | same | "
                     f"{ray['steps_per_s']:.3g} | {plain['tuned_malloc']:.3g} | {ray['steps_per_s'] / plain['tuned_malloc']:.2f} |")
    lines += ["",
              "| model | device | size | batch | AMP | samples/s (training) | peak GPU memory |", "|---|---|---|---|---|---|---|",
             f"| FPN + {cpu['encoder']} ({cpu['params_m']:.1f}M) | cpu, {cpu['threads']} threads | {cpu['size']} | "
             f"{cpu['batch']} | {cpu['amp']} | {cpu['samples_per_s']:.3g} | n/a |"]
    if gpu:
        lines.append(f"| FPN + {gpu['encoder']} | {gpu['device_name']} | {gpu['size']} | {gpu['batch']} | {gpu['amp']} | "
                     f"{gpu['samples_per_s']:.3g} | {gpu['peak_gib']:.1f} GiB |")
    else:
        lines.append(f"| FPN + {want['encoder']} | GPU | {want['size']} | {want['batch']} | {want['amp']} | "
                     f"not measured: {r['gpu_missing']} | not measured |")
    target = r["target_ratio"]
    drift = abs(plain["after"] - plain["before"]) / plain["steps_per_s"]
    gap = abs(ray["steps_per_s"] - plain["steps_per_s"]) / plain["steps_per_s"]
    prose = [f"Machine: {r['machine']}.",
             f"Whole epochs: target Ray / plain >= {target} **{'met' if ratio >= target else 'missed'}** ({ratio:.2f}).",
             f"Plain loop: {plain['before']:.3g} steps/s before the Ray run and {plain['after']:.3g} after (the mean "
             f"is used); that drift is {drift:.0%} of the mean, "
             + (f"as large as or larger than the gap between the two loops ({gap:.0%}), so this run cannot tell "
                "them apart." if drift >= gap else f"smaller than the gap between the two loops ({gap:.0%})."),
             f"Ray's side counts only its training time per epoch ({ray['epochs_timed']} epochs of "
             f"{o['steps_per_epoch']} steps after the first, whose rate includes warm-up; validation and checkpoints "
             f"excluded); each epoch's iterator start (streaming split, first fetch) took {ray['iterator_start_s']:.2f} s "
             f"on average. The whole `segsynth train` call (Ray, workers and dataset start-up, every epoch) took "
             f"{ray['wall_s']:.0f} s of wall time; only the training time is in the rate.",
             ("The tiny model makes a step short, so any per-step overhead of the Ray loop shows up large; "
              if o.get("model", "tiny") == "tiny" else "With the recipe's model a step is long, as in the recipe; ")
             + "Ray's batch loader augments the next batch in a prefetch thread while the step runs, which the plain "
             "loop does in line" + ("; here the Ray loop was the faster one." if ratio > 1 else "."),
             f"Ray workers ran at nice {o.get('worker_niceness', '15')} (`RAY_worker_niceness`, which segsynth's "
             "embedded Ray sets to run them at the driver's priority unless the variable is set)"
             + ("; their environment also had " + ", ".join(f"`{k}={v}`" for k, v in o["ray_worker_env"].items())
                + " (the plain loop's did not)." if o.get("ray_worker_env") else ".")]
    tuned = plain.get("tuned_malloc")
    prose.append(f"The Ray worker trained with `malloc: {o.get('malloc', 'default')}` (segsynth.train.malloc"
                 + ("; the worker process starts with those settings, the plain loop runs with glibc's defaults)"
                    if o.get("malloc") == "tuned" else ": glibc's defaults, as the plain loop)")
                 + (f"; the plain loop with the same settings made {tuned:.3g} steps/s, {tuned / plain['steps_per_s']:.2f}x "
                    f"its rate with glibc's defaults, and Ray made {ray['steps_per_s'] / tuned:.2f}x that rate." if tuned else "."))
    prose += cpu_prose(ray.get("cpu"), [c for c in (plain.get("cpu"), plain.get("cpu_after")) if c], ratio)
    if not gpu:
        prose.append(f"On a GPU node run `python benchmarks/train_overhead.py --write` to fill the GPU row "
                     f"({want['size']} px, {want['amp']}, channels_last, batch {want['batch']} per GPU).")
    lines += ["", " ".join(prose), ""]
    return "\n".join(lines)


def cpu_prose(ray_cpu: dict | None, plain_cpus: list[dict], ratio: float) -> list[str]:
    """Where the machine's CPU went in each loop, and the ratio split into the CPU share the Ray
    worker got and what it made of it (sentences from the results alone)."""
    if not ray_cpu or not plain_cpus:
        return ["Where the CPU went: not measured (no /proc on this machine, or the training worker's life was too "
                "short for the sampler)."]
    plain = {k: float(np.mean([c[k] for c in plain_cpus])) for k in ("loop_user", "loop_kernel", "other", "idle", "ray_others")}
    ray_share = ray_cpu["loop_user"] + ray_cpu["loop_kernel"]
    plain_share = plain["loop_user"] + plain["loop_kernel"]
    share_ratio = ray_share / plain_share if plain_share else float("nan")
    return [f"Where the machine's CPU time went (from /proc; the Ray side over {ray_cpu['seconds']:.0f} s of the "
            f"training worker's life after its first {ray_cpu['skipped_s']:.0f} s): the training worker {ray_share:.0%} "
            f"(kernel time {ray_cpu['loop_kernel']:.0%} of the machine's), Ray's other processes {ray_cpu['ray_others']:.0%}, the rest of the "
            f"machine {ray_cpu['other']:.0%}, idle {ray_cpu['idle']:.0%}; the plain loop's process {plain_share:.0%} "
            f"(kernel time {plain['loop_kernel']:.0%} of the machine's), the rest {plain['other'] + plain['ray_others']:.0%}, idle "
            f"{plain['idle']:.0%}.",
            f"So the Ray worker got {share_ratio:.2f}x the CPU the plain loop had and stepped "
            f"{ratio / share_ratio:.2f}x as fast per unit of it ({share_ratio:.2f} x {ratio / share_ratio:.2f} = "
            f"{ratio:.2f})."]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=128, help="overhead comparison image size (default 128)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=40, help="steps per epoch (Ray, 3 epochs) and timed steps (plain)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in both loops")
    p.add_argument("--model", choices=list(MODELS), default="tiny",
                   help="tiny (a short step: per-step overhead shows large) or recipe (configs/cpu/train.yaml's model "
                        "and worker; use --size 320 --threads 2)")
    p.add_argument("--ray-worker-env", action="append", default=[], metavar="KEY=VALUE",
                   help="set in the environment the embedded Ray's workers start with (e.g. OMP_WAIT_POLICY=PASSIVE); "
                        "the plain loop keeps this process's, whose torch is already loaded")
    p.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                   help="the Ray worker's train.malloc (segsynth.train.malloc; default tuned, as segsynth trains); "
                        "the plain loop runs with glibc's defaults, then once more with the tuned settings")
    p.add_argument("--b5-steps", type=int, default=3, help="timed steps for the EfficientNet-B5 figures")
    p.add_argument("--out", default=str(REPO / "outputs" / "bench" / "train_overhead.json"), help="where the results JSON goes")
    p.add_argument("--write", action="store_true", help="rewrite the '## Training overhead' section of BENCHMARKS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from segsynth.config import load_config
    from segsynth.train import malloc
    from segsynth.train.config import TrainConfig

    load_start = os.getloadavg()[0]
    # the GPU figure's setting: configs/train.yaml's size, AMP and per-GPU batch
    results: dict = {"argv": " ".join(sys.argv[1:] if argv is None else argv), "date": time.strftime("%Y-%m-%d"),
                     "target_ratio": 0.9,  # the target: Ray within 10% of the plain loop
                     "gpu_setting": {"encoder": "efficientnet-b5", "size": 512, "batch": 8, "amp": "bf16"}}
    with tempfile.TemporaryDirectory() as tmp:
        n = args.batch_size * args.steps + 16
        synth = make_synth(Path(tmp, "synth"), n, args.size)
        cfg = load_config(TrainConfig, None, [
            f"data=[{{path: {synth}}}]", f"out={Path(tmp, 'out')}", "name=bench", *MODELS[args.model][0], f"size={args.size}",
            f"batch_size={args.batch_size}", "epochs=3", f"max_steps_per_epoch={args.steps}", "val_fraction=0.0",
            "checkpoint_every_steps=100000", "cache_decoded=true", "num_workers=1", f"torch_threads={args.threads}",
            "shuffle_pool=64", f"malloc={args.malloc}"])
        # plain before and after Ray, averaged: the machine's load drifts during a run
        before = plain_loop(cfg, steps=args.steps * 2)
        worker_env = dict(kv.split("=", 1) for kv in args.ray_worker_env)
        # the raylet, started next, passes its environment to the workers; this process's torch (the
        # plain loop after) read its OpenMP settings when it loaded
        os.environ.update(worker_env)
        ray_result = ray_loop(cfg)
        after = plain_loop(cfg, steps=args.steps * 2)
        plain = {"steps_per_s": (before["steps_per_s"] + after["steps_per_s"]) / 2,
                 "before": before["steps_per_s"], "after": after["steps_per_s"], "cpu": before["cpu"], "cpu_after": after["cpu"]}
        # last, as it cannot be undone in this process: the plain loop with the malloc settings the
        # Ray worker started with (segsynth.train.malloc), to split what they buy from what Ray costs
        if cfg.malloc == "tuned" and malloc.tune():
            plain["tuned_malloc"] = plain_loop(cfg, steps=args.steps * 2)["steps_per_s"]
        results["overhead"] = {"setting": f"{MODELS[args.model][1]}, {args.size} px, batch {args.batch_size}, "
                                          f"{args.threads} thread(s), CPU", "steps_per_epoch": args.steps,
                               "model": args.model, "worker_niceness": os.environ.get("RAY_worker_niceness", "15 (Ray's default)"),
                               "workers": cfg.num_workers, "ray_worker_env": worker_env, "malloc": cfg.malloc,
                               "ray": ray_result, "plain": plain}
        log.info("overhead: %s", results["overhead"])
    threads = max(1, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    results["b5_cpu"] = {**model_throughput("efficientnet-b5", 320, 4, args.b5_steps, "cpu"), "threads": threads}
    log.info("b5 cpu: %s", results["b5_cpu"])
    if torch.cuda.is_available():
        g = results["gpu_setting"]
        results["b5_gpu"] = model_throughput(g["encoder"], g["size"], g["batch"], 20, "cuda", amp=g["amp"])
        log.info("b5 gpu: %s", results["b5_gpu"])
    else:
        results["gpu_missing"] = "no GPU in this session"
    load_end = os.getloadavg()[0]
    results["machine"] = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other "
                          f"jobs), torch {torch.__version__}, one-minute load average {load_start:.1f} at the start and "
                          f"{load_end:.1f} at the end")
    sys.stdout.write(json.dumps(results, indent=2, default=str) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    if args.write:
        write_section(REPO / "BENCHMARKS.md", SECTION, section(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
