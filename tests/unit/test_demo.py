"""`segsynth demo` chains: step names, a stage run with another config, errors before running."""
from __future__ import annotations

import pytest

from segsynth.config import ConfigError, load_config
from segsynth.demo import DemoConfig, run, split_step


def test_split_step():
    assert split_step("train") == ("train", "train")
    assert split_step("eval:eval-pascal") == ("eval", "eval-pascal")


def test_unknown_step_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid steps: cutouts, synth, train, eval, serve, export"):
        load_config(DemoConfig, None, ["steps=[cutouts, paint]"])
    with pytest.raises(ConfigError, match="unknown step 'paint:x'"):
        load_config(DemoConfig, None, ["steps=['paint:x']"])


def test_a_missing_config_fails_before_any_step_runs(tmp_path):
    (tmp_path / "cutouts.yaml").write_text("out: never-written\n")
    cfg = load_config(DemoConfig, None, [f"configs={tmp_path}", "steps=[cutouts, 'eval:eval-other']"])
    with pytest.raises(ConfigError, match="eval-other.yaml does not exist"):
        run(cfg)
    assert not (tmp_path / "never-written").exists()


def test_the_recipe_chain_resolves(repo):
    """Every step of the CPU recipe and the demo has its config, and each loads."""
    import importlib

    from segsynth.cli import STAGES
    from segsynth.demo import EXTRA_STEPS

    for chain in ("configs/demo/demo.yaml", "configs/cpu/recipe.yaml"):
        cfg = load_config(DemoConfig, str(repo / chain))
        for step in cfg.steps:
            stage, name = split_step(step)
            module_name, cls_name = (EXTRA_STEPS[stage] if stage in EXTRA_STEPS else STAGES[stage])[:2]
            cls = getattr(importlib.import_module(module_name), cls_name)
            load_config(cls, str(repo / cfg.configs / f"{name}.yaml"), cfg.overrides.get(step, []))
