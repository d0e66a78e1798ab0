"""What the model thread does, measured in one run: the forward pass alone (``staged``: each
request's thread letterboxes its photo before the batch and resizes or refines the mask after it)
against the whole ``predict`` in the batcher (``whole``: resize down, forward, and each mask back
up to full size in float32, one photo at a time, in the model thread; refinement then shrinks it
again): the "Serving: the model thread" section.

    python benchmarks/serve_stages.py --model outputs/cpu/train/best --write

The replica's request path in this process (``RemovalService`` called directly: no Ray, no HTTP,
so the ingress measured by ``serve_load.py`` is not in these figures), the same service object
and exported ONNX model for both modes, switched between rounds; the rounds alternate the modes
(``--rounds``) so drift in the machine's load falls on both. Photos: ``--photos`` listing photos
from the pool (``$SEGSYNTH_DATA/pool/furniture_photos``, 640 px) at their own size, and the same
photos scaled to ``--large`` px on the longer side (a phone photo's size), output ``rgba`` PNG
with refinement on (the endpoint's default). Concurrency ``--levels`` (1 and 8).
"""
from __future__ import annotations

import argparse
import asyncio
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _sections import finish  # noqa: E402

log = logging.getLogger("serve_stages")
HEADING = "## Serving: the model thread"
MODES = ("whole", "staged")
OPTS = dict(output=None, bg=None, threshold=None, fmt=None, crop=None, refine=None, shadow=None)


def photos(data: Path, n: int, large: int) -> dict[str, list[tuple[str, bytes]]]:
    """``{"own": [(name, jpeg)], "large": [...]}``: ``n`` pool photos as they are, and scaled up."""
    import cv2

    from segsynth import io

    folder = data / "pool" / "furniture_photos" / "images"
    files = sorted(folder.glob("*.jpg"))[:n]
    if not files:
        raise FileNotFoundError(f"{folder} holds no .jpg photos; set SEGSYNTH_DATA to the shared data folder")
    own, big = [], []
    for f in files:
        data_bytes = f.read_bytes()
        rgb = io.decode_image(data_bytes, str(f))
        h, w = rgb.shape[:2]
        s = large / max(h, w)
        up = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
        own.append((f.name, data_bytes))
        big.append((f.name, io.encode_jpeg(up, 90)))
    return {"own": own, "large": big}


def _request(body: bytes):
    from starlette.requests import Request

    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    headers = [(b"content-type", b"image/jpeg"), (b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "path": "/v1/remove", "headers": headers, "query_string": b""},
                   receive)


def set_mode(svc, mode: str) -> None:
    """The one switch between the two: what the batcher runs and what the requests hand it."""
    svc.staged = mode == "staged"
    svc.batcher.run = svc.predictor.forward_boxed if svc.staged else svc.predictor.predict


async def drive(svc, images: list[tuple[str, bytes]], n: int, concurrency: int) -> dict:
    from serve_load import server_timing, summarize

    latencies, hops, errors = [], [], {}
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            try:
                r = await svc.remove(_request(images[i % len(images)][1]), **OPTS)
            except Exception as e:  # noqa: BLE001  counted, the run goes on
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                return
            latencies.append((time.perf_counter() - t) * 1000)
            hops.append(server_timing(r.headers.get("server-timing", "")))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    out = summarize(latencies, errors, time.perf_counter() - started, n, concurrency, hops)
    out.pop("latencies_ms")
    out["latencies"] = latencies
    return out


def merged(runs: list[dict]) -> dict:
    """The rounds of one (set, level, mode) as one: requests and seconds summed, percentiles over all."""
    lat = np.concatenate([np.asarray(r["latencies"]) for r in runs])
    seconds = sum(r["seconds"] for r in runs)
    hops = {h: round(float(np.median([r["hops_p50_ms"][h] for r in runs if h in r.get("hops_p50_ms", {})])), 2)
            for h in ("decode", "queue", "model", "encode")}
    return {"requests": int(len(lat)), "errors": sum(r["errors"] for r in runs), "seconds": round(seconds, 2),
            "throughput_rps": round(len(lat) / max(seconds, 1e-9), 2), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "hops_p50_ms": hops}


def measure(svc, sets: dict, levels: list[int], requests: dict, rounds: int) -> dict:
    runs: dict = {}
    for rnd in range(rounds):
        for name, images in sets.items():
            for c in levels:
                order = MODES if rnd % 2 == 0 else MODES[::-1]
                for mode in order:
                    set_mode(svc, mode)
                    r = asyncio.run(drive(svc, images, requests[name], c))
                    log.info("round %d %s c=%d %s: %.2f rps, p50 %.1f ms, model %.1f ms", rnd + 1, name, c, mode,
                             r["throughput_rps"], r["p50_ms"], r["hops_p50_ms"].get("model", float("nan")))
                    runs.setdefault(name, {}).setdefault(str(c), {}).setdefault(mode, []).append(r)
    set_mode(svc, "staged")
    table = []
    for name, by_level in runs.items():
        for c, by_mode in by_level.items():
            m = {mode: merged(rs) for mode, rs in by_mode.items()}
            table.append({"set": name, "concurrency": int(c), **{mode: m[mode] for mode in MODES},
                          "throughput_ratio": round(m["staged"]["throughput_rps"] / m["whole"]["throughput_rps"], 3),
                          "p50_ratio": round(m["staged"]["p50_ms"] / m["whole"]["p50_ms"], 3)})
    return {"table": table}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(REPO / "outputs" / "cpu" / "train" / "best"),
                   help="checkpoint folder or exported .onnx (default: the CPU recipe's best/)")
    p.add_argument("--photos", type=int, default=16, help="pool photos (default 16)")
    p.add_argument("--large", type=int, default=2000, help="longer side of the scaled-up set (default 2000)")
    p.add_argument("--levels", default="1,8", help="concurrency levels (default 1,8)")
    p.add_argument("--requests", type=int, default=64, help="requests per round at the photos' own size (default 64)")
    p.add_argument("--large-requests", type=int, default=24, help="requests per round at --large px (default 24)")
    p.add_argument("--rounds", type=int, default=4, help="rounds, the modes' order alternating (default 4)")
    p.add_argument("--results", default=str(REPO / "outputs" / "bench" / "serve_stages.json"))
    p.add_argument("--section-only", action="store_true", help="render the section from --results without measuring")
    p.add_argument("--write", action="store_true", help=f"rewrite the '{HEADING}' section of BENCHMARKS.md")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from serve_load import prepare_model

    from segsynth.serve.config import ServeConfig
    from segsynth.serve.service import RemovalService

    data = Path(os.environ.get("SEGSYNTH_DATA", REPO.parent / "shared" / "data"))
    sets = photos(data, args.photos, args.large)
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="segsynth-stages-") as work:
        onnx, description, size = prepare_model(args.model, 320, work)
        svc = RemovalService(ServeConfig(model=onnx, num_cpus=2))
        if not hasattr(svc.predictor, "forward_boxed"):
            raise SystemExit(f"{args.model}: its predictor ({type(svc.predictor).__name__}) has no forward pass to split off")
        load_start = os.getloadavg()[0]
        measured = measure(svc, sets, levels, {"own": args.requests, "large": args.large_requests}, args.rounds)
    return {"command": "python benchmarks/serve_stages.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)], "model": description, "model_px": size,
            "photos": args.photos, "own_px": 640, "large_px": args.large, "rounds": args.rounds,
            "threads": svc.model_threads, **measured}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return finish(args, run, section, HEADING)


def verdict(table: list[dict]) -> str:
    wins = [r for r in table if r["throughput_ratio"] >= 1.0 and r["p50_ratio"] <= 1.0]
    if len(wins) == len(table):
        return "**kept**: at least the throughput and at most the median latency of `whole` at every level measured"
    losses = [f"{r['set']} c={r['concurrency']}" for r in table if r not in wins]
    return ("**not a win everywhere**: behind `whole` in throughput or median latency at " + ", ".join(losses)
            + f" ({len(wins)} of {len(table)} levels ahead or level)")


def section(r: dict) -> str:
    sizes = {"own": f"{r['own_px']} px (their own size)", "large": f"{r['large_px']} px (scaled up)"}
    lines = [HEADING, "",
             f"`{r['command']}` ({r['date']}; {r['cores']} cores, one-minute load average {r['load_avg'][0]} at the "
             f"start and {r['load_avg'][1]} at the end, no GPU). The replica's request path in one process (no Ray, no "
             f"HTTP: the ingress is in \"Serving\"), {r['model']} at {r['model_px']} px, {r['threads']} ONNX Runtime "
             f"threads, `rgba` PNG with refinement on; {r['photos']} pool listing photos at {sizes['own']} and at "
             f"{sizes['large']}; {r['rounds']} rounds per mode, the order alternating. `whole`: the batcher runs "
             "`predict` (resize down, forward, each mask back to full size); `staged`: the batcher runs the forward "
             "pass alone and each request resizes or refines its own mask.", "",
             "| photos | concurrency | mode | requests | throughput (req/s) | p50 ms | p99 ms | decode | queue | model | encode |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["table"]:
        for mode in MODES:
            m = row[mode]
            h = m["hops_p50_ms"]
            lines.append(f"| {sizes[row['set']]} | {row['concurrency']} | {mode} | {m['requests']} | {m['throughput_rps']} "
                         f"| {m['p50_ms']} | {m['p99_ms']} | {h['decode']} | {h['queue']} | {h['model']} | {h['encode']} |")
    lines += ["", "Hops: medians in ms from each response's `Server-Timing` (`model`: the forward pass the request "
                  "rode, with the resizing in the batcher under `whole`; `encode`: the mask to the photo, refinement, "
                  "rendering and PNG).", ""]
    for row in r["table"]:
        lines.append(f"- {sizes[row['set']]}, concurrency {row['concurrency']}: `staged` at {row['throughput_ratio']}x "
                     f"the throughput of `whole`, median latency {row['p50_ratio']}x; model hop "
                     f"{row['staged']['hops_p50_ms']['model']} ms against {row['whole']['hops_p50_ms']['model']} ms.")
    lines += ["", f"Verdict: {verdict(r['table'])}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
