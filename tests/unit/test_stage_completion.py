"""A stage marks its output incomplete first and complete last: a run that fails after it
started leaves no ``summary.json`` (a previous run's) claiming the folder is complete, so a
standalone rerun that fails does not look done, and the pipeline does not skip it. No Ray: each
stage fails at its first heavy step, patched to raise."""
from __future__ import annotations

import json

import pytest

from segsynth import io
from segsynth.config import load_config

TINY_TRAIN = ["encoder_name=tu-mobilenetv3_small_050", "encoder_weights=null", "size=64", "batch_size=2",
              "num_workers=1", "data=[{path: demo_kit/eval, kind: labelled}]"]


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


def _cutouts(out, tmp_path, monkeypatch):
    from segsynth.cutouts import job
    from segsynth.cutouts.config import CutoutsConfig

    monkeypatch.setattr(job, "_extract", _boom)
    return job.run, load_config(CutoutsConfig, "configs/demo/cutouts.yaml", [f"out={out}", "workers=1"])


def _rooms(out, tmp_path, monkeypatch):
    from segsynth.rooms import job
    from segsynth.rooms.config import RoomsConfig

    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    monkeypatch.setattr(job, "_generate", _boom)
    return job.run, load_config(RoomsConfig, None, [f"out={out}", f"model={model}", "count=2", "part_size=1", "num_gpus=0"])


def _synth(out, tmp_path, monkeypatch):
    from segsynth.synth import job
    from segsynth.synth.config import SynthConfig

    monkeypatch.setattr(job, "plan_shards", lambda cfg: [{"shard": 0, "ks": [0]}])
    monkeypatch.setattr(job, "pending_shards", _boom)
    return job.run, load_config(SynthConfig, "configs/demo/synth.yaml", [f"out={out}", f"cutouts={tmp_path}",
                                                                         f"backgrounds=[{tmp_path}]", "scene_backgrounds=[]",
                                                                         "distractor_cutouts=null"])


def _eval(out, tmp_path, monkeypatch):
    from segsynth.evaluate import job
    from segsynth.evaluate.config import EvalConfig

    monkeypatch.setattr(job, "_predict_with_ray", _boom)
    return job.run, load_config(EvalConfig, None, ["data=demo_kit/eval", f"out={out}",
                                                   "models=[{name: white, kind: white-threshold}]"])


def _train(out, tmp_path, monkeypatch):
    from segsynth import ray_env
    from segsynth.train import job
    from segsynth.train.config import TrainConfig

    monkeypatch.setattr(ray_env, "init_ray", _boom)
    return job.run, load_config(TrainConfig, None, [f"out={out}", *TINY_TRAIN])


def _train_local(out, tmp_path, monkeypatch):
    from segsynth.train import local
    from segsynth.train.config import TrainConfig

    monkeypatch.setattr(local, "train_loop", _boom)
    return local.run_local, load_config(TrainConfig, None, [f"out={out}", *TINY_TRAIN])


def _review(out, tmp_path, monkeypatch):
    from segsynth.review import build
    from segsynth.review.config import ReviewConfig
    from segsynth.testing import make_review_inputs

    src = make_review_inputs(tmp_path / "in")
    monkeypatch.setattr(build.Store, "create", _boom)
    return build.create, load_config(ReviewConfig, None, [f"images={src['images']}", f"out={out}",
                                                          f"candidates=[{{name: good, path: {src['good']}}}]"])


@pytest.mark.parametrize("stage", [_cutouts, _rooms, _synth, _eval, _train, _train_local, _review],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_stage_that_fails_after_it_started_leaves_no_summary(stage, repo, tmp_path, monkeypatch):
    monkeypatch.chdir(repo)  # the demo configs' relative paths
    out = tmp_path / "out"
    out.mkdir()
    (out / io.SUMMARY).write_text(json.dumps({"out": str(out), "from": "an earlier, complete run"}))
    run, cfg = stage(str(out), tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg)
    assert not (out / io.SUMMARY).exists(), "a failed run left a summary.json claiming the output is complete"
    assert (out / "config.yaml").is_file() or stage is _review  # it had started: its resolved config is written


def test_mark_complete_writes_the_summary_that_mark_incomplete_removes(tmp_path):
    out = str(tmp_path / "out")
    io.mark_incomplete(out)  # nothing there yet: nothing to do
    assert io.mark_complete(out, {"n": 1}) == {"n": 1}
    assert json.loads(io.read_bytes(io.join(out, io.SUMMARY))) == {"n": 1}
    io.mark_incomplete(out)
    assert not io.exists(io.join(out, io.SUMMARY)) and not io.delete(io.join(out, io.SUMMARY))
