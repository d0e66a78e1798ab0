"""``segsynth demo``: a chain of stages, each with its own config, on an embedded local Ray.

    segsynth demo --config configs/demo/demo.yaml      # the demo kit, a few minutes
    segsynth demo --config configs/cpu/recipe.yaml     # the CPU recipe on the shared data, ~1.5 h

Each step is an ordinary stage run with its own config ``CONFIGS/<stage>.yaml``; a step written
``<stage>:<name>`` runs that stage with ``CONFIGS/<name>.yaml`` (e.g. ``eval:eval-pascal`` for a
second evaluation set). The configs chain through fixed output folders (synth reads what
cutouts wrote, train reads synth, ...), so any step can also be run alone with ``segsynth
<stage>``. Besides the stages, ``export`` exports a checkpoint (``CONFIGS/export.yaml``).
"""
from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field

from segsynth.config import ConfigError, load_config

log = logging.getLogger(__name__)

STEPS = ("cutouts", "synth", "train", "eval", "serve", "export")
# steps that are not `segsynth <stage>` config stages: step -> (config module, config class, job module)
EXTRA_STEPS = {"export": ("segsynth.train.export", "ExportConfig", "segsynth.train.export")}


def split_step(step: str) -> tuple[str, str]:
    """``"eval:eval-pascal"`` -> ``("eval", "eval-pascal")``; ``"train"`` -> ``("train", "train")``."""
    stage, _, name = step.partition(":")
    return stage, name or stage


@dataclass(frozen=True)
class DemoConfig:
    configs: str = "configs/demo"                          # folder holding <stage>.yaml for each step
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    overrides: dict[str, list[str]] = field(default_factory=dict)  # per step: extra key=value overrides

    def check_inputs(self) -> None:
        unknown = [s for s in self.steps if split_step(s)[0] not in STEPS]
        if unknown:
            raise ConfigError(f"steps: unknown step {unknown[0]!r}; valid steps: {', '.join(STEPS)}")


def run(cfg: DemoConfig, address: str | None = None) -> dict:
    from segsynth.cli import STAGES
    from segsynth import io

    results = {}
    missing = [io.join(cfg.configs, f"{split_step(s)[1]}.yaml") for s in cfg.steps
               if not io.exists(io.join(cfg.configs, f"{split_step(s)[1]}.yaml"))]
    if missing:  # before anything runs: a chain must not stop after an hour for a typo
        raise ConfigError(f"steps: the config {missing[0]} does not exist; add it or remove its step")
    from segsynth import console

    for number, step in enumerate(cfg.steps, 1):
        stage, name = split_step(step)
        config_module, cls_name, job_module = EXTRA_STEPS[stage] if stage in EXTRA_STEPS else STAGES[stage][:3]
        path = io.join(cfg.configs, f"{name}.yaml")
        stage_cfg = load_config(getattr(importlib.import_module(config_module), cls_name), path, cfg.overrides.get(step, []))
        module = importlib.import_module(job_module)
        label = f"demo {number}/{len(cfg.steps)} {step}"
        log.info("%s (%s) ...", label, path)
        started = time.time()
        with console.stage_logs(stage, getattr(stage_cfg, "out", None)):
            results[step] = module.run(stage_cfg, address=address)
        console.result(stage, results[step], label=f"{label} ({time.time() - started:.0f} s)")
    return {"steps": {s: _headline(s, r) for s, r in results.items()}}


def _headline(step: str, result: dict | None) -> dict:
    """The few numbers and paths worth printing at the end of the demo."""
    if not isinstance(result, dict):
        return {}
    keep = ("out", "manifest", "written", "samples_written", "contact_sheet", "best", "curve", "report", "cutouts", "url",
            "best_score", "best_step", "select_on", "models")
    return {k: v for k, v in result.items() if k in keep}
