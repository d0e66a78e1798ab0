"""Shared test set-up: offline hub, a self-contained local Ray, the shared real data."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before anything imports huggingface_hub or ray: a missing file must fail at once, and Ray
# must write nothing to ~/.ray or /tmp/ray.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TMPDIR", str(Path(tempfile.gettempdir(), "segsynth-ray-tests")))
Path(os.environ["RAY_TMPDIR"], "ray").mkdir(parents=True, exist_ok=True)
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$SEGSYNTH_DATA``, else ``../shared/data`` beside the repo; None when absent."""
    env = os.environ.get("SEGSYNTH_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data not found: set SEGSYNTH_DATA to the shared data folder")
    return path


@pytest.fixture(scope="session")
def dis_model() -> Path:
    data = shared_data_dir()
    path = Path(os.environ.get("SEGSYNTH_DIS_MODEL", str(data.parent / "models" / "isnet-general-fp16.onnx") if data else ""))
    if not path.is_file():
        pytest.skip("DIS model not found: set SEGSYNTH_DIS_MODEL to isnet-general-fp16.onnx")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the whole test session (4 logical CPUs on 2 cores)."""
    from segsynth.ray_env import init_ray

    ray = init_ray(num_cpus=4)
    yield ray
    ray.shutdown()


def _ellipse_rgba(h: int, w: int, color) -> "np.ndarray":
    """An ``(h, w, 4) uint8`` cutout: a flat-coloured ellipse filling its box, alpha 0/255."""
    import numpy as np

    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = color
    yy, xx = np.mgrid[:h, :w]
    rgba[..., 3] = (((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 <= 1) * 255
    return rgba


@pytest.fixture(scope="session")
def ellipse_rgba():
    """The factory ``ellipse_rgba(h, w, color) -> (h, w, 4) uint8`` of test cutouts."""
    return _ellipse_rgba


def pytest_collection_modifyitems(config, items):
    """A test that uses the local Ray is a `ray` test, marked or not (`make test-fast` skips them)."""
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


# ---------------------------------------------------------------- a local S3 (moto's server)
class LocalS3:
    """moto's standalone S3 server on 127.0.0.1: its ``endpoint`` URL, the standard AWS variables
    that point pyarrow (and boto3) at it (``env``), and :meth:`make_bucket`."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true"}  # no instance-metadata probe: nothing beyond 127.0.0.1

    def client(self, service: str = "s3", **credentials):
        import boto3

        credentials = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.env["AWS_REGION"], **credentials)

    def make_bucket(self) -> str:
        """A new, uniquely named bucket; returns ``s3://NAME``."""
        import uuid

        name = f"segsynth-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server() -> LocalS3:
    """moto's S3 server in a thread of this process, on 127.0.0.1 and a free port, for the session.
    Sets no environment: see ``s3_env``."""
    import socket

    moto_server = pytest.importorskip("moto.server", reason="moto[server] is a test dependency: pip install -e '.[dev]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield LocalS3(f"http://127.0.0.1:{port}")
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> LocalS3:
    """The local S3's AWS_* variables set for one test (restored after)."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env) -> str:
    """A fresh bucket on the local S3, with its AWS_* variables set; ``s3://NAME``."""
    return s3_env.make_bucket()
