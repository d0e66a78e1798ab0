"""Rooms throughput: backgrounds per second of the diffusion generator, batch 8 against batch 1.

    python benchmarks/rooms.py                       # tiny random pipeline on CPU, 64 px
    python benchmarks/rooms.py --device cuda         # + full-size SD 1.5 UNet/VAE/text sizes, random
                                                     #   weights, 512 px, fp16 (needs a GPU)
    python benchmarks/rooms.py --device cuda --write # also rewrite the "## Rooms" section of BENCHMARKS.md

Each setting builds a random-weight pipeline folder with ``segsynth.testing.build_random_pipeline``
(nothing is downloaded), loads it with ``RoomGenerator`` exactly as the Ray actors do, warms up
with one batch, then times ``--images`` images per batch size. Figures: backgrounds per second
(images / wall seconds, JPEG encoding and the quality gate included) and the batch-8/batch-1
ratio. Random weights cost the same FLOPs as trained ones, so GPU figures carry over to real
weights of the same architecture (the safety checker, when a model has one, is not included).
``--write`` renders the section with :func:`section` from this run's results alone (also saved
as JSON to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _sections import write_section  # noqa: E402

log = logging.getLogger("bench.rooms")

SECTION = "## Rooms"
# device -> the setting measured there (a random-weight preset of segsynth.testing.build_random_pipeline)
SETTINGS = {"cpu": {"preset": "tiny", "size": 64, "steps": 2, "images": 16, "dtype": "float32"},
            "cuda": {"preset": "sd15", "shapes": "full-size SD 1.5", "size": 512, "steps": 20, "images": 16,
                     "dtype": "float16"}}


def measure(model: str, device: str, size: int, steps: int, images: int, batch_sizes: list[int]) -> dict:
    import numpy as np

    from segsynth.rooms.generator import RoomGenerator
    from segsynth.rooms.prompts import RoomPromptConfig, make_prompts

    prompts = make_prompts(RoomPromptConfig(), images, seed=0)
    texts = [p.prompt for p in prompts]
    negs = [p.negative_prompt for p in prompts]
    seeds = [p.seed for p in prompts]
    gen = RoomGenerator(model, size=size, steps=steps, guidance=7.5, device=device, dtype="auto", batch_size=1)
    batch = {"prompt": np.array(texts, dtype=object), "negative_prompt": np.array(negs, dtype=object),
             "seed": np.array(seeds), "index": np.arange(images)}
    unet = getattr(gen.pipe, "unet", None)
    out = {"dtype": str(gen.dtype).replace("torch.", ""), "images": images, "bps": {},
           "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) if unet is not None else None}
    for bs in batch_sizes:
        gen.batch_size = bs
        warm = {k: v[:bs] for k, v in batch.items()}
        gen(warm)  # first call: kernels, allocator, cudnn autotune
        if device == "cuda":
            import torch
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen(batch)
        if device == "cuda":
            import torch
            torch.cuda.synchronize()
        out["bps"][str(bs)] = round(images / (time.perf_counter() - t0), 4)
        log.info("%s batch %d: %.3f backgrounds/s", device, bs, out["bps"][str(bs)])
    return out


def _folder_mb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1)


def section(r: dict) -> str:
    """The "## Rooms" section of BENCHMARKS.md from one run's results (nothing else)."""
    sizes = r["batch_sizes"]
    b_lo, b_hi = sizes[0], sizes[-1]
    command = " ".join(["python benchmarks/rooms.py", r["argv"]]).strip()
    lines = [SECTION, "",
             f"`{command}` ({r['date']}): backgrounds per second of `RoomGenerator` (diffusion + JPEG + quality "
             "gate; warm pipeline, no Ray start-up), random-weight pipelines built locally by "
             "`segsynth.testing.build_random_pipeline` (no download).", "",
             "| setting | device | dtype | size | steps | images | " + " | ".join(f"batch {b} (bg/s)" for b in sizes)
             + f" | batch {b_hi} / batch {b_lo} |",
             "|" + "---|" * (7 + len(sizes))]
    for device, s in r["settings"].items():
        m = r["measured"].get(device)
        if m is None:
            lines.append(f"| {s['preset']} | {device} | {s['dtype']} | {s['size']} | {s['steps']} | {s['images']} | "
                         + " | ".join(f"not measured: {r['unmeasured'].get(device, 'not run')}" if i == 0 else "not measured"
                                      for i in range(len(sizes))) + " | not measured |")
            continue
        bps = [m["bps"].get(str(b)) for b in sizes]
        ratio = f"{bps[-1] / bps[0]:.2f}" if bps[0] and bps[-1] else "n/a"
        lines.append(f"| {s['preset']} | {m['device_name']} | {m['dtype']} | {s['size']} | {s['steps']} | {m['images']} | "
                     + " | ".join(f"{v:.3g}" if v else "n/a" for v in bps) + f" | {ratio} |")
    mc = r["machine"]
    prose = [f"Machine: {mc['processor']}, {mc['cores']} cores, torch {mc['torch']} with {mc['threads']} threads, "
             f"one-minute load average {mc['load_start']} at the start of the run and {mc['load_end']} at its end."]
    if mc["load_start"] > mc["cores"] or mc["load_end"] > mc["cores"]:
        prose.append("The load average exceeded the core count, so the CPU rates partly measure contention.")
    cpu, cpu_s = r["measured"].get("cpu"), r["settings"]["cpu"]
    if cpu:
        b1, bn = cpu["bps"].get(str(b_lo)), cpu["bps"].get(str(b_hi))
        prose.append(f"The {cpu_s['preset']} pipeline ({cpu['pipeline_mb']} MB, {cpu_s['size']} px, {cpu_s['steps']} "
                     "steps) measures the plumbing, not image quality or real diffusion cost: batching can amortise "
                     "only the per-call overhead (text encoder, scheduler, Python).")
        if b1 and bn and len(sizes) > 1:
            change = "faster" if bn > b1 else "slower" if bn < b1 else "as fast"
            prose.append(f"On the CPU, batch {b_hi} was {change} than batch {b_lo} here ({bn / b1:.2f}x).")
    gpu, gpu_s = r["measured"].get("cuda"), r["settings"].get("cuda")
    if gpu_s and gpu:
        unet = f" (UNet {gpu['unet_params_m']}M parameters)" if gpu.get("unet_params_m") else ""
        b1, bn = gpu["bps"].get(str(b_lo)), gpu["bps"].get(str(b_hi))
        prose.append(f"The GPU row ({gpu['device_name']}) is the figure for sizing a cluster: {gpu_s['shapes']} "
                     f"shapes{unet} at {gpu_s['size']} px in {gpu['dtype']}"
                     + (f"; batch {b_hi} ran at {bn / b1:.2f}x the rate of batch {b_lo}." if b1 and bn else "."))
    elif gpu_s:
        prose.append(f"The GPU row is the figure that matters for sizing a cluster ({gpu_s['shapes']} shapes at "
                     f"{gpu_s['size']} px in {gpu_s['dtype']}); run `python benchmarks/rooms.py --device cuda --write` "
                     "on a GPU node to fill it.")
    lines += ["", " ".join(prose), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="cpu: tiny pipeline only; cuda: tiny on CPU and full-size on the GPU; auto: cuda when available")
    p.add_argument("--images", type=int, default=None, help="images per batch size (default 16)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--out", default=str(REPO / "outputs" / "bench" / "rooms.json"), help="where the results JSON goes")
    p.add_argument("--write", action="store_true", help="rewrite the '## Rooms' section of BENCHMARKS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from segsynth.testing import build_random_pipeline

    load_start = os.getloadavg()[0]
    devices = ["cpu"]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append("cuda")
    settings = {d: {**s, "images": args.images or s["images"]} for d, s in SETTINGS.items()}
    results = {"argv": " ".join(sys.argv[1:] if argv is None else argv), "date": time.strftime("%Y-%m-%d"),
               "batch_sizes": args.batch_sizes, "settings": settings, "measured": {},
               "unmeasured": {d: "no GPU in this session" if d == "cuda" and not torch.cuda.is_available()
                              else "not asked for (--device)" for d in settings if d not in devices}}
    for device in devices:
        s = settings[device]
        with tempfile.TemporaryDirectory() as tmp:
            model = build_random_pipeline(Path(tmp, s["preset"]), s["preset"], dtype=s["dtype"])
            r = measure(model, device, s["size"], s["steps"], s["images"], args.batch_sizes)
            r["pipeline_mb"] = _folder_mb(Path(model))
        r["device_name"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
        results["measured"][device] = r
    results["machine"] = {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "load_start": round(load_start, 1), "load_end": round(os.getloadavg()[0], 1)}
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    if args.write:
        write_section(REPO / "BENCHMARKS.md", SECTION, section(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
