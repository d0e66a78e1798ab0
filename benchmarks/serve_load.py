"""Serving load, memory and comparison benchmark (loopback only, bounded in count and time).

    python benchmarks/serve_load.py                                   # defaults below, ~30 min on 2 cores
    python benchmarks/serve_load.py --model outputs/demo/train/best --requests 2000 --compare-requests 200

1. Ingress: our Ray Serve endpoint under each ``--ingress`` mode (``ServeConfig.ingress``: Serve's
   proxy, the replica's own HTTP server, HAProxy; ``make haproxy`` installs its binary) at
   concurrency 1, 8 and 32, and where a request's time goes, hop by hop (the replica's
   ``Server-Timing`` header: body read, decode, batch queue, model, encode; the rest of the
   client's latency is the ingress and HTTP).
2. Load and memory, on the fastest mode: ``--requests`` (10 000) POSTs at concurrency
   ``--concurrency`` (16), the replica's resident memory read ``--rss-points`` times (growth that
   levels off is not a leak).
3. Comparison, same exported ONNX model, same machine, one run: the fastest mode against a plain
   one-image-per-request server (FastAPI + uvicorn, the model called in the request's worker
   thread, the way the popular background-removal server works) at each level: throughput ratio
   and p99 ratio, and our overhead per request over a bare in-process model call plus decode and
   encode (p50 latency at concurrency 1 minus theirs).

The model: ``--model`` (checkpoint folder or exported .onnx), else ``outputs/demo/train/best``
when it exists, else an efficientnet-b0 FPN with random weights at ``--size`` (speed does not
depend on the weights). Checkpoints are exported with ``segsynth.train.export``. Images: the
demo kit's eval images (real photos of different sizes), cycled. Results: JSON to ``--out``, and
with ``--write`` the "## Serving" section of BENCHMARKS.md, rendered by :func:`section` from
this run's results alone (every latency table holds runs made under the load it states).
"""
# No `from __future__ import annotations`: FastAPI must resolve the plain server's UploadFile at runtime.
import argparse
import asyncio
import contextlib
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

    from segsynth.predict import load_predictor
    from segsynth.serve.service import rss_bytes
    from segsynth.serve.uploads import CutoutOptions, decode_upload, render_cutout

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

    latencies, errors, hops, next_i = [], {}, [], 0
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
                timing = server_timing(r.headers.get("server-timing", ""))
                if timing:  # ours: the replica's hops; the rest of the latency is the proxy and HTTP
                    hops.append({**timing, "proxy": latencies[-1] - timing["app"]})
            else:
                errors[key] = errors.get(key, 0) + 1

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return summarize(latencies, errors, seconds, n, concurrency, hops)


def server_timing(header: str) -> dict[str, float]:
    """``Server-Timing: read;dur=1.2, model;dur=23.0`` -> ``{"read": 1.2, "model": 23.0}`` (ms)."""
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            out[name] = float(dur)
    return out


HOPS = ("proxy", "read", "decode", "queue", "model", "encode", "app")


def summarize(latencies: list[float], errors: dict, seconds: float, n: int, concurrency: int,
              hops: list[dict] | None = None) -> dict:
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    out = {"requests": n, "concurrency": concurrency, "errors": sum(errors.values()), "error_kinds": errors,
           "seconds": round(seconds, 2), "throughput_rps": round(len(latencies) / max(seconds, 1e-9), 2),
           "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
           "latencies_ms": latencies}
    if hops:
        out["hops_p50_ms"] = {h: round(float(np.median([x[h] for x in hops if h in x])), 2) for h in HOPS
                              if any(h in x for x in hops)}
    return out


def memory_per_pixel(model: str | None) -> dict:
    """Working memory of one 12 MP photo through decode -> mask -> render -> encode, per pixel:
    numpy's peak under tracemalloc (PIL's decode buffer, 4 bytes/pixel, is outside it); what
    ``segsynth.serve.uploads.BYTES_PER_PIXEL`` budgets."""
    import io as pyio
    import tracemalloc

    from PIL import Image

    from segsynth.predict import load_predictor
    from segsynth.serve.uploads import CutoutOptions, decode_upload, render_cutout

    predictor = load_predictor(model) if model else load_predictor(None, kind="white-threshold")
    h, w = 3000, 4000
    arr = np.full((h, w, 3), 245, np.uint8)
    arr[800:2400, 1200:2800] = np.random.default_rng(0).integers(0, 255, (1600, 1600, 3), np.uint8)
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    predictor.predict([decode_upload(data)])  # warm-up: the runtime's own arena is not a request's
    out = {}
    for label, opts in (("rgba png", CutoutOptions()), ("rgba png, shadow=true", CutoutOptions(shadow=True)),
                        ("composite png, shadow=true", CutoutOptions(output="composite", shadow=True)),
                        ("rgba webp", CutoutOptions(format="webp"))):
        tracemalloc.start()
        rgb = decode_upload(data)
        render_cutout(rgb, predictor.predict([rgb])[0], opts)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[label] = round(peak / (h * w), 1)
    return out


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
def prepare_model(model: str | None, size: int, workdir: str) -> tuple[str, str, int | None]:
    """``(onnx path, description, input size)``: export a checkpoint, or build the random b0 FPN first."""
    from segsynth.train import export as ex

    if model and model.endswith(".onnx"):
        card = Path(model).with_suffix(".json")
        size_used = json.loads(card.read_text()).get("preprocessing", {}).get("size") if card.is_file() else None
        return model, f"{model} (given)", size_used
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
    return out, (description or f"{model}") + " exported to ONNX", card.get("preprocessing", {}).get("size")


def kit_images() -> list[tuple[str, bytes]]:
    folder = REPO / "demo_kit" / "eval" / "images"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no images")
    return [(p.name, p.read_bytes()) for p in files]


def bare_call(onnx: str, images: list[tuple[str, bytes]], repeats: int) -> dict:
    """In-process: decode, one ``predict([rgb])``, render -- the parts a request pays besides serving."""
    from segsynth.predict import load_predictor
    from segsynth.serve.uploads import CutoutOptions, decode_upload, render_cutout

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
    batch = [decoded[i % len(decoded)] for i in range(8)]
    predictor.batch_size = max(predictor.batch_size, len(batch))
    predictor.predict(batch)  # warm-up at that shape
    t_batch = []
    for _ in range(max(1, repeats // 10)):
        t0 = time.perf_counter()
        predictor.predict(batch)
        t_batch.append((time.perf_counter() - t0) * 1000.0 / len(batch))
    return {"model_p50_ms": round(float(np.median(t_model)), 1), "decode_encode_p50_ms": round(float(np.median(t_io)), 1),
            "repeats": repeats, "batched_per_image_ms": round(float(np.median(t_batch)), 1), "batch": len(batch)}


def image_sizes(images: list[tuple[str, bytes]]) -> dict:
    """How many request images there are and their smallest and largest side, in pixels."""
    from segsynth.serve.uploads import decode_upload

    shapes = [decode_upload(d, n).shape[:2] for n, d in images]
    return {"count": len(images), "min_side": int(min(min(s) for s in shapes)), "max_side": int(max(max(s) for s in shapes))}


# ---------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="checkpoint folder or exported .onnx (default: demo model, else random b0)")
    p.add_argument("--size", type=int, default=320, help="input size of the random model (default 320)")
    p.add_argument("--requests", type=int, default=10000, help="load test requests (default 10000)")
    p.add_argument("--concurrency", type=int, default=16, help="load test concurrency (default 16)")
    p.add_argument("--rss-points", type=int, default=10, help="replica memory readings over the load test")
    p.add_argument("--compare-requests", type=int, default=160, help="requests per concurrency level in the comparison")
    p.add_argument("--levels", default="1,8,32", help="comparison concurrency levels")
    p.add_argument("--ingress", default="proxy,direct,haproxy",
                   help="ingress modes compared (ServeConfig.ingress); the load test runs on the fastest")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 1),
                   help="the replica's num_cpus, so its model threads (default: every core, as the plain server's runtime takes)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--bare-repeats", type=int, default=30)
    p.add_argument("--out", default=str(REPO / "outputs" / "bench" / "serve_load.json"))
    p.add_argument("--write", action="store_true", help="rewrite the '## Serving' section of BENCHMARKS.md")
    p.add_argument("--plain-server", default=None, help=argparse.SUPPRESS)  # internal: run the plain server
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--memory-per-pixel", action="store_true",
                   help="only measure the working memory per pixel of one large photo (--model, else white-threshold)")
    return p.parse_args(argv)


@contextlib.contextmanager
def endpoint(cfg):
    """Our endpoint for the block's duration: started with ``cfg`` (its ingress in a fresh local Ray), then
    stopped and Ray shut down, which frees the cores and lets the next ingress start its own Serve."""
    import ray

    from segsynth.serve.job import start, stop

    try:
        yield start(cfg)
    finally:
        stop(cfg.app_name)
        ray.shutdown()


def run_levels(url: str, images, levels: list[int], requests: int) -> dict:
    """Each concurrency level in turn against ``url``, after a short warm-up."""
    asyncio.run(load(url, images, 16, 4))
    out = {}
    for c in levels:
        out[str(c)] = asyncio.run(load(url, images, max(requests, 4 * c), c))
        log.info("%s c=%d: %s", url, c, drop_latencies(out[str(c)]))
    return out


def load_test(url: str, images, n: int, concurrency: int, points: int) -> dict:
    """``n`` requests in ``points`` equal parts, the replica's memory read after each (growth that stops
    is not a leak)."""
    import httpx

    parts, rss = [], []
    done = 0
    for i in range(points):
        size = n * (i + 1) // points - done
        parts.append(asyncio.run(load(f"{url}/v1/remove", images, size, concurrency)))
        done += size
        rss.append([done, round(httpx.get(f"{url}/v1/stats").json()["rss_bytes"] / 2**20, 1)])
        log.info("load: %d requests, replica RSS %.1f MB", done, rss[-1][1])
    kinds = {k for part in parts for k in part["error_kinds"]}
    both = summarize([x for part in parts for x in part["latencies_ms"]],
                     {k: sum(part["error_kinds"].get(k, 0) for part in parts) for k in kinds},
                     sum(part["seconds"] for part in parts), n, concurrency)
    return {**both, "rss_mb": rss, "batch_sizes": httpx.get(f"{url}/v1/stats").json()["batch_sizes"]}


def plain_levels(onnx: str, images, levels: list[int], requests: int) -> tuple[dict, float]:
    """The plain server in a subprocess, same model and images: each level, then its memory (MB)."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--plain-server", onnx, "--port", str(port)])
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        out = run_levels(f"http://127.0.0.1:{port}/remove", images, levels, requests)
        rss = httpx.get(f"http://127.0.0.1:{port}/healthz").json()["rss_bytes"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out, round(rss / 2**20, 1)


def fastest(by_ingress: dict, top: str) -> str:
    """The ingress with the highest throughput at the top concurrency level (the p50 at the lowest breaks ties)."""
    return max(by_ingress, key=lambda m: (by_ingress[m][top]["throughput_rps"],
                                          -min(by_ingress[m].values(), key=lambda r: r["concurrency"])["p50_ms"]))


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if args.plain_server:
        plain_server(args.plain_server, args.port)
        return 0
    if args.memory_per_pixel:
        print(json.dumps({"bytes_per_pixel_numpy_peak": memory_per_pixel(args.model)}, indent=2))
        return 0
    import dataclasses

    import httpx

    from segsynth.serve.config import ServeConfig

    levels, modes = [int(x) for x in args.levels.split(",")], args.ingress.split(",")
    images = kit_images()
    onnx, model_desc, input_size = prepare_model(args.model, args.size, tempfile.mkdtemp(prefix="segsynth-bench-"))
    log.info("model: %s", model_desc)
    cfg = ServeConfig(model=onnx, port=free_port(), max_batch_size=args.max_batch_size,
                      batch_wait_timeout_s=args.batch_wait_ms / 1000.0,
                      max_ongoing_requests=max(64, 2 * args.max_batch_size), max_queued_requests=1024,
                      num_cpus=args.num_cpus)
    from segsynth.serve.job import haproxy_binary, ingress_env
    from segsynth.serve.service import predictor_options

    for mode in modes:  # an unknown mode, or haproxy without its binary (`make haproxy`), fails before anything runs
        dataclasses.replace(cfg, ingress=mode).check_inputs()
        ingress_env(mode)
    result: dict = {"argv": " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
                    "out": os.path.relpath(args.out, REPO), "model": model_desc, "model_input_px": input_size,
                    "images": {**image_sizes(images), "source": "demo-kit eval photos"},
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "load_avg_at_start": round(os.getloadavg()[0], 1)},
                    "serve": {"replicas": cfg.num_replicas, "max_batch_size": cfg.max_batch_size,
                              "batch_wait_timeout_s": cfg.batch_wait_timeout_s,
                              "max_ongoing_requests": cfg.max_ongoing_requests, "access_log": cfg.access_log,
                              "num_cpus": cfg.num_cpus, "model_threads": predictor_options(cfg).get("threads"),
                              "haproxy": haproxy_binary() if "haproxy" in modes else None},
                    # the CPU targets: at the highest comparison level, at least the plain server's
                    # throughput with a lower p99; at concurrency 1, at most 10 ms over model + decode + encode
                    "targets": {"throughput_ratio_min": 1.0, "at_concurrency": max(levels), "overhead_ms_max": 10.0},
                    "gpu": "not measured: no GPU in this session"}
    result["bare"] = bare_call(onnx, images, args.bare_repeats)
    log.info("bare call: %s", result["bare"])

    # ---- our endpoint under each ingress, then the load test under the fastest
    by_ingress, batches = {}, {}
    for mode in modes:
        with endpoint(dataclasses.replace(cfg, ingress=mode)) as url:
            by_ingress[mode] = run_levels(f"{url}/v1/remove", images, levels, args.compare_requests)
            batches[mode] = httpx.get(f"{url}/v1/stats").json()["batch_sizes"]
    chosen = fastest(by_ingress, str(max(levels)))
    with endpoint(dataclasses.replace(cfg, ingress=chosen)) as url:
        result["load"] = load_test(url, images, args.requests, args.concurrency, args.rss_points)
    log.info("load (%s): %s", chosen, drop_latencies(result["load"]))

    plain, plain_rss = plain_levels(onnx, images, levels, args.compare_requests)
    result["ingress"] = by_ingress
    result["ingress_chosen"] = chosen
    result["comparison"] = {
        str(c): {"ours": by_ingress[chosen][str(c)], "plain": plain[str(c)],
                 "throughput_ratio": round(by_ingress[chosen][str(c)]["throughput_rps"]
                                           / max(plain[str(c)]["throughput_rps"], 1e-9), 2),
                 "p99_ratio": round(by_ingress[chosen][str(c)]["p99_ms"] / max(plain[str(c)]["p99_ms"], 1e-9), 2)}
        for c in levels}
    result["comparison_batch_sizes"] = batches[chosen]
    result["plain_rss_mb_after_comparison"] = plain_rss
    result["machine"]["load_avg_at_end"] = round(os.getloadavg()[0], 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(drop_latencies(result), indent=2))
    text = section(drop_latencies(result))
    print(text)
    if args.write:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from _sections import write_section

        write_section(REPO / "BENCHMARKS.md", SECTION, text)
    return 0


def drop_latencies(obj):
    if isinstance(obj, dict):
        return {k: drop_latencies(v) for k, v in obj.items() if k != "latencies_ms"}
    return obj


SECTION = "## Serving"
HOP_NAMES = {"proxy": "proxy and HTTP (client latency minus the replica's time)", "read": "body read and multipart parse",
             "decode": "decode", "queue": "batch queue", "model": "model (its forward pass)",
             "encode": "refine, render and encode", "app": "all of the replica's time"}


def _batches(counts: dict) -> str:
    return ", ".join(f"{v} of {k}" for k, v in sorted(counts.items(), key=lambda kv: int(kv[0]))) or "none"


def plateau(points: list) -> str:
    """Whether the replica's memory levels off: its growth over the second half of the readings against the first."""
    if len(points) < 3:
        return ""
    half = len(points) // 2
    (n0, a), (n1, b), (n2, c) = points[0], points[half], points[-1]
    first, second = (b - a) / a, (c - b) / b
    verdict = ("it levels off (the second half grew less than the first)" if abs(second) < max(abs(first), 0.01)
               else "it still grows in the second half as much as in the first or more")
    return (f"From request {n0} to {n1}: {first:+.1%}; from {n1} to {n2}: {second:+.1%}: {verdict}.")


def ingress_table(r: dict, images: str) -> list[str]:
    """Our endpoint under each ingress mode at each comparison level (one run each, same requests)."""
    by = r.get("ingress") or {}
    if not by:
        return []
    modes = list(by)
    lines = ["How HTTP reaches the replica (`ingress`: `proxy` Serve's Python proxy, `direct` the replica's own "
             "HTTP server, `haproxy` HAProxy in front of it): our endpoint under each, one run per row and mode, "
             f"{images}; req/s and p50 / p99 ms.", "",
             "| concurrency | " + " | ".join(f"{m} req/s | {m} p50 / p99 ms" for m in modes) + " |",
             "|---:|" + "---:|---:|" * len(modes)]
    for c in next(iter(by.values())):
        lines.append(f"| {c} | " + " | ".join(f"{by[m][c]['throughput_rps']} | {by[m][c]['p50_ms']} / "
                                               f"{by[m][c]['p99_ms']}" for m in modes) + " |")
    top = str(r["targets"]["at_concurrency"])
    base = by.get("proxy")
    notes = [f"Fastest at concurrency {top}: `{r['ingress_chosen']}` "
             f"({by[r['ingress_chosen']][top]['throughput_rps']} req/s)"]
    if base:
        notes += [f"`{m}` against `proxy`: {by[m][top]['throughput_rps'] / max(base[top]['throughput_rps'], 1e-9):.2f}x "
                  f"the throughput at {top}, p50 at concurrency {min(by[m], key=int)} "
                  f"{by[m][min(by[m], key=int)]['p50_ms'] - base[min(base, key=int)]['p50_ms']:+.1f} ms"
                  for m in modes if m != "proxy"]
    return lines + ["", "; ".join(notes) + ".", ""]


def section(r: dict) -> str:
    """The "## Serving" section of BENCHMARKS.md from one run's results (nothing else).

    Each table holds runs made under the one load it states: the load test (one concurrency),
    the comparison (per row, both servers at that row's concurrency and request count) and the
    one-request-at-a-time latencies (concurrency 1).
    """
    mc, im, sv, ld, t = r["machine"], r["images"], r["serve"], r["load"], r["targets"]
    images = f"the {im['count']} {im['source']} ({im['min_side']}-{im['max_side']} px a side), cycled"
    command = " ".join(["python benchmarks/serve_load.py", r["argv"]]).strip()
    lines = [SECTION, "",
             f"`{command}` (loopback only; JSON in `{r['out']}`), {r['date']}, {mc['cpus']} CPUs, one-minute load "
             f"average {mc['load_avg_at_start']} at the start and {mc['load_avg_at_end']} at the end; GPU: {r['gpu']}. "
             f"Model: {r['model']}"
             + (f", input {r['model_input_px']} px" if r.get("model_input_px") else "")
             + f"; both servers load the same ONNX file. Images: {images}. Ours: {sv['replicas']} replica(s), "
             f"`max_batch_size` {sv['max_batch_size']}, `batch_wait_timeout_s` {sv['batch_wait_timeout_s']}, "
             f"`max_ongoing_requests` {sv['max_ongoing_requests']}, access log {'on' if sv['access_log'] else 'off'}"
             + (f", `num_cpus` {sv['num_cpus']} (the model's {sv['model_threads']} ONNX Runtime threads)"
                if sv.get("num_cpus") is not None else "")
             + (f"; HAProxy: `{sv['haproxy']}`" if sv.get("haproxy") else "") + ". "
             "Plain server: FastAPI + uvicorn, one image per request, the model called in FastAPI's worker threads "
             "(how rembg's server works), its runtime on every core. The load generator and the server under test "
             "share the machine's cores.", "",
             f"Load and memory, ours only (ingress `{r['ingress_chosen']}`, the fastest below): {ld['requests']} "
             f"requests at concurrency {ld['concurrency']}, {images}.", "",
             "| concurrency | requests | errors | p50 ms | p99 ms | req/s |", "|---:|---:|---:|---:|---:|---:|",
             f"| {ld['concurrency']} | {ld['requests']} | {ld['errors']} | {ld['p50_ms']} | {ld['p99_ms']} | "
             f"{ld['throughput_rps']} |", "",
             "Replica memory (RSS, MB) after each part of the load test: "
             + ", ".join(f"{mb} after {n}" for n, mb in ld["rss_mb"]) + ". " + plateau(ld["rss_mb"])
             + f" Batch sizes the replica formed (count of size): {_batches(ld['batch_sizes'])}.", "",
             *ingress_table(r, images),
             f"Ours (ingress `{r['ingress_chosen']}`) against the plain server: each row is one run of each server at "
             f"that row's concurrency and request count, {images}.", "",
             "| concurrency | requests (each) | errors ours / plain | ours req/s | plain req/s | throughput ratio "
             "| ours p50 ms | plain p50 ms | ours p99 ms | plain p99 ms | p99 ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    comp = r["comparison"]
    for c, v in comp.items():
        o, pl = v["ours"], v["plain"]
        lines.append(f"| {c} | {o['requests']} | {o['errors']} / {pl['errors']} | {o['throughput_rps']} | "
                     f"{pl['throughput_rps']} | {v['throughput_ratio']}x | {o['p50_ms']} | {pl['p50_ms']} | "
                     f"{o['p99_ms']} | {pl['p99_ms']} | {v['p99_ratio']}x |")
    lines += ["", f"Batch sizes our replica (ingress `{r['ingress_chosen']}`) formed during the comparison and its "
              f"warm-up: {_batches(r['comparison_batch_sizes'])}. "
              f"Plain server RSS after the comparison: {r['plain_rss_mb_after_comparison']} MB."]
    b = r["bare"]
    c1 = comp.get("1")
    bare_total = round(b["model_p50_ms"] + b["decode_encode_p50_ms"], 1)
    if c1:
        lines += ["", f"One request at a time (concurrency 1), {images}: where a request's time goes.", "",
                  "| path | requests | p50 ms |", "|---|---:|---:|",
                  f"| bare in-process model call | {b['repeats']} | {b['model_p50_ms']} |",
                  f"| bare in-process decode + PNG encode | {b['repeats']} | {b['decode_encode_p50_ms']} |",
                  f"| ours, HTTP endpoint | {c1['ours']['requests']} | {c1['ours']['p50_ms']} |",
                  f"| plain server, HTTP | {c1['plain']['requests']} | {c1['plain']['p50_ms']} |"]
        hops = c1["ours"].get("hops_p50_ms")
        if hops:
            lines += ["", "The same requests to our endpoint, hop by hop (p50 of each hop over the requests, from the "
                      "replica's `Server-Timing` header; `proxy` is the client's latency minus the replica's time: "
                      "Serve's HTTP proxy, the hop to the replica and the client's own HTTP work).", "",
                      "| hop | p50 ms |", "|---|---:|"]
            lines += [f"| {HOP_NAMES[h]} | {v} |" for h, v in hops.items()]
    prose = []
    top = comp.get(str(t["at_concurrency"]))
    if top:
        ok = top["throughput_ratio"] >= t["throughput_ratio_min"] and top["p99_ratio"] < 1.0
        prose.append(f"Throughput target (at concurrency {t['at_concurrency']}, at least {t['throughput_ratio_min']}x "
                     f"the plain server's throughput with a lower p99): **{'met' if ok else 'missed'}** "
                     f"({top['throughput_ratio']}x). At that concurrency our p99 is {top['p99_ratio']}x the plain "
                     "server's.")
    if c1:
        overhead = round(c1["ours"]["p50_ms"] - bare_total, 1)
        prose.append(f"Overhead target (endpoint p50 at concurrency 1 minus the bare model call, decode and encode, "
                     f"{bare_total} ms; at most {t['overhead_ms_max']} ms): "
                     f"**{'met' if overhead <= t['overhead_ms_max'] else 'missed'}** ({overhead} ms; the plain "
                     f"server's is {round(c1['plain']['p50_ms'] - bare_total, 1)} ms).")
        hops = c1["ours"].get("hops_p50_ms") or {}
        if hops:
            serve_hops = round(hops["proxy"] + hops["read"], 1)
            outside = "Serve's proxy and HTTP" if r["ingress_chosen"] == "proxy" else f"{r['ingress_chosen']} ingress and HTTP"
            prose.append(f"Of that overhead, the hops before our handler ({outside}, the body read) take "
                         f"{serve_hops} ms, and the forward pass takes {hops['model']} ms in the replica against "
                         f"{b['model_p50_ms']} ms bare ({round(hops['model'] - b['model_p50_ms'], 1):+} ms"
                         + (": Ray's processes and the load generator share the cores)." if hops["model"] > b["model_p50_ms"]
                            else ": the bare call's time holds the letterbox and the resize back, which the replica "
                                 "does outside its model thread)."))
        if "batched_per_image_ms" in b:
            gain = b["model_p50_ms"] / max(b["batched_per_image_ms"], 1e-9)
            prose.append(f"A forward pass of {b['batch']} images costs {b['batched_per_image_ms']} ms per image here "
                         f"against {b['model_p50_ms']} ms for one alone ({gain:.2f}x the throughput per core)"
                         + (": batching buys little on this CPU, so throughput is bounded by the CPU each request "
                            "costs, and " + ("the proxy's process and the hop to the replica cost"
                                             if r["ingress_chosen"] == "proxy" else "Ray Serve's own processes cost")
                            + " CPU the plain server does not spend." if gain < 1.3 else "."))
        if b["model_p50_ms"] < b["decode_encode_p50_ms"]:
            prose.append(f"With this model the forward pass ({b['model_p50_ms']} ms) costs less than the decode and "
                         f"encode around it ({b['decode_encode_p50_ms']} ms), so batching has little to amortise.")
    if prose:
        lines += ["", " ".join(prose)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
