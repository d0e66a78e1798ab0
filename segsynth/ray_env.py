"""Starting or joining Ray the same way in every stage.

``init_ray(address)`` joins a cluster when an address is given (``--address`` or
``RAY_ADDRESS``); otherwise it starts an embedded local Ray that writes nothing outside
``RAY_TMPDIR`` (default ``<tmp>/segsynth-ray``) and sends no usage stats.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# Ray Train + Ray Data on a 2-core machine hangs when the train workers hold every CPU; the
# embedded Ray advertises at least this many logical CPUs so data tasks can always schedule.
MIN_LOCAL_CPUS = 4
# Ray waits a fixed 30 s for its raylet; on a loaded 2-core machine that can pass, so retry.
LOCAL_START_ATTEMPTS = 3


def prepare_env() -> None:
    """Environment for a quiet, self-contained local Ray (safe to call many times)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TMPDIR", str(Path(tempfile.gettempdir(), "segsynth-ray")))
    Path(os.environ["RAY_TMPDIR"], "ray").mkdir(parents=True, exist_ok=True)
    # Worker processes must not try the model hub unless the user opted in.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray starts its workers at nice 15, so on a small machine a training worker loses its cores
    # to Ray's own processes (at 0) and anything else running: the CPU recipe trained at 0.6x the
    # speed of plain torch. Read by the raylet when it starts; a cluster's nodes set their own.
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.update({k: v for k, v in SERVE_ENV.items() if k not in os.environ})


# Ray Serve's leaner request path (benchmarks/serve_load.py measured the hops): the HTTP proxy
# reaches the replica over gRPC instead of Ray actor calls, and the replica runs the endpoint's
# handlers on its own event loop instead of a second one in another thread (the handlers hand
# their blocking work to worker threads). Read by the Serve processes when they start: a cluster
# sets them in its nodes' environment (deploy/kuberay, cluster.yaml).
SERVE_ENV = {"RAY_SERVE_PROXY_USE_GRPC": "1", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


# What every Ray worker needs to see as the driver does: the hub switch, the shared data, and where
# the object store is (s3:// paths: the standard AWS variables pyarrow reads). Credentials are not
# forwarded: a job's runtime_env is shown on the dashboard; a local Ray's workers inherit them, and
# a cluster's nodes have their own (instance role, IRSA, the variables in their environment, or the
# credentials file a config's `storage.credentials_file` names: its path and profile are forwarded).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "SEGSYNTH_DATA", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE")


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs):
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray. Returns ray."""
    prepare_env()
    import ray

    if ray.is_initialized():
        return ray
    from segsynth import console

    # the workers' output (their logs, Ray Data's progress bars) reaches the terminal only with
    # --verbose; otherwise it stays in Ray's session logs, copied to <out>/logs/ray by the stage
    kwargs.setdefault("log_to_driver", console.verbose())
    address = address or os.environ.get("RAY_ADDRESS") or None
    # a submitted job's workers already get its runtime env's variables, and Ray refuses to merge a
    # ray.init runtime env that sets any of them again ("Failed to merge the Job's runtime env")
    job_env = _submitted_job_env_vars()
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ and k not in job_env}
    runtime_env = {"env_vars": env_vars} if env_vars else None
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING, **kwargs)
    else:
        n = num_cpus or max(os.cpu_count() or 1, MIN_LOCAL_CPUS)
        log.debug("starting an embedded local Ray with %d logical CPUs (temp dir %s)", n, os.environ["RAY_TMPDIR"])
        for attempt in range(LOCAL_START_ATTEMPTS):
            try:
                # "local": a new instance, never one that another process on this machine started
                # (with no address Ray joins the latest local cluster it finds in its temp dir)
                ray.init(address="local", num_cpus=n, include_dashboard=False, runtime_env=runtime_env,
                         _temp_dir=str(Path(os.environ["RAY_TMPDIR"], "ray")), logging_level=logging.WARNING, **kwargs)
                break
            except Exception as e:  # Ray raises a bare Exception when its raylet starts too slowly
                if "timed out during startup" not in str(e) or attempt == LOCAL_START_ATTEMPTS - 1:
                    raise
                log.warning("local Ray did not start in time (busy machine?); trying again")
                ray.shutdown()
    _quiet(ray, local=not address)
    return ray


def _submitted_job_env_vars() -> dict[str, str]:
    """The ``env_vars`` of the runtime env this driver runs in when it is a submitted job
    (``ray job submit --runtime-env...``; Ray's job supervisor passes them in an env variable), else {}."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    return dict((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})


def _quiet(ray, local: bool) -> None:
    """Ray's driver-side chatter (progress bars, controller warnings) to the stage's log file."""
    from segsynth import console

    os.environ.pop("SEGSYNTH_RAY_SESSION_DIR", None)
    if local:  # the embedded Ray's worker logs are on this machine: the stage copies them to <out>/logs/ray
        from ray._private.worker import global_worker

        os.environ["SEGSYNTH_RAY_SESSION_DIR"] = str(global_worker.node.get_session_dir_path())
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = console.verbose()
    ctx.print_on_execution_start = console.verbose()
    console.route_library_logs()

