"""The cutouts stage's config: sources, the white-background extractor, an optional teacher."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from segsynth.config import ConfigError
from segsynth.cutouts.extract import WhiteBackgroundOptions


@dataclass(frozen=True)
class SourceConfig:
    """One source of cutouts."""

    kind: Literal["catalog", "pairs", "rgba"] = "catalog"  # photos on white | labelled folder | RGBA PNGs
    path: str = ""  # folder (local or URI); catalog/rgba images in PATH/images if present, else PATH
    name: Optional[str] = None  # cutout_id prefix (default: kind); give two sources of a kind different names
    categories_csv: Optional[str] = None  # CSV mapping file name/stem -> category; None: folder names
    category_column: Optional[str] = None  # its category column (default: "type" for catalog/rgba, "category" for pairs)
    category: Optional[str] = None  # one category for every item of this source (overrides the rest)
    limit: Optional[int] = None  # keep a seeded random subset of this many items

    def check_inputs(self) -> None:
        if not self.path:
            raise ConfigError(f"sources: a {self.kind!r} source needs a path (a folder of images)")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"sources: limit must be >= 1 or null, got {self.limit}")


@dataclass(frozen=True)
class TeacherConfig:
    """An optional teacher model for catalog photos (any kind segsynth.predict.load_predictor knows)."""

    path: Optional[str] = None  # e.g. ../shared/models/isnet-general-fp16.onnx; None: no teacher
    kind: Optional[str] = None  # predictor kind, e.g. onnx-isnet; None: inferred from the path
    use_for: Literal["rejected", "all", "both"] = "rejected"  # rejected: photos the white extractor rejects;
    #   all: instead of the white extractor; both: a white and a teacher cutout (<id>@teacher)
    threads: Optional[int] = None  # CPU threads per teacher actor (also its Ray num_cpus); None: 1 CPU, runtime default
    num_gpus: float = 0.0  # GPUs per worker actor when a teacher is used


@dataclass(frozen=True)
class CutoutsConfig:
    out: str = "outputs/cutouts"
    sources: tuple[SourceConfig, ...] = ()
    white: WhiteBackgroundOptions = field(default_factory=WhiteBackgroundOptions)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    min_quality: float = 0.3  # cutouts scoring below are rejected (see segsynth.cutouts.mask_quality)
    workers: int = 2  # extraction actors
    batch_size: int = 8  # items per actor call
    # items per part file (OUT/parts): a failed or cancelled run, run again, redoes only the parts
    # not written; the driver holds one part's PNGs before writing it (64 x ~100 KB for the kit's photos)
    part_size: int = 64
    seed: int = 0  # for the `limit` subsets
    write_png: bool = False  # also OUT/png/<cutout_id>.png previews
    png_compression: int = 3  # 0-9; cutout PNGs are written once and read many times

    def check_inputs(self) -> None:
        if not self.sources:
            raise ConfigError("cutouts: no sources; add e.g. sources: [{kind: catalog, path: demo_kit/catalog, "
                              "categories_csv: demo_kit/catalog/products.csv}]")
        if self.workers < 1 or self.batch_size < 1 or self.part_size < 1:
            raise ConfigError(f"cutouts: workers, batch_size and part_size must be >= 1, got {self.workers}, "
                              f"{self.batch_size}, {self.part_size}")
        if not 0.0 <= self.min_quality <= 1.0:
            raise ConfigError(f"cutouts: min_quality must be in 0..1, got {self.min_quality}")
        if self.teacher.path is None and self.teacher.use_for == "all":
            raise ConfigError("cutouts: teacher.use_for=all needs teacher.path (an ONNX model or checkpoint)")
