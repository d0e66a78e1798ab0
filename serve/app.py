"""Entry point for Ray Serve's own tools; the implementation is segsynth.serve.job.

    serve run serve.app:build model=outputs/demo/train/best            # one replica, 127.0.0.1:8000
    serve run serve/config.yaml                                        # autoscaling, fractional GPUs
    serve deploy serve/config.yaml                                     # on a running cluster (host: 0.0.0.0 there)

``build`` is an application builder: its ``args`` are the keys of ``ServeConfig``
(``configs/serve.yaml``) plus ``config`` (a YAML file of them). HTTP host and port come from
Serve's own options here (``serve run --host/--port`` or ``http_options`` in the YAML);
``segsynth serve`` sets them from the config instead.
"""
import json
from typing import Any

from segsynth.config import STORAGE, apply_storage
from segsynth.serve.job import BackgroundRemoval, app_builder, build_app  # noqa: F401


def build(args: dict[str, Any]):
    """:func:`segsynth.serve.job.app_builder`, after the config's ``storage:`` section is applied
    (this is the entry point of ``serve run`` / ``serve deploy``, as the CLI is of ``segsynth serve``)."""
    args = dict(args or {})
    storage = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items() if k.startswith(f"{STORAGE}.")]
    apply_storage(args.get("config"), storage)
    return app_builder(args)
