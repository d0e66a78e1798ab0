"""Entry point for Ray Serve's own tools; the implementation is segsynth.serve.job.

    serve run serve.app:build model=outputs/demo/train/best            # one replica, 127.0.0.1:8000
    serve run serve/config.yaml                                        # autoscaling, fractional GPUs
    serve deploy serve/config.yaml                                     # on a running cluster

``build`` is an application builder: its ``args`` are the keys of ``ServeConfig``
(``configs/serve.yaml``) plus ``config`` (a YAML file of them). HTTP host and port come from
Serve's own options here (``serve run --host/--port`` or ``http_options`` in the YAML);
``segsynth serve`` sets them from the config instead.
"""
from segsynth.serve.job import BackgroundRemoval, app_builder as build, build_app  # noqa: F401
