"""``segsynth serve``: a model as a batched background-removal HTTP endpoint on Ray Serve.

    segsynth serve --config configs/serve.yaml model=outputs/demo/train/best port=8000
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/remove -o cutout.png

``run`` starts (or joins) Ray, deploys :mod:`segsynth.pipeline.serve_app` on ``host:port`` and
serves until Ctrl-C or SIGTERM, then shuts Serve down gracefully (in-flight requests finish).
With ``demo_images`` set it instead starts the endpoint, sends it a few images, saves the
cutouts under ``out`` and shuts down (what ``make demo`` does).

For a cluster, deploy ``serve/config.yaml`` with ``serve deploy`` (autoscaling, fractional GPUs);
its ``args`` are the keys of :class:`ServeConfig`.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time

from segsynth import io
from segsynth.config import ConfigError, save_config
from segsynth.pipeline.serve_config import ServeConfig  # noqa: F401  (the stage's config class)

log = logging.getLogger(__name__)


def start(cfg: ServeConfig, address: str | None = None, ready_timeout_s: float = 300.0) -> str:
    """Start (or join) Ray, deploy the app, wait until ``/readyz`` answers; returns the base URL."""
    from ray import serve

    from segsynth.pipeline.ray_env import init_ray
    from segsynth.pipeline.serve_app import build_app

    init_ray(address)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix, blocking=False)
    wait_ready(cfg.url, ready_timeout_s)
    log.info("serving %s at %s (API docs at %s/docs)", cfg.model, cfg.url, cfg.url)
    return cfg.url


def wait_ready(url: str, timeout_s: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=5.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.5)
    raise TimeoutError(f"the endpoint at {url} was not ready after {timeout_s:.0f} s ({last}); "
                       "see the replica's log in the Ray session folder")


def stop(app_name: str | None = "segsynth") -> None:
    """Shut down gracefully: delete the app first, so its replicas finish the requests they hold
    (answered through the still-running proxy) before the proxy itself goes, then stop Serve."""
    from ray import serve

    if app_name:
        try:
            serve.delete(app_name, _blocking=True)
        except Exception as e:  # noqa: BLE001  Serve not running or app gone: shutdown below still applies
            log.debug("serve.delete(%s): %s", app_name, e)
    serve.shutdown()
    log.info("endpoint shut down")


def run(cfg: ServeConfig, address: str | None = None) -> dict:
    """Serve until interrupted (Ctrl-C or SIGTERM); with ``demo_images``, do the demo round trip."""
    if cfg.demo_images:
        images = io.list_files(cfg.demo_images, io.IMAGE_EXTS)[: cfg.demo_limit]
        if not images:
            raise ConfigError(f"demo_images: {cfg.demo_images} holds no images ({', '.join(io.IMAGE_EXTS)})")
        return demo_roundtrip(cfg, images, cfg.out, address=address)
    stopping = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (docker stop, kill, a job scheduler) shuts down as gracefully as Ctrl-C
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    url = start(cfg, address)
    started = time.time()
    try:
        while not stopping.wait(0.5):
            pass
        log.info("SIGTERM: shutting down")
    except KeyboardInterrupt:
        log.info("interrupted: shutting down")
    finally:
        stop(cfg.app_name)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return {"url": url, "served_s": round(time.time() - started, 1)}


def demo_roundtrip(cfg: ServeConfig, images: list[str], out: str, address: str | None = None) -> dict:
    """Start the endpoint, POST each image to ``/v1/remove``, save ``out/<stem>.png``, shut down.

    Returns ``{url, out, written, failed, latency_ms}``; writes ``out/summary.json`` and the
    resolved config beside the cutouts.
    """
    import httpx

    url = start(cfg, address)
    written, failed, latencies = [], {}, []
    try:
        with httpx.Client(timeout=120.0) as client:
            for path in images:
                t0 = time.perf_counter()
                r = client.post(f"{url}/v1/remove", files={"file": (path.rsplit("/", 1)[-1], io.read_bytes(path))})
                latencies.append((time.perf_counter() - t0) * 1000.0)
                if r.status_code != 200:
                    failed[path] = f"HTTP {r.status_code}: {r.text[:200]}"
                    log.warning("demo: %s -> HTTP %d %s", path, r.status_code, r.text[:200])
                    continue
                dest = io.join(out, io.stem(path) + ".png")
                io.write_bytes(dest, r.content)
                written.append(dest)
            card = client.get(f"{url}/v1/model").json()
    finally:
        stop(cfg.app_name)
    summary = {"url": url, "out": out, "written": len(written), "failed": failed,
               "latency_ms": [round(x, 1) for x in latencies], "model": card.get("name"), "cutouts": written}
    save_config(cfg, out)
    io.write_bytes(io.join(out, "summary.json"), json.dumps(summary, indent=2).encode())
    log.info("demo: %d cutouts from the endpoint in %s", len(written), out)
    return summary
