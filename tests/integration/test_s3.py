"""The demo chain (cutouts -> synth -> train -> eval -> export) with every input and output on a
local S3 (moto's server on 127.0.0.1): the demo kit is uploaded to a bucket, the pipeline's paths
are rebased onto it, and nothing lands on local disk but temp files (stage logs before their
upload, the export's staging copy). Ray Train's checkpoints go to
the bucket too (`storage_path` = the train `out`), as a multi-node run needs."""
from __future__ import annotations

import json
import os

import pytest

from segsynth import io
from segsynth.config import load_config
from segsynth.demo import PipelineConfig, run
from segsynth.testing import tiny_chain_overrides

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS = ["cutouts", "synth", "train", "eval", "export"]
TINY = tiny_chain_overrides(8)  # seconds per step


@pytest.fixture(scope="module")
def s3_ray(s3_server):
    """The AWS_* variables of the local S3 set for this module, and a local Ray started after
    them, so that its workers (which inherit the driver's environment when Ray starts) reach the
    same S3. A session Ray already started by an earlier module did not see them: it is restarted
    here, and again (without them) after the module, so later tests find Ray as they left it."""
    import ray

    from segsynth.ray_env import init_ray

    restart = ray.is_initialized()
    if restart:
        ray.shutdown()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.env.items():
            mp.setenv(key, value)
        init_ray(num_cpus=4)
        yield s3_server.make_bucket()
        ray.shutdown()
    if restart:
        init_ray(num_cpus=4)


def upload(folder: str, dest: str) -> int:
    """Every file under local ``folder`` copied to ``dest`` (a URI); returns the count."""
    n = 0
    for root, _, files in os.walk(folder):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), folder)
            io.write_bytes(io.join(dest, *rel.split(os.sep)), io.read_bytes(os.path.join(root, name)))
            n += 1
    return n


def test_the_demo_chain_runs_on_s3(s3_ray, repo, monkeypatch):
    bucket = s3_ray
    monkeypatch.chdir(repo)  # the demo configs are read from the repo; every path in them is rebased
    assert upload("demo_kit", f"{bucket}/demo_kit") > 50
    out = f"{bucket}/run"
    cfg = load_config(PipelineConfig, "configs/demo/pipeline.yaml",
                      [f"paths={{demo_kit: {bucket}/demo_kit, outputs/demo: {out}}}", f"overrides={json.dumps(TINY)}"])
    result = run(cfg)
    assert result["ran"] == STEPS

    for step in ("cutouts", "synth", "train", "eval"):
        assert io.exists(f"{out}/{step}/summary.json"), step
    assert io.list_files(f"{out}/cutouts", [".parquet"])
    assert io.list_files(f"{out}/synth/shards", [".parquet"])
    assert io.exists(f"{out}/model.onnx") and io.exists(f"{out}/model.json")
    train = json.loads(io.read_bytes(f"{out}/train/summary.json"))
    assert train["best"] == f"{out}/train/best" and io.exists(f"{out}/train/best/model_card.json")
    # Ray Train's own checkpoints (with the optimizer state) are on the bucket, under OUT/NAME
    assert train["latest_checkpoint"].startswith(f"{out}/train/demo/checkpoint_"), train["latest_checkpoint"]
    assert io.list_files(train["latest_checkpoint"])
    evaluation = json.loads(io.read_bytes(f"{out}/eval/summary.json"))
    assert io.exists(evaluation["report"]) and str(evaluation["report"]).startswith(out)
    assert not os.path.exists("outputs/demo/run")  # nothing went to the local default
