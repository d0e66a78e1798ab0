"""The cutout library on disk: listing the sources, the extraction worker, the manifest writer.

Pure Python/numpy/pyarrow; the Ray job (:mod:`segsynth.cutouts.job`) maps :class:`CutoutWorker`
over the items and streams the rows into :class:`ManifestWriter`.
"""
from __future__ import annotations

import csv
import dataclasses
import io as _io
import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from segsynth import io
from segsynth.config import ConfigError
from segsynth.cutouts.config import CutoutsConfig
from segsynth.cutouts.extract import CutoutExtractor, CutoutResult, WhiteBackgroundOptions, source_items

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
                rows.append(row)
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)


class ManifestWriter:
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
