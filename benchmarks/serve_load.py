"""Serving load, memory and comparison benchmark (loopback only, bounded in count and time).

    python benchmarks/serve_load.py                                   # defaults below, ~10 min on 2 cores
    python benchmarks/serve_load.py --model outputs/demo/train/best --requests 2000 --compare-requests 200

1. Load: ``--requests`` (2000) POSTs at concurrency ``--concurrency`` (16) to our Ray Serve
   endpoint: errors, p50/p99 latency, throughput, and the replica's resident memory after the
   first 200 requests and after all of them (it must not grow).
2. Comparison, same exported ONNX model, same machine, one run: our batched endpoint against a
   plain one-image-per-request server (FastAPI + uvicorn, the model called in the request's
   worker thread, the way the popular background-removal server works) at concurrency 1, 8
   and 32: throughput ratio and p99 ratio; and our endpoint's overhead per request over a bare
   in-process model call (p50 latency at concurrency 1 minus the bare call's p50).

The model: ``--model`` (checkpoint folder or exported .onnx), else ``outputs/demo/train/best``
when it exists, else an efficientnet-b0 FPN with random weights at ``--size`` (speed does not
depend on the weights). Checkpoints are exported with ``segsynth.export``. Images: the demo
kit's eval images (real photos of different sizes), cycled. Results: JSON to ``--out`` and a
Markdown table on stdout for BENCHMARKS.md.
"""
# No `from __future__ import annotations`: FastAPI must resolve the plain server's UploadFile at runtime.
import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

log = logging.getLogger("serve_load")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the plain server (subprocess)
def plain_server(model: str, port: int) -> None:
    """One image per request, model called in the request's thread: FastAPI + uvicorn."""
    import uvicorn
    from fastapi import FastAPI, File, Response, UploadFile

    from segsynth.infer import load_predictor
    from segsynth.pipeline.serve_app import rss_bytes
    from segsynth.uploads import CutoutOptions, decode_upload, render_cutout

    predictor = load_predictor(model)
    opts = CutoutOptions()
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "rss_bytes": rss_bytes()}

    @app.post("/remove")
    def remove(file: UploadFile = File(...)) -> Response:  # sync: FastAPI runs it in its thread pool
        rgb = decode_upload(file.file.read(), file.filename or "upload")
        body, media_type = render_cutout(rgb, predictor.predict([rgb])[0], opts)
        return Response(body, media_type=media_type)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- load generator
async def load(url: str, images: list[tuple[str, bytes]], n: int, concurrency: int, timeout: float = 120.0) -> dict:
    """``n`` POSTs with ``concurrency`` in flight (closed loop); latencies in ms."""
    import httpx

    latencies, errors, next_i = [], {}, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client):
        nonlocal next_i
        while next_i < n:
            i, next_i = next_i, next_i + 1
            name, data = images[i % len(images)]
            t0 = time.perf_counter()
            try:
                r = await client.post(url, files={"file": (name, data)})
                ok = r.status_code == 200
                key = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                ok, key = False, type(e).__name__
            if ok:
                latencies.append((time.perf_counter() - t0) * 1000.0)
            else:
                errors[key] = errors.get(key, 0) + 1

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return summarize(latencies, errors, seconds, n, concurrency)


def summarize(latencies: list[float], errors: dict, seconds: float, n: int, concurrency: int) -> dict:
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {"requests": n, "concurrency": concurrency, "errors": sum(errors.values()), "error_kinds": errors,
            "seconds": round(seconds, 2), "throughput_rps": round(len(latencies) / max(seconds, 1e-9), 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "latencies_ms": latencies}


def wait_http(url: str, timeout_s: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


# ---------------------------------------------------------------- model and images
def prepare_model(model: str | None, size: int, workdir: str) -> tuple[str, str]:
    """``(onnx path, description)``: export a checkpoint, or build the random b0 FPN first."""
    from segsynth import export as ex

    if model and model.endswith(".onnx"):
        return model, f"{model} (given)"
    description = None
    if not model and (REPO / "outputs/demo/train/best/model_card.json").is_file():
        model = str(REPO / "outputs/demo/train/best")
        description = "the demo model (outputs/demo/train/best)"
    if not model:
        from segsynth.model import ModelSpec, build_model, preprocessing, save_model_folder

        spec = ModelSpec(encoder_name="efficientnet-b0")
        model = save_model_folder(os.path.join(workdir, "b0"), build_model(spec, encoder_weights=None),
                                  {"name": "fpn-efficientnet-b0-random", "model": spec.__dict__,
                                   "preprocessing": preprocessing(size)})
        description = f"FPN + efficientnet-b0 (smp defaults), random weights, input {size} px"
    out = os.path.join(workdir, "model.onnx")
    card = ex.export(model, "onnx", out)
    size_used = card.get("preprocessing", {}).get("size")
    return out, (description or f"{model}") + f"; exported to ONNX (size {size_used})"


def kit_images() -> list[tuple[str, bytes]]:
    folder = REPO / "demo_kit" / "eval" / "images"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no images")
    return [(p.name, p.read_bytes()) for p in files]


def bare_call(onnx: str, images: list[tuple[str, bytes]], repeats: int) -> dict:
    """In-process: decode, one ``predict([rgb])``, render -- the parts a request pays besides serving."""
    from segsynth.infer import load_predictor
    from segsynth.uploads import CutoutOptions, decode_upload, render_cutout

    predictor = load_predictor(onnx)
    decoded = [decode_upload(d, n) for n, d in images]
    predictor.predict([decoded[0]])  # warm-up
    t_model, t_io = [], []
    for i in range(repeats):
        name, data = images[i % len(images)]
        t0 = time.perf_counter()
        rgb = decode_upload(data, name)
        t1 = time.perf_counter()
        mask = predictor.predict([rgb])[0]
        t2 = time.perf_counter()
        render_cutout(rgb, mask, CutoutOptions())
        t3 = time.perf_counter()
        t_model.append((t2 - t1) * 1000.0)
        t_io.append(((t1 - t0) + (t3 - t2)) * 1000.0)
    return {"model_p50_ms": round(float(np.median(t_model)), 1), "decode_encode_p50_ms": round(float(np.median(t_io)), 1),
            "repeats": repeats}


# ---------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="checkpoint folder or exported .onnx (default: demo model, else random b0)")
    p.add_argument("--size", type=int, default=320, help="input size of the random model (default 320)")
    p.add_argument("--requests", type=int, default=2000, help="load test requests (default 2000)")
    p.add_argument("--concurrency", type=int, default=16, help="load test concurrency (default 16)")
    p.add_argument("--compare-requests", type=int, default=160, help="requests per concurrency level in the comparison")
    p.add_argument("--levels", default="1,8,32", help="comparison concurrency levels")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--bare-repeats", type=int, default=30)
    p.add_argument("--out", default=str(REPO / "outputs" / "bench" / "serve_load.json"))
    p.add_argument("--plain-server", default=None, help=argparse.SUPPRESS)  # internal: run the plain server
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if args.plain_server:
        plain_server(args.plain_server, args.port)
        return 0

    import httpx

    from segsynth.pipeline.serve import ServeConfig, start, stop

    levels = [int(x) for x in args.levels.split(",")]
    images = kit_images()
    workdir = tempfile.mkdtemp(prefix="segsynth-bench-")
    onnx, model_desc = prepare_model(args.model, args.size, workdir)
    log.info("model: %s", model_desc)
    result: dict = {"model": model_desc, "images": f"{len(images)} demo kit eval photos, cycled",
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "load_avg_at_start": os.getloadavg()[0]},
                    "gpu": "not measured: no GPU in this session"}
    result["bare"] = bare_call(onnx, images, args.bare_repeats)
    log.info("bare call: %s", result["bare"])

    # ---- our endpoint: load test, then the comparison levels
    cfg = ServeConfig(model=onnx, port=free_port(), max_batch_size=args.max_batch_size,
                      batch_wait_timeout_s=args.batch_wait_ms / 1000.0,
                      max_ongoing_requests=max(64, 2 * args.max_batch_size), max_queued_requests=1024)
    url = start(cfg)
    try:
        remove = f"{url}/v1/remove"
        first = min(200, args.requests)
        warm = asyncio.run(load(remove, images, first, args.concurrency))
        rss_200 = httpx.get(f"{url}/v1/stats").json()["rss_bytes"]
        rest = asyncio.run(load(remove, images, args.requests - first, args.concurrency))
        stats = httpx.get(f"{url}/v1/stats").json()
        both = summarize(warm["latencies_ms"] + rest["latencies_ms"],
                         {k: warm["error_kinds"].get(k, 0) + rest["error_kinds"].get(k, 0)
                          for k in {**warm["error_kinds"], **rest["error_kinds"]}},
                         warm["seconds"] + rest["seconds"], args.requests, args.concurrency)
        result["load"] = {**both, "rss_mb_after_200": round(rss_200 / 2**20, 1),
                          "rss_mb_after_all": round(stats["rss_bytes"] / 2**20, 1),
                          "batch_sizes": stats["batch_sizes"]}
        log.info("load: %s", drop_latencies(result["load"]))
        ours = {}
        for c in levels:
            ours[c] = asyncio.run(load(remove, images, max(args.compare_requests, 4 * c), c))
            log.info("ours c=%d: %s", c, drop_latencies(ours[c]))
        ours_stats = httpx.get(f"{url}/v1/stats").json()
    finally:
        stop(cfg.app_name)
    import ray

    ray.shutdown()  # frees the replica's cores for the plain server

    # ---- the plain server, same model, same images
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--plain-server", onnx, "--port", str(port)])
    plain = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        plain_url = f"http://127.0.0.1:{port}/remove"
        asyncio.run(load(plain_url, images, 16, 4))  # warm-up, like the replica's
        for c in levels:
            plain[c] = asyncio.run(load(plain_url, images, max(args.compare_requests, 4 * c), c))
            log.info("plain c=%d: %s", c, drop_latencies(plain[c]))
        plain_rss = httpx.get(f"http://127.0.0.1:{port}/healthz").json()["rss_bytes"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    result["comparison"] = {
        str(c): {"ours": ours[c], "plain": plain[c],
                 "throughput_ratio": round(ours[c]["throughput_rps"] / max(plain[c]["throughput_rps"], 1e-9), 2),
                 "p99_ratio": round(ours[c]["p99_ms"] / max(plain[c]["p99_ms"], 1e-9), 2)} for c in levels}
    result["comparison_batch_sizes"] = ours_stats["batch_sizes"]
    result["plain_rss_mb_after_comparison"] = round(plain_rss / 2**20, 1)
    c1 = ours.get(1)
    if c1:
        result["overhead_ms_per_request"] = round(c1["p50_ms"] - result["bare"]["model_p50_ms"], 1)
        result["overhead_ms_beyond_decode_encode"] = round(c1["p50_ms"] - result["bare"]["model_p50_ms"]
                                                           - result["bare"]["decode_encode_p50_ms"], 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(drop_latencies(result), indent=2))
    print(markdown(result))
    return 0


def drop_latencies(obj):
    if isinstance(obj, dict):
        return {k: drop_latencies(v) for k, v in obj.items() if k != "latencies_ms"}
    return obj


def markdown(r: dict) -> str:
    ld = r["load"]
    lines = [f"Model: {r['model']}. Images: {r['images']}. Machine: {r['machine']['cpus']} CPUs, load average "
             f"{r['machine']['load_avg_at_start']:.1f} at start. GPU: {r['gpu']}.", "",
             f"Load: {ld['requests']} requests at concurrency {ld['concurrency']}: {ld['errors']} errors, "
             f"p50 {ld['p50_ms']} ms, p99 {ld['p99_ms']} ms, {ld['throughput_rps']} req/s; replica RSS "
             f"{ld['rss_mb_after_200']} MB after {min(200, ld['requests'])} requests, {ld['rss_mb_after_all']} MB after {ld['requests']}. "
             f"Batch sizes seen: {ld['batch_sizes']}.", "",
             "| concurrency | ours req/s | plain req/s | throughput ratio | ours p99 ms | plain p99 ms | p99 ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for c, v in r["comparison"].items():
        lines.append(f"| {c} | {v['ours']['throughput_rps']} | {v['plain']['throughput_rps']} | {v['throughput_ratio']}x | "
                     f"{v['ours']['p99_ms']} | {v['plain']['p99_ms']} | {v['p99_ratio']}x |")
    lines += ["", f"Bare in-process model call p50: {r['bare']['model_p50_ms']} ms (+ {r['bare']['decode_encode_p50_ms']} ms "
              f"decode and PNG encode). Endpoint overhead per request at concurrency 1: "
              f"{r.get('overhead_ms_per_request')} ms over the bare model call, "
              f"{r.get('overhead_ms_beyond_decode_encode')} ms beyond decode and encode."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
