"""The evaluation stage's config: a labelled folder, the models to compare, the report's options."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segsynth import metrics as M
from segsynth.config import ConfigError
from segsynth.split import HalfSplit


MODEL_KINDS = ("checkpoint", "onnx", "onnx-isnet", "onnx-u2net", "white-threshold")


@dataclass(frozen=True)
class EvalModel:
    """One model to evaluate: a display ``name``, a predictor ``kind`` and its ``path``.

    ``options`` go to ``segsynth.predict.load_predictor`` (e.g. ``{threads: 2}`` for ONNX, the
    white-background options for ``white-threshold``).
    """

    name: str
    kind: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def check_inputs(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"models: {self.name!r} has kind {self.kind!r}; valid kinds: {', '.join(MODEL_KINDS)}")
        if self.kind != "white-threshold" and not self.path:
            raise ConfigError(f"models: {self.name!r} (kind {self.kind}) needs a path: a checkpoint folder or .onnx file")
        if not self.name or "/" in self.name:
            raise ConfigError(f"models: name {self.name!r} must be non-empty and contain no '/' (it names a folder)")


@dataclass(frozen=True)
class EvalConfig:
    data: str = "demo_kit/eval"  # a labelled folder: images/, masks/, optional categories.csv
    models: list[EvalModel] = field(default_factory=lambda: [EvalModel(name="white-threshold", kind="white-threshold")])
    out: str = "outputs/eval"
    threshold: float = 0.5  # binarises predictions for IoU, accuracy and boundary IoU
    ssim_margin: int = 0  # pixels added around the truth's box before SSIM (0: the method's crop)
    workers: int = 1  # actors per model
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # e.g. 1 for checkpoints on a GPU cluster
    batch_size: int = 4  # items per actor call
    gallery_size: int = 8  # worst cases shown per model
    gallery_metric: str = "ssim_box"  # the metric that ranks the worst cases
    preferences: str | None = None  # human choices: a CSV (item, annotator, choice) or a review task folder
    limit: int | None = None  # evaluate only the first N items (by stem)
    stems: str | None = None  # numbered items in ranges, e.g. "51-100" (ECSSD 0051..0100), or a CSV of stems; None: all
    split: HalfSplit | None = None  # {half: report}: one fixed half of the folder (segsynth.split.dev_half)
    interval: str = "bootstrap"  # 95% interval of the means: bootstrap or t

    def check_inputs(self) -> None:
        if not self.models:
            raise ConfigError("models: give at least one model, e.g. [{name: white, kind: white-threshold}]")
        for spec in self.models:
            spec.check_inputs()
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"models: names must be unique; {dupes[0]!r} appears twice")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must lie strictly between 0 and 1, got {self.threshold}")
        if self.ssim_margin < 0:
            raise ConfigError(f"ssim_margin must be >= 0 pixels, got {self.ssim_margin}")
        if self.workers < 1 or self.batch_size < 1:
            raise ConfigError("workers and batch_size must be >= 1")
        if self.gallery_metric not in M.METRICS:
            raise ConfigError(f"gallery_metric {self.gallery_metric!r} is not a metric; valid: {', '.join(M.METRICS)}")
        if self.interval not in ("bootstrap", "t"):
            raise ConfigError(f"interval must be 'bootstrap' or 't', got {self.interval!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or null for all items), got {self.limit}")
