"""``segsynth demo`` and ``segsynth pipeline``: a chain of stages, each with its own config, on one Ray.

    segsynth demo --config configs/demo/demo.yaml      # the demo kit, a few minutes
    segsynth demo --config configs/cpu/recipe.yaml     # the CPU recipe on the shared data, ~1.5 h
    segsynth pipeline --config configs/pipeline.yaml   # production: cutouts -> rooms -> synth -> train -> eval -> export
    ray job submit --working-dir . -- python jobs/pipeline.py --config configs/pipeline.yaml

Each step is an ordinary stage run with its own config ``CONFIGS/<stage>.yaml``; a step written
``<stage>:<name>`` runs that stage with ``CONFIGS/<name>.yaml`` (e.g. ``eval:eval-pascal`` for a
second evaluation set). The configs chain through fixed output folders (synth reads what
cutouts wrote, train reads synth, ...), so any step can also be run alone with ``segsynth
<stage>``. Besides the stages, ``export`` exports a checkpoint (``CONFIGS/export.yaml``).
``paths`` moves those folders without editing the step configs: every path in every step's
config that starts with a key is rebased onto its value (``paths={outputs: s3://bucket/run}``).

Resume (``resume: true``; ``segsynth pipeline``'s default): a step whose output is complete is
skipped unless an earlier step ran in this run (what it wrote may have changed, so every later
step runs again) or ``force`` names it. Complete means the step's marker exists: the
``OUT/summary.json`` every stage deletes when it starts and writes last (``io.mark_incomplete``,
``io.mark_complete``), or for ``export`` the model card ``FILE.json``
written once the file passed its parity check. Before a step runs, its marker and those of all
later steps are deleted, so a run that fails or is cancelled resumes at its first incomplete
step. Inside a step, the stage resumes as it does alone (synth keeps the shards already written,
train restores its latest checkpoint under ``OUT/NAME``).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from segsynth.config import ConfigError, apply_storage, load_config

log = logging.getLogger(__name__)

# every valid step
STEPS = ("cutouts", "synth", "train", "eval", "serve", "export", "rooms")
DEMO_STEPS = ("cutouts", "synth", "train", "eval", "serve", "export")
PIPELINE_STEPS = ("cutouts", "rooms", "synth", "train", "eval", "export")
# steps that are not `segsynth <stage>` config stages: step -> (config module, config class, job module)
EXTRA_STEPS = {"export": ("segsynth.train.export", "ExportConfig", "segsynth.train.export")}
# steps with no output a later step reads: they always run and make no later step run again
SERVICES = ("serve",)
# what a stage reuses from its own `out` when it runs again (a step re-run after an earlier one)
REUSED_INSIDE = {"cutouts": "the parts already written (OUT/parts)", "synth": "the shards already written",
                 "train": "its latest checkpoint under OUT/NAME"}


def split_step(step: str) -> tuple[str, str]:
    """``"eval:eval-pascal"`` -> ``("eval", "eval-pascal")``; ``"train"`` -> ``("train", "train")``."""
    stage, _, name = step.partition(":")
    return stage, name or stage


@dataclass(frozen=True)
class DemoConfig:
    command: ClassVar[str] = "demo"  # the log label; not a config key
    configs: str = "configs/demo"                          # folder holding <stage>.yaml for each step
    steps: list[str] = field(default_factory=lambda: list(DEMO_STEPS))
    overrides: dict[str, list[str]] = field(default_factory=dict)  # per step: extra key=value overrides
    paths: dict[str, str] = field(default_factory=dict)  # path prefix -> replacement in every step's config;
    #   values may use ${VAR} or ${VAR:-default} from the environment
    resume: bool = False  # skip a step whose output is complete unless an earlier step ran
    force: list[str] = field(default_factory=list)  # steps that run even when complete (and so every later one)

    def check_inputs(self) -> None:
        unknown = [s for s in self.steps if split_step(s)[0] not in STEPS]
        if unknown:
            raise ConfigError(f"steps: unknown step {unknown[0]!r}; valid steps: {', '.join(STEPS)}")
        stray = [s for s in self.force if s not in self.steps]
        if stray:
            raise ConfigError(f"force: {stray[0]!r} is not a step of this chain; steps: {', '.join(self.steps)}")
        bad = [k for k in self.paths if not k.strip("/")]
        if bad:
            raise ConfigError(f"paths: {bad[0]!r} would rebase every path; name a folder, e.g. outputs")


@dataclass(frozen=True)
class PipelineConfig(DemoConfig):
    """``segsynth pipeline``: the production chain over ``configs/<stage>.yaml``, resuming by default."""

    command: ClassVar[str] = "pipeline"
    configs: str = "configs"
    steps: list[str] = field(default_factory=lambda: list(PIPELINE_STEPS))
    resume: bool = True


@dataclass(frozen=True)
class Step:
    """One step of a chain, resolved before anything runs."""

    step: str
    stage: str
    path: str      # its config file
    cfg: Any       # its resolved config, paths rebased
    job: str       # the module whose run(cfg, address) runs it
    marker: str | None  # the file written last once its output is complete; None: always runs


def run(cfg: DemoConfig, address: str | None = None) -> dict:
    """Run the chain; returns ``{steps: {step: headline}, ran: [...], skipped: [...]}``."""
    from segsynth import console

    steps = resolve_steps(cfg)  # before anything runs: a chain must not stop after an hour for a typo
    for s in steps:  # each step's storage: section, as `segsynth <stage>` applies it (a later step's wins)
        apply_storage(s.path, cfg.overrides.get(s.step, []))
    results, ran, skipped = {}, [], []
    rerun_from = None  # the first step that ran: every later one runs too
    for number, s in enumerate(steps, 1):
        label = f"{cfg.command} {number}/{len(steps)} {s.step}"
        forced = s.step in cfg.force
        if cfg.resume and rerun_from is None and not forced and s.marker and _exists(s.marker):
            log.info("%s: skipped, complete in %s (%s exists); to run it again: force=[%s] or delete %s",
                     label, _folder(s), s.marker, s.step, s.marker)
            results[s.step] = _previous(s)
            skipped.append(s.step)
            continue
        if s.stage not in SERVICES and rerun_from is None:
            rerun_from = s.step
            for later in steps[number - 1:]:  # a failure or a cancel from here on leaves them incomplete
                _invalidate(later)
        if cfg.resume and s.stage in REUSED_INSIDE and (forced or rerun_from != s.step) and _exists(_folder(s)):
            log.warning("%s runs again (%s); it reuses %s in %s: delete that folder for a fresh start", s.step,
                        "force" if forced else f"{rerun_from} ran", REUSED_INSIDE[s.stage], _folder(s))
        log.info("%s (%s) ...", label, s.path)
        started = time.time()
        with console.stage_logs(s.stage, _log_folder(s)):
            try:
                results[s.step] = importlib.import_module(s.job).run(s.cfg, address=address)
            except BaseException:
                if cfg.resume:
                    log.error("%s failed; the same command resumes at %s%s", label, s.step,
                              f" (complete: {', '.join(skipped + ran)})" if skipped or ran else "")
                raise
        ran.append(s.step)
        console.result(s.stage, results[s.step], label=f"{label} ({time.time() - started:.0f} s)")
    return {"steps": {s: _headline(s, r) for s, r in results.items()}, "ran": ran, "skipped": skipped}


def resolve_steps(cfg: DemoConfig) -> list[Step]:
    """Every step's config, loaded (overrides applied, ``paths`` rebased) and checked."""
    from segsynth import io
    from segsynth.cli import STAGES

    missing = [io.join(cfg.configs, f"{split_step(s)[1]}.yaml") for s in cfg.steps
               if not io.exists(io.join(cfg.configs, f"{split_step(s)[1]}.yaml"))]
    if missing:
        raise ConfigError(f"steps: the config {missing[0]} does not exist; add it or remove its step")
    paths = {expand_env(k, "paths"): expand_env(v, f"paths.{k}") for k, v in cfg.paths.items()}
    steps = []
    for step in cfg.steps:
        stage, name = split_step(step)
        config_module, cls_name, job_module = EXTRA_STEPS[stage] if stage in EXTRA_STEPS else STAGES[stage][:3]
        path = io.join(cfg.configs, f"{name}.yaml")
        stage_cfg = load_config(getattr(importlib.import_module(config_module), cls_name), path, cfg.overrides.get(step, []))
        if paths:
            stage_cfg = rebase_paths(stage_cfg, paths)
        steps.append(Step(step, stage, path, stage_cfg, job_module, completion_marker(stage, stage_cfg)))
    return steps


def completion_marker(stage: str, cfg: Any) -> str | None:
    """The file a step's stage writes last, once its output is complete; None: the step always runs."""
    from segsynth import io

    if stage in SERVICES:
        return None
    if stage == "export":
        from segsynth.predict import card_file
        from segsynth.train.export import FORMATS

        return card_file(cfg.out or io.join(cfg.ckpt, f"model{FORMATS[cfg.format]}"))
    out = getattr(cfg, "out", None)
    return io.join(out, io.SUMMARY) if out else None


_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def expand_env(text: str, key: str) -> str:
    """``${VAR}``, ``$VAR`` and ``${VAR:-default}`` from the environment; an unset one without a
    default is an error naming ``key``."""
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in os.environ:
            return os.environ[name]
        if m.group(2) is not None:
            return m.group(2)
        raise ConfigError(f"{key}: ${name} is not set; set it or give a default: ${{{name}:-outputs}}")
    return _ENV.sub(sub, str(text))


def rebase_paths(value: Any, paths: dict[str, str]) -> Any:
    """``value`` (a config, a list, a mapping, a string) with each string that is a key of ``paths``
    or starts with ``KEY/`` moved onto its value; the longest key wins."""
    if isinstance(value, str):
        for prefix in sorted(paths, key=len, reverse=True):
            head = prefix.rstrip("/")
            if value == head or value.startswith(head + "/"):
                return paths[prefix].rstrip("/") + value[len(head):]
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: rebase_paths(getattr(value, f.name), paths)
                                            for f in dataclasses.fields(value) if f.init})
    if isinstance(value, (list, tuple)):
        return type(value)(rebase_paths(v, paths) for v in value)
    if isinstance(value, dict):
        return {k: rebase_paths(v, paths) for k, v in value.items()}
    return value


def _exists(path: str) -> bool:
    from segsynth import io

    return io.exists(path)


def _folder(s: Step) -> str:
    """Where a step's output is: its ``out`` folder (export: the exported file)."""
    return str(getattr(s.cfg, "out", None) or s.marker)


def _log_folder(s: Step) -> str | None:
    """Where the step's log goes (``FOLDER/logs/<stage>.log``): its ``out`` folder; export's ``out``
    is a file, so the folder beside it."""
    if s.stage == "export":
        return s.marker.rpartition("/")[0] or None
    return getattr(s.cfg, "out", None)


def _invalidate(s: Step) -> None:
    """Delete the step's completion marker, if any."""
    from segsynth import io

    if s.marker:
        io.delete(s.marker)


def _previous(s: Step) -> dict:
    """The summary a skipped step wrote when it ran (export: its file)."""
    from segsynth import io

    if s.stage == "export":
        return {"out": _folder(s), "card": s.marker}
    try:
        return json.loads(io.read_bytes(s.marker))
    except (OSError, ValueError) as e:
        log.warning("%s: cannot read %s (%s)", s.step, s.marker, e)
        return {"out": _folder(s)}


def _headline(step: str, result: dict | None) -> dict:
    """The few numbers and paths worth printing at the end of the demo."""
    if not isinstance(result, dict):
        return {}
    keep = ("out", "manifest", "written", "samples_written", "contact_sheet", "best", "curve", "report", "cutouts", "url",
            "best_score", "best_step", "select_on", "models", "library")
    return {k: v for k, v in result.items() if k in keep}
