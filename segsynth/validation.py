"""Real labelled photos that validate training and select its best checkpoint: the sources, the
selection metrics, and how a source's items are found. Shared by the training stage's config
(``segsynth.pipeline.train``) and its worker loop (``segsynth.train``); neither imports the other
for it. Pure Python and io: no torch, no Ray."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from segsynth import io
from segsynth.config import ConfigError

SELECT_METRICS = {"ssim_box": "max", "iou": "max", "mae": "min", "loss": "min"}  # metric -> better direction


@dataclass(frozen=True)
class ValSource:
    """A real labelled folder (``images/`` + ``masks/``) evaluated during training. ``stems``
    keeps numbered items in ranges (``"1-50"``); ``name`` labels its metrics (default: the
    folder's name, plus the ranges)."""

    path: str
    stems: Optional[str] = None
    name: Optional[str] = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = self.path.rstrip("/").split("/")[-1]
        return f"{base}_{self.stems.replace(',', '_')}" if self.stems else base


def real_val_items(source: ValSource) -> list[dict]:
    """The ``{stem, image, mask}`` paths of a ``val_data`` folder (a ConfigError names the fix)."""
    if not io.exists(io.join(source.path, "images")) or not io.exists(io.join(source.path, "masks")):
        raise ConfigError(f"val_data: {source.path} is not a labelled folder; it needs images/ and masks/")
    try:
        items = io.labelled_folder(source.path, source.stems)
    except ValueError as e:
        raise ConfigError(f"val_data {source.path}: {e}") from None
    if not items:
        raise ConfigError(f"val_data: {source.path} holds no image with a mask")
    return items
