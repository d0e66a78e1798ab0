"""``segsynth demo``: the whole pipeline on the demo kit, on an embedded local Ray.

Each step is an ordinary stage run with its own config from ``configs/demo/<stage>.yaml``;
the configs chain through fixed folders under ``outputs/demo/`` (synth reads what cutouts
wrote, train reads synth, ...), so any step can also be run alone with ``segsynth <stage>``.
"""
from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field

from segsynth.config import ConfigError, load_config

log = logging.getLogger(__name__)

STEPS = ("cutouts", "synth", "train", "eval", "serve")


@dataclass(frozen=True)
class DemoConfig:
    configs: str = "configs/demo"                          # folder holding <stage>.yaml for each step
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    overrides: dict[str, list[str]] = field(default_factory=dict)  # per step: extra key=value overrides

    def check_inputs(self) -> None:
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise ConfigError(f"steps: unknown step {unknown[0]!r}; valid steps: {', '.join(STEPS)}")


def run(cfg: DemoConfig, address: str | None = None) -> dict:
    from segsynth.cli import STAGES
    from segsynth import io

    results = {}
    for step in cfg.steps:
        module_name, cls_name, _ = STAGES[step]
        module = importlib.import_module(module_name)
        stage_cfg = load_config(getattr(module, cls_name), io.join(cfg.configs, f"{step}.yaml"), cfg.overrides.get(step, []))
        log.info("demo: step %s (%s)", step, io.join(cfg.configs, f"{step}.yaml"))
        started = time.time()
        results[step] = module.run(stage_cfg, address=address)
        log.info("demo: step %s done in %.0f s -> %s", step, time.time() - started, getattr(stage_cfg, "out", ""))
    return {"steps": {s: _headline(s, r) for s, r in results.items()}}


def _headline(step: str, result: dict | None) -> dict:
    """The few numbers and paths worth printing at the end of the demo."""
    if not isinstance(result, dict):
        return {}
    keep = ("out", "manifest", "written", "samples_written", "contact_sheet", "best", "curve", "report", "cutouts", "url")
    return {k: v for k, v in result.items() if k in keep}
