"""The cutout library on disk: listing the sources, the extraction worker, the part files and
the manifest they are combined into.

Pure Python/numpy/pyarrow; the Ray job (:mod:`segsynth.cutouts.job`) maps :class:`CutoutWorker`
over the items of the parts not written yet, :class:`PartCollector` writes each part
(``OUT/parts/part-XXXXX.parquet``, :mod:`segsynth.parts`) as its results come in, and
:func:`combine_parts` streams the parts into ``OUT/manifest.parquet``.
"""
from __future__ import annotations

import csv
import dataclasses
import io as _io
import logging
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from segsynth import io
from segsynth.config import ConfigError
from segsynth.cutouts.config import CutoutsConfig
from segsynth.cutouts.extract import CutoutExtractor, CutoutResult, WhiteBackgroundOptions, source_items
from segsynth.parts import ParquetStreamWriter, read_part, write_part

log = logging.getLogger(__name__)


MANIFEST = "manifest.parquet"


REJECTS = "rejects.csv"


# the manifest contract (see DESIGN.md); border_white is extra, NaN for non-catalog cutouts
MANIFEST_SCHEMA = pa.schema([
    ("cutout_id", pa.string()), ("category", pa.string()), ("source", pa.string()),
    ("source_kind", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("quality", pa.float32()), ("rgba", pa.binary()), ("border_white", pa.float32()),
])


# rows per manifest row group: a reader that wants a few cutouts reads their groups (64 PNGs,
# ~6 MB for the kit's photos), not the whole catalog
MANIFEST_ROW_GROUP = 64


RESULT_COLUMNS = [f.name for f in dataclasses.fields(CutoutResult)]


# a part file: every result of its items (written and rejected, rgba empty when not written), in
# input order
PART_SCHEMA = pa.schema([
    ("cutout_id", pa.string()), ("category", pa.string()), ("source", pa.string()),
    ("source_kind", pa.string()), ("status", pa.string()), ("quality", pa.float64()), ("width", pa.int32()),
    ("height", pa.int32()), ("border_white", pa.float64()), ("rgba", pa.binary()), ("reason", pa.string()),
])


# keys that only size the work or add files beside the manifest: a resumed run may change them
RESUME_FREE_KEYS = ("out", "workers", "batch_size", "write_png")
TEACHER_RESOURCE_KEYS = ("threads", "num_gpus")


def output_settings(resolved: dict) -> dict:
    """The settings of a resolved config (plain data) that change the cutouts or the part plan;
    for :func:`segsynth.config.check_resume_config`."""
    settings = {k: v for k, v in resolved.items() if k not in RESUME_FREE_KEYS}
    settings["teacher"] = {k: v for k, v in (settings.get("teacher") or {}).items() if k not in TEACHER_RESOURCE_KEYS}
    return settings


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
    """Ray Data callable class: a batch of items -> a batch of :class:`CutoutResult` rows, each
    with its item's ``part``."""

    def __init__(self, white: dict, min_quality: float, teacher_path: str | None, teacher_kind: str | None,
                 teacher_use_for: str, teacher_threads: int | None, png_compression: int):
        teacher = None
        if teacher_path:
            from segsynth.predict import load_predictor

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
                row["part"] = int(item["part"])
                rows.append(row)
        return pd.DataFrame(rows, columns=RESULT_COLUMNS + ["part"])


class PartCollector:
    """Result rows arriving in input order -> one part file per part, written when the next
    part's first row arrives (or at :meth:`finish`), so the driver holds one part.

    ``parts``: ``{part index: the cutout_ids of its items}``, for the parts being made.
    """

    def __init__(self, out: str, parts: dict[int, list[str]]):
        self.out, self.parts = out, parts
        self.written: list[int] = []
        self._part: int | None = None
        self._rows: list[dict] = []

    def add(self, row: dict) -> None:
        part = int(row["part"])
        if part != self._part:
            if part not in self.parts or part in self.written or (self._part is not None and part < self._part):
                raise RuntimeError(f"cutouts: a result of part {part} came out of input order (making part "
                                   f"{self._part}, written {self.written}); the parts need Ray Data's preserve_order")
            self._write()
            self._part = part
        self._rows.append(row)

    def finish(self) -> list[int]:
        """Write the last part; returns the parts written, in order."""
        self._write()
        missing = sorted(set(self.parts) - set(self.written))
        if missing:
            raise RuntimeError(f"cutouts: no results came back for parts {missing}")
        return self.written

    def _write(self) -> None:
        if self._part is None:
            return
        table = pa.Table.from_pylist([{k: r[k] for k in PART_SCHEMA.names} for r in self._rows], schema=PART_SCHEMA)
        write_part(table, self.out, self._part, keys=self.parts[self._part])
        self.written.append(self._part)
        self._part, self._rows = None, []


@dataclass
class CutoutCounts:
    """What the parts hold, in input order: counts for the summary, and the rejected rows."""

    statuses: Counter = field(default_factory=Counter)
    per_category: Counter = field(default_factory=Counter)
    per_kind: Counter = field(default_factory=Counter)
    corrupt: list[str] = field(default_factory=list)  # sources of corrupt inputs
    rejects: list[dict] = field(default_factory=list)  # the rows of rejects.csv


def combine_parts(out: str, n_parts: int, write_png: bool = False) -> CutoutCounts:
    """Parts ``0 .. n_parts - 1`` -> ``OUT/manifest.parquet``: the written rows in input order,
    in row groups of :data:`MANIFEST_ROW_GROUP`, one part in memory at a time (atomic on local
    disk). With ``write_png`` also ``OUT/png/<cutout_id>.png``. Returns what the parts hold."""
    counts = CutoutCounts()
    with ParquetStreamWriter(io.join(out, MANIFEST), MANIFEST_SCHEMA, MANIFEST_ROW_GROUP) as writer:
        for i in range(n_parts):
            table = read_part(out, i)
            written = table.filter(pc.equal(table["status"], "written"))
            writer.write(written)
            if write_png:
                for cid, png in zip(written["cutout_id"].to_pylist(), written["rgba"].to_pylist()):
                    io.write_bytes(io.join(out, "png", cid + ".png"), png)
            for row in table.drop_columns(["rgba"]).to_pylist():
                counts.statuses[row["status"]] += 1
                if row["status"] == "written":
                    counts.per_category[row["category"]] += 1
                    counts.per_kind[row["source_kind"]] += 1
                    continue
                if row["status"] == "corrupt":
                    counts.corrupt.append(row["source"])
                counts.rejects.append({k: row[k] for k in ("cutout_id", "source", "source_kind", "status", "quality",
                                                           "border_white", "reason")})
            del table, written
    return counts


def write_rejects(out: str, rejects: list[dict]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["cutout_id", "source", "source_kind", "status", "quality", "border_white",
                                        "reason"])
    w.writeheader()
    def num(x) -> str:  # NaN comes back from Arrow as None
        return "" if x is None or x != x else f"{x:.3f}"

    for r in rejects:
        w.writerow({**r, "quality": num(r["quality"]), "border_white": num(r["border_white"])})
    io.write_bytes(io.join(out, REJECTS), buf.getvalue().encode())
