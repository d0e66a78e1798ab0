"""`segsynth pipeline` on the demo kit with tiny settings: a chain runs to completion, a second
run skips every step, a deleted summary re-runs that step and every later one, and a failing step
leaves the earlier ones complete so that the next run resumes after them. The verdicts come from
the runner's returned `ran` / `skipped`, not from its log."""
from __future__ import annotations

import json

import pytest

from segsynth import io
from segsynth.config import load_config
from segsynth.demo import PipelineConfig, run
from segsynth.testing import tiny_chain_overrides

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS = ["cutouts", "synth", "train", "eval", "export"]
TINY = tiny_chain_overrides(12)  # seconds per step


@pytest.fixture
def pipeline(repo, tmp_path, monkeypatch, ray_local):
    """``go(**extra_overrides_per_step) -> result`` of configs/demo/pipeline.yaml, outputs in tmp_path."""
    monkeypatch.chdir(repo)  # the demo configs' paths are relative to the repo

    def go(*keys: str, **extra: list[str]) -> dict:
        overrides = {step: TINY.get(step, []) + extra.get(step, []) for step in STEPS}
        cfg = load_config(PipelineConfig, "configs/demo/pipeline.yaml",
                          [f"paths={{outputs/demo: {tmp_path}}}", f"overrides={json.dumps(overrides)}", *keys])
        return run(cfg)

    return go


def test_the_pipeline_resumes_where_it_stopped(pipeline, tmp_path):
    summary = {step: tmp_path / step / "summary.json" for step in ("cutouts", "synth", "train", "eval")}
    card = tmp_path / "model.json"

    first = pipeline()
    assert first["ran"] == STEPS and first["skipped"] == []
    assert all(p.is_file() for p in summary.values()) and card.is_file() and (tmp_path / "model.onnx").is_file()
    assert first["steps"]["synth"]["samples_written"] == 24
    assert (tmp_path / "logs" / "export.log").is_file()  # beside the exported file, whose `out` is no folder

    again = pipeline()
    assert again["skipped"] == STEPS and again["ran"] == []
    assert again["steps"]["synth"]["samples_written"] == 24  # what the skipped step wrote when it ran

    summary["train"].unlink()  # as if training had been stopped: train resumes from its checkpoint
    third = pipeline()
    assert third["skipped"] == ["cutouts", "synth"] and third["ran"] == ["train", "eval", "export"]
    assert third["steps"]["train"]["best"] and summary["train"].is_file()

    # eval runs (forced), then export fails on a checkpoint that is not there
    with pytest.raises(io.InputError, match="ckpt"):
        pipeline("force=[eval]", export=[f"ckpt={tmp_path / 'no-such-checkpoint'}"])
    assert all(p.is_file() for p in summary.values())  # eval, which ran before the failure, is complete
    assert not card.exists()
    resumed = pipeline()
    assert resumed["skipped"] == ["cutouts", "synth", "train", "eval"] and resumed["ran"] == ["export"]
    assert card.is_file()
