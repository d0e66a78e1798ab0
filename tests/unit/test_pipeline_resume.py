"""The chain runner's resume (`segsynth pipeline`, `segsynth demo resume=true`) on fake stages, no
Ray: which steps run and which are skipped, what a failure leaves, `force`, `paths`; and the chain
configs resolve. tests/integration/test_pipeline.py runs the real stages."""
from __future__ import annotations

import json
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from segsynth.config import ConfigError, load_config
from segsynth.demo import DemoConfig, PipelineConfig, expand_env, rebase_paths, resolve_steps, run

FAKE = "segsynth_fake_stage"
STAGES = ("cutouts", "synth", "train", "eval", "serve")


@dataclass(frozen=True)
class FakeConfig:
    out: str = ""
    fail: bool = False


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """Fake stages that write OUT/summary.json last; returns ``go(*overrides) -> (result, calls)``."""
    from segsynth import cli

    calls: list[str] = []

    def fake_run(cfg, address=None):
        calls.append(Path(cfg.out).name)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        if cfg.fail:
            raise RuntimeError("the stage failed")
        (Path(cfg.out) / "summary.json").write_text(json.dumps({"out": cfg.out, "written": 1}))
        return {"out": cfg.out, "written": 1}

    module = types.ModuleType(FAKE)
    module.FakeConfig, module.run = FakeConfig, fake_run
    monkeypatch.setitem(sys.modules, FAKE, module)
    (tmp_path / "configs").mkdir()
    for stage in STAGES:
        monkeypatch.setitem(cli.STAGES, stage, (FAKE, "FakeConfig", FAKE, "a fake stage"))
        (tmp_path / "configs" / f"{stage}.yaml").write_text(f"out: outputs/{stage}\n")

    def go(*overrides: str):
        del calls[:]
        cfg = load_config(PipelineConfig, None, [f"configs={tmp_path / 'configs'}", "steps=[cutouts, synth, train, eval]",
                                                 f"paths={{outputs: {tmp_path / 'run'}}}", *overrides])
        return run(cfg), list(calls)

    return go


def test_a_second_run_skips_every_complete_step(chain, tmp_path):
    result, calls = chain()
    assert result["ran"] == calls == ["cutouts", "synth", "train", "eval"] and result["skipped"] == []
    assert (tmp_path / "run" / "eval" / "summary.json").is_file()  # `paths` moved outputs/ there
    result, calls = chain()
    assert result["skipped"] == ["cutouts", "synth", "train", "eval"] and result["ran"] == calls == []
    assert result["steps"]["train"] == {"out": str(tmp_path / "run" / "train"), "written": 1}  # its summary


def test_a_step_that_runs_makes_every_later_step_run(chain, tmp_path):
    chain()
    (tmp_path / "run" / "synth" / "summary.json").unlink()
    result, calls = chain()
    assert result["skipped"] == ["cutouts"] and result["ran"] == calls == ["synth", "train", "eval"]
    result, calls = chain("force=[train]")
    assert result["skipped"] == ["cutouts", "synth"] and calls == ["train", "eval"]


def test_a_failure_leaves_the_earlier_steps_complete_and_the_next_run_resumes_there(chain, tmp_path, caplog):
    chain()
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="the stage failed"):
        chain("force=[synth]", "overrides={train: [fail=true]}")
    assert "the same command resumes at train (complete: cutouts, synth)" in caplog.text
    run_dir = tmp_path / "run"
    assert (run_dir / "synth" / "summary.json").is_file()
    # train failed and eval never started, but both were invalidated when synth ran: stale, not complete
    assert not (run_dir / "train" / "summary.json").exists() and not (run_dir / "eval" / "summary.json").exists()
    result, calls = chain()
    assert result["skipped"] == ["cutouts", "synth"] and calls == ["train", "eval"]


def test_the_skip_is_one_line_naming_the_folder_and_the_fix(chain, tmp_path, caplog):
    chain()
    caplog.clear()  # the first run's lines too, when an earlier test left the root logger at INFO
    with caplog.at_level(logging.INFO, logger="segsynth.demo"):
        chain()
    [line] = [r.getMessage() for r in caplog.records if "4/4 eval" in r.getMessage()]
    folder = tmp_path / "run" / "eval"
    assert line == (f"pipeline 4/4 eval: skipped, complete in {folder} ({folder / 'summary.json'} exists); "
                    f"to run it again: force=[eval] or delete {folder / 'summary.json'}")


def test_without_resume_every_step_runs(chain):
    chain()
    result, calls = chain("resume=false")
    assert calls == ["cutouts", "synth", "train", "eval"] and result["skipped"] == []


def test_a_service_step_always_runs_and_reruns_nothing(chain):
    chain("steps=[cutouts, serve, synth]")
    result, calls = chain("steps=[cutouts, serve, synth]")
    assert calls == ["serve"] and result["skipped"] == ["cutouts", "synth"]


def test_force_names_a_step_of_the_chain():
    with pytest.raises(ConfigError, match="force: 'trian' is not a step of this chain"):
        load_config(PipelineConfig, None, ["force=[trian]"])


def test_paths_rebase_with_the_longest_prefix_and_expand_the_environment(monkeypatch):
    paths = {"outputs": "s3://b/run", "outputs/demo": "/tmp/demo"}
    assert rebase_paths(["outputs", "outputs/synth", "outputs/demo/train/best", "outputsx/a", "x/outputs/a"], paths) == \
        ["s3://b/run", "s3://b/run/synth", "/tmp/demo/train/best", "outputsx/a", "x/outputs/a"]
    monkeypatch.delenv("SEGSYNTH_BUCKET", raising=False)
    assert expand_env("${SEGSYNTH_BUCKET:-../shared}/data", "paths") == "../shared/data"
    with pytest.raises(ConfigError, match=r"paths.outputs: \$SEGSYNTH_BUCKET is not set"):
        expand_env("$SEGSYNTH_BUCKET", "paths.outputs")
    monkeypatch.setenv("SEGSYNTH_BUCKET", "s3://b/segsynth")
    assert expand_env("${SEGSYNTH_BUCKET:-../shared}/data", "paths") == "s3://b/segsynth/data"


@pytest.mark.parametrize("bucket", [None, "s3://bucket/segsynth"])
def test_the_pipeline_configs_resolve(repo, monkeypatch, bucket):
    """Every step of the production and demo pipelines has its config, and each loads; with
    SEGSYNTH_BUCKET set every output and every shared-data input moves into the bucket."""
    monkeypatch.chdir(repo)
    if bucket:
        monkeypatch.setenv("SEGSYNTH_BUCKET", bucket)
    else:
        monkeypatch.delenv("SEGSYNTH_BUCKET", raising=False)
    steps = resolve_steps(load_config(PipelineConfig, "configs/pipeline.yaml"))
    assert [s.step for s in steps] == ["cutouts", "rooms", "synth", "train", "eval", "export"]
    root = bucket or "outputs"
    assert [s.marker for s in steps] == [f"{root}/{d}" for d in ("cutouts/summary.json", "rooms/summary.json",
                                         "synth/summary.json", "train/summary.json",
                                         "eval/pipeline-ecssd_dev/summary.json", "export/model.json")]
    by_step = {s.step: s.cfg for s in steps}
    assert by_step["eval"].models[0].path == f"{root}/train/best" and by_step["export"].ckpt == f"{root}/train/best"
    assert by_step["cutouts"].sources[0].path == f"{bucket or '../shared'}/data/catalog/ikea"
    assert f"{root}/rooms" in by_step["synth"].backgrounds
    demo = resolve_steps(load_config(PipelineConfig, "configs/demo/pipeline.yaml"))
    assert [s.step for s in demo] == ["cutouts", "synth", "train", "eval", "export"]
    assert demo[-1].marker == "outputs/demo/model.json"
    assert load_config(DemoConfig, "configs/demo/demo.yaml").resume is False  # `make demo` runs every step


def test_segsynth_pipeline_is_a_command(repo, capsys):
    from segsynth.cli import main

    assert main(["pipeline", "--config", str(repo / "configs" / "pipeline.yaml"), "--print-config", "resume=false"]) == 0
    assert "resume: false" in capsys.readouterr().out
    assert 'main(["pipeline", *sys.argv[1:]])' in (repo / "jobs" / "pipeline.py").read_text()


def test_each_steps_storage_section_is_applied_before_the_chain_runs(chain, tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("AWS_ENDPOINT_URL", "-")
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # and back to what it was after the test
    (tmp_path / "configs" / "train.yaml").write_text("out: outputs/train\nstorage:\n  endpoint_url: http://minio:9000\n")
    resolve_steps(load_config(PipelineConfig, None, [f"configs={tmp_path / 'configs'}", "steps=[cutouts, synth, train, eval]"]))
    assert "AWS_ENDPOINT_URL" not in os.environ  # resolving reads the configs, nothing more
    chain()
    assert os.environ["AWS_ENDPOINT_URL"] == "http://minio:9000"
