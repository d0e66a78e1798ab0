"""Stage configs: YAML defaults, dotted overrides, strict keys and types, resolved copy."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from segsynth.config import ConfigError, load_config, save_config

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Shadow:
    opacity: float = 0.5
    kind: Literal["shape", "ellipse"] = "shape"


@dataclass(frozen=True)
class Stage:
    out: str = "out"
    size: int = 512
    seed: int = 0
    tags: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=lambda: {"white": 1.0})
    limit: Optional[int] = None
    shadow: Shadow = field(default_factory=Shadow)

    def check_inputs(self):
        if self.size % 32:
            raise ConfigError(f"size: {self.size} is not a multiple of 32")


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("size: 256\nshadow: {opacity: 0.2}\ntags: [a]\n")
    cfg = load_config(Stage, path, ["seed=3", "shadow.kind=ellipse", "weights={white: 2, noise: 1}", "limit=5"])
    assert cfg.size == 256 and cfg.seed == 3 and cfg.tags == ["a"] and cfg.limit == 5
    assert cfg.shadow == Shadow(opacity=0.2, kind="ellipse")
    assert cfg.weights == {"white": 2.0, "noise": 1.0} and isinstance(cfg.weights["white"], float)


def test_defaults_without_file():
    assert load_config(Stage) == Stage()


@pytest.mark.parametrize("override,needle", [
    (["sise=3"], "sise"),
    (["shadow.opacty=0.1"], "shadow.opacty"),
    (["size=big"], "size"),
    (["shadow.kind=blob"], "shadow.kind"),
    (["size=true"], "size"),
    (["out=3"], "out"),
    (["size.x=3"], "size"),
    (["size"], "key=value"),
])
def test_unknown_key_or_wrong_type_names_it(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(Stage, None, override)


def test_unknown_key_in_file_lists_valid_keys(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("colour: red\n")
    with pytest.raises(ConfigError) as e:
        load_config(Stage, path)
    assert "colour" in str(e.value) and "size" in str(e.value)


def test_check_inputs_runs(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(Stage, None, ["size=100"])


def test_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Stage, tmp_path / "nope.yaml")


def test_frozen_and_resolved_copy(tmp_path):
    cfg = load_config(Stage, None, ["size=64"])
    with pytest.raises(Exception):
        cfg.size = 3  # type: ignore[misc]
    path = save_config(cfg, str(tmp_path / "run"))
    again = yaml.safe_load(open(path))
    assert again["size"] == 64 and again["shadow"]["kind"] == "shape"
    assert load_config(Stage, path) == cfg


# every YAML under configs/ and the config class that reads it, by the file's stem before any "-":
# the stages' own (segsynth.cli.STAGES) and the configs read by commands that are not stages
def _config_classes() -> dict[str, tuple[str, str]]:
    from segsynth.cli import STAGES

    review = ("segsynth.review.config", "ReviewConfig")
    return {**{stage: (module, cls) for stage, (module, cls, _, _) in STAGES.items()},
            "recipe": STAGES["demo"][:2], "export": ("segsynth.train.export", "ExportConfig"),
            "active": ("segsynth.active.config", "ActiveConfig"), "pick": review, "accept": review, "compare": review}


# what a file's own usage line says to pass on the command line
CONFIG_OVERRIDES = {"configs/serve.yaml": ["model=outputs/export/model.onnx"]}


def test_every_stage_has_a_demo_config(repo):
    from segsynth.cli import STAGES

    missing = [stage for stage in STAGES if not (repo / "configs" / "demo" / f"{stage}.yaml").is_file()]
    assert not missing, f"stages without configs/demo/<stage>.yaml: {missing}"


@pytest.mark.parametrize("name", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")))
def test_every_config_file_loads_with_its_class(repo, name):
    """Every shipped config, not only the demo's: keys and types match the class that reads it
    (a file whose kind is not in _config_classes fails here rather than going unchecked)."""
    import importlib

    classes = _config_classes()
    stem = Path(name).stem.split("-")[0]
    assert stem in classes, f"{name}: which config class reads it? add it to _config_classes"
    module, cls = classes[stem]
    load_config(getattr(importlib.import_module(module), cls), repo / name, CONFIG_OVERRIDES.get(name, []))


# ---------------------------------------------------------------- the storage: section
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE")


@pytest.fixture
def no_aws_env(monkeypatch):
    """None of the storage variables set; whatever a test sets is undone after it."""
    for var in AWS_VARS:
        monkeypatch.setenv(var, "-")  # recorded, so the original value (or its absence) comes back
        monkeypatch.delenv(var)


def _storage_yaml(tmp_path):
    path = tmp_path / "synth.yaml"
    path.write_text(f"out: {tmp_path / 'out'}\nstorage:\n  endpoint_url: http://minio:9000\n")
    return path


def test_load_config_leaves_the_environment_alone(tmp_path, no_aws_env):
    import os

    from segsynth.synth.config import SynthConfig

    before = dict(os.environ)
    cfg = load_config(SynthConfig, _storage_yaml(tmp_path), ["storage.region=eu-west-1", "seed=3"])
    assert cfg.seed == 3 and dict(os.environ) == before
    with pytest.raises(ConfigError, match="unknown config key storage.secret_access_key"):  # still checked
        load_config(SynthConfig, None, ["storage.secret_access_key=abc"])


def test_the_entry_points_apply_the_storage_section(tmp_path, no_aws_env, capsys):
    import os

    from segsynth.cli import main
    from segsynth.config import apply_storage

    path = _storage_yaml(tmp_path)
    assert apply_storage(None) == {} and "AWS_ENDPOINT_URL" not in os.environ
    assert main(["synth", "--config", str(path), "--print-config", "storage.region=eu-west-1"]) == 0
    assert "storage" not in capsys.readouterr().out  # not part of the resolved config
    assert os.environ["AWS_ENDPOINT_URL"] == "http://minio:9000" and os.environ["AWS_REGION"] == "eu-west-1"


def test_a_command_that_runs_a_config_applies_its_storage_section(tmp_path, no_aws_env, capsys):
    import os

    from segsynth.cli import main

    path = tmp_path / "review.yaml"
    path.write_text("storage:\n  region: eu-north-1\n")
    assert main(["review", "create", "--config", str(path), "--print-config", f"images={tmp_path}",
                 f"candidates=[{{name: ours, path: {tmp_path}}}]"]) == 0
    assert os.environ["AWS_REGION"] == "eu-north-1"


def test_serve_apps_builder_applies_the_storage_section(tmp_path, no_aws_env, repo, monkeypatch):
    import os

    pytest.importorskip("ray.serve")
    monkeypatch.syspath_prepend(str(repo))  # serve.app imports from the checkout, as in `serve run`
    from serve.app import build

    path = tmp_path / "serve.yaml"
    path.write_text("storage:\n  endpoint_url: http://minio:9000\n")
    build({"config": str(path), "model": str(tmp_path / "model.onnx"), "storage.region": "eu-west-1"})
    assert os.environ["AWS_ENDPOINT_URL"] == "http://minio:9000" and os.environ["AWS_REGION"] == "eu-west-1"


def test_a_rounds_nested_training_config_applies_its_storage_section(tmp_path, no_aws_env):
    """An active-learning round loads its train_config itself: that file's storage: applies too."""
    import os
    from pathlib import Path

    from segsynth.active.config import ActiveConfig
    from segsynth.active.job import _train_config
    from segsynth.evaluate.config import EvalModel

    train = tmp_path / "train.yaml"
    train.write_text(f"out: {tmp_path / 'train'}\ndata: [{{path: {tmp_path / 'synth'}, kind: synthetic}}]\n"
                     "storage:\n  region: ap-south-1\n")
    model = EvalModel(name="m", kind="checkpoint", path=str(tmp_path / "model"))
    cfg = ActiveConfig(out=str(tmp_path / "active"), train_config=str(train))
    tcfg = _train_config(cfg, Path(tmp_path / "active" / "round-1"), model, {"accepted": 0, "context_cutouts": 0}, None)
    assert os.environ["AWS_REGION"] == "ap-south-1" and tcfg.encoder_weights.endswith("model")
