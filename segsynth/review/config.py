"""The review task's config (``segsynth review create --config FILE key=value ...``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from segsynth.config import ConfigError

KINDS = ("pick", "accept", "compare")
RESERVED_CHOICES = ("none", "tie", "skip")  # answers that are not a candidate
QUESTIONS = {
    "pick": "Which mask fits the best?",
    "accept": "Does this mask fit the product?",
    "compare": "Which cutout is better?",
}


@dataclass(frozen=True)
class CandidateSource:
    """One model's masks for the task's images.

    ``path`` is a folder of masks named by the images' stems (``<stem>.png``; an RGBA file gives
    its alpha), e.g. an evaluation's ``predictions/<model>/``, or a parquet file with a stem
    column and a column of PNG bytes (a mask, or an RGBA image whose alpha is the mask), e.g. a
    pseudo-label queue. Masks must cover the whole photo (its size, or the same aspect ratio:
    they are resized); tight-cropped cutouts such as a cutouts manifest's do not."""

    name: str  # shown nowhere to annotators; kept with every answer (provenance) and in the export
    path: str
    version: Optional[str] = None  # e.g. the checkpoint's step or a date; kept with every answer
    stem_column: str = "stem"  # parquet only
    mask_column: str = "mask"  # parquet only: PNG bytes of a mask or an RGBA cutout


@dataclass(frozen=True)
class ReviewConfig:
    kind: Literal["pick", "accept", "compare"] = "pick"
    images: str = ""  # a folder of photos (or a labelled folder: its images/)
    candidates: tuple[CandidateSource, ...] = ()
    out: str = "outputs/review/task"  # the task folder: task.sqlite, media/, config.yaml
    annotators_per_item: int = 1  # K different people answer each item (e.g. 1 for pseudo-labels, 3 for a study)
    lease_minutes: float = 10.0  # an item handed out and not answered in this time goes back to the queue
    question: Optional[str] = None  # shown above the item; default by kind
    display_size: int = 640  # longer side of the precomputed photos and cutouts, pixels
    thumb_size: int = 160  # longer side of the thumbnails in the side list
    token: Optional[str] = None  # a shared token the app asks for (for a deployed app); None: names only
    categories_csv: Optional[str] = None  # stem,category (default: images' folder's categories.csv when present)
    stems: Optional[str] = None  # numbered items in ranges, e.g. "1-50"; None: all
    limit: Optional[int] = None  # the first N items by stem
    seed: int = 0  # the per-annotator order of a compare task's candidates

    def check_inputs(self) -> None:
        if not self.images:
            raise ConfigError("images: give the folder of photos to review, e.g. images=demo_kit/eval/images")
        n = len(self.candidates)
        need = {"pick": (1, 9), "accept": (1, 1), "compare": (2, 9)}[self.kind]
        if not need[0] <= n <= need[1]:
            raise ConfigError(f"candidates: a {self.kind} task needs {need[0]}" + (f"..{need[1]}" if need[1] != need[0] else "")
                              + f" candidate sources (keys 1..9 choose), got {n}; e.g. candidates=[{{name: ours, path: DIR}}]")
        names = [c.name for c in self.candidates]
        for name in names:
            if not name or name in RESERVED_CHOICES or "/" in name:
                raise ConfigError(f"candidates: name {name!r} is empty, reserved ({', '.join(RESERVED_CHOICES)}) or has '/'")
        if len(set(names)) != len(names):
            raise ConfigError(f"candidates: names must be unique, got {names}")
        if self.annotators_per_item < 1:
            raise ConfigError(f"annotators_per_item must be >= 1, got {self.annotators_per_item}")
        if self.lease_minutes <= 0:
            raise ConfigError(f"lease_minutes must be > 0, got {self.lease_minutes}")
        if self.display_size < 64 or self.thumb_size < 16:
            raise ConfigError("display_size must be >= 64 and thumb_size >= 16 pixels")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 or null, got {self.limit}")

    @property
    def resolved_question(self) -> str:
        return self.question or QUESTIONS[self.kind]
