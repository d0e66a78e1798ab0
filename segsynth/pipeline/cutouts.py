"""``segsynth cutouts``: catalog photos, image+mask pairs and RGBA files -> a cutout library.

Sources are listed on the driver (cheap: paths and categories), then Ray Data maps a pool of
``workers`` :class:`CutoutWorker` actors over them; each actor holds one
:class:`segsynth.cutouts.CutoutExtractor` (and the teacher model, loaded once in ``__init__``).
The driver streams the results, in input order, into

- ``OUT/manifest.parquet``: ``cutout_id, category, source, source_kind, width, height, quality,
  rgba`` (RGBA PNG bytes of the tight-cropped cutout), plus ``border_white``;
- ``OUT/rejects.csv``: every item not written, with its status and the reason;
- ``OUT/summary.json``: counts (total, written, rejected_not_white, rejected_quality, corrupt,
  corrupt_files, per category, per source kind);
- ``OUT/config.yaml``: the resolved config; optional ``OUT/png/<cutout_id>.png`` previews.

A corrupt image is skipped, counted and named in the log and the summary; the job goes on.
"""
from __future__ import annotations

import csv
import dataclasses
import io as _io
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from segsynth import io
from segsynth.config import ConfigError, save_config
from segsynth.cutouts import CutoutExtractor, CutoutResult, WhiteBackgroundOptions, source_items

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
SUMMARY = "summary.json"
REJECTS = "rejects.csv"

# the manifest contract (see DESIGN.md); border_white is extra, NaN for non-catalog cutouts
MANIFEST_SCHEMA = pa.schema([
    ("cutout_id", pa.string()), ("category", pa.string()), ("source", pa.string()),
    ("source_kind", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("quality", pa.float32()), ("rgba", pa.binary()), ("border_white", pa.float32()),
])
RESULT_COLUMNS = [f.name for f in dataclasses.fields(CutoutResult)]


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
    """An optional teacher model for catalog photos (any kind segsynth.infer.load_predictor knows)."""

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
    seed: int = 0  # for the `limit` subsets
    write_png: bool = False  # also OUT/png/<cutout_id>.png previews
    png_compression: int = 3  # 0-9; cutout PNGs are written once and read many times

    def check_inputs(self) -> None:
        if not self.sources:
            raise ConfigError("cutouts: no sources; add e.g. sources: [{kind: catalog, path: demo_kit/catalog, "
                              "categories_csv: demo_kit/catalog/products.csv}]")
        if self.workers < 1 or self.batch_size < 1:
            raise ConfigError(f"cutouts: workers and batch_size must be >= 1, got {self.workers}, {self.batch_size}")
        if not 0.0 <= self.min_quality <= 1.0:
            raise ConfigError(f"cutouts: min_quality must be in 0..1, got {self.min_quality}")
        if self.teacher.path is None and self.teacher.use_for == "all":
            raise ConfigError("cutouts: teacher.use_for=all needs teacher.path (an ONNX model or checkpoint)")


def list_items(cfg: CutoutsConfig) -> list[dict]:
    """Every source's items, in config order; cutout ids must be unique."""
    items: list[dict] = []
    for src in cfg.sources:
        column = src.category_column or ("category" if src.kind == "pairs" else "type")
        got = source_items(src.kind, src.path, name=src.name, categories_csv=src.categories_csv,
                           category_column=column, category=src.category, limit=src.limit, seed=cfg.seed)
        log.info("source %s %s: %d items", src.kind, src.path, len(got))
        items.extend(got)
    dup = [k for k, n in Counter(it["cutout_id"] for it in items).items() if n > 1]
    if dup:
        raise ConfigError(f"cutouts: duplicate cutout id {dup[0]!r} ({len(dup)} in all); give sources of the "
                          "same kind different `name`s")
    return items


class CutoutWorker:
    """Ray Data callable class: a batch of items -> a batch of :class:`CutoutResult` rows."""

    def __init__(self, white: dict, min_quality: float, teacher_path: str | None, teacher_kind: str | None,
                 teacher_use_for: str, teacher_threads: int | None, png_compression: int):
        teacher = None
        if teacher_path:
            from segsynth.infer import load_predictor

            options = {"threads": teacher_threads} if teacher_threads else {}
            teacher = load_predictor(teacher_path, teacher_kind, **options)  # once per actor
        self.extractor = CutoutExtractor(WhiteBackgroundOptions(**white), min_quality, teacher,
                                         teacher_use_for, png_compression)

    def __call__(self, batch):
        import pandas as pd

        rows = []
        for item in batch.to_dict("records"):
            for res in self.extractor(item):
                row = res.row()
                row["rgba"] = row["rgba"] or b""  # one binary type in every block
                rows.append(row)
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)


class _ManifestWriter:
    """Streams manifest rows into one parquet file (atomic rename on local disk)."""

    def __init__(self, path: str, flush_rows: int = 64):
        self.path, self.flush_rows, self.rows = path, flush_rows, []
        fs, p = io.resolve(path)
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        self._local_tmp = p + ".tmp" if path and not io.is_uri(path) else None
        self._sink = open(self._local_tmp, "wb") if self._local_tmp else fs.open_output_stream(p)
        self._final = p
        self._writer = pq.ParquetWriter(self._sink, MANIFEST_SCHEMA)

    def add(self, row: dict) -> None:
        self.rows.append({k: row[k] for k in MANIFEST_SCHEMA.names})
        if len(self.rows) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self._writer.write_table(pa.Table.from_pylist(self.rows, schema=MANIFEST_SCHEMA))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self._writer.close()
        self._sink.close()
        if self._local_tmp:
            Path(self._local_tmp).replace(self._final)
        self._closed = True

    def abort(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._writer.close()
        self._sink.close()
        if self._local_tmp:
            Path(self._local_tmp).unlink(missing_ok=True)
        self._closed = True


def run(cfg: CutoutsConfig, address: str | None = None) -> dict:
    """Build the cutout library in ``cfg.out``; returns the summary (also OUT/summary.json)."""
    from segsynth.pipeline.ray_env import init_ray

    t0 = time.time()
    items = list_items(cfg)
    if not items:
        raise ConfigError("cutouts: the sources hold no images; check their paths")
    save_config(cfg, cfg.out)
    ray = init_ray(address)

    teacher = cfg.teacher
    statuses: Counter = Counter()
    per_category: Counter = Counter()
    per_kind: Counter = Counter()
    corrupt: list[str] = []
    rejects: list[dict] = []
    # a manifest in input order, whatever the worker timing; a dataset copies the context when made
    ctx = ray.data.DataContext.get_current()
    old_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    writer = _ManifestWriter(io.join(cfg.out, MANIFEST))
    try:
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // cfg.batch_size, 200)))
        ds = ds.map_batches(
            CutoutWorker,
            fn_constructor_kwargs=dict(white=dataclasses.asdict(cfg.white), min_quality=cfg.min_quality,
                                       teacher_path=teacher.path, teacher_kind=teacher.kind,
                                       teacher_use_for=teacher.use_for, teacher_threads=teacher.threads,
                                       png_compression=cfg.png_compression),
            batch_size=cfg.batch_size, batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=cfg.workers),
            num_cpus=float(teacher.threads or 1) if teacher.path else 1.0,
            num_gpus=teacher.num_gpus if teacher.path else 0.0,
        )
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            for row in batch.to_dict("records"):
                statuses[row["status"]] += 1
                if row["status"] == "written":
                    writer.add(row)
                    per_category[row["category"]] += 1
                    per_kind[row["source_kind"]] += 1
                    if cfg.write_png:
                        io.write_bytes(io.join(cfg.out, "png", row["cutout_id"] + ".png"), row["rgba"])
                    continue
                if row["status"] == "corrupt":
                    corrupt.append(row["source"])
                rejects.append({k: row[k] for k in ("cutout_id", "source", "source_kind", "status", "quality",
                                                    "border_white", "reason")})
        writer.close()
    finally:
        ctx.execution_options.preserve_order = old_order
        writer.abort()  # no-op after close(): a failed run leaves no half manifest

    _write_rejects(cfg.out, rejects)
    summary = {
        "out": cfg.out,
        "manifest": io.join(cfg.out, MANIFEST),
        "total": len(items),
        "written": statuses["written"],
        "rejected_not_white": statuses["not_white"],
        "rejected_quality": statuses["low_quality"] + statuses["empty"],
        "corrupt": len(corrupt),
        "corrupt_files": corrupt,
        "per_category": dict(sorted(per_category.items())),
        "per_source_kind": dict(sorted(per_kind.items())),
        "seconds": round(time.time() - t0, 1),
    }
    io.write_bytes(io.join(cfg.out, SUMMARY), json.dumps(summary, indent=2).encode())
    if corrupt:
        log.warning("%d corrupt inputs skipped: %s", len(corrupt), ", ".join(corrupt[:10]))
    log.info("cutouts: %d written of %d (%d background not white, %d low quality, %d corrupt) -> %s",
             summary["written"], summary["total"], summary["rejected_not_white"], summary["rejected_quality"],
             summary["corrupt"], summary["manifest"])
    return summary


def _write_rejects(out: str, rejects: list[dict]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["cutout_id", "source", "source_kind", "status", "quality", "border_white",
                                        "reason"])
    w.writeheader()
    def num(x) -> str:  # NaN comes back from Arrow as None
        return "" if x is None or x != x else f"{x:.3f}"

    for r in rejects:
        w.writerow({**r, "quality": num(r["quality"]), "border_white": num(r["border_white"])})
    io.write_bytes(io.join(out, REJECTS), buf.getvalue().encode())
