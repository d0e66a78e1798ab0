"""Scoring without Ray: the per-photo work of ``segsynth active score`` as two ``map_batches``
callable classes (each loads its model once in ``__init__``), and the scores table.

:class:`ModelPass` runs the current model on a photo three times (as is, flipped, rescaled by
``tta_scale``) and measures the signals that need no other model; :class:`TeacherPass` runs one
teacher (or reads its cached mask: teachers do not change between rounds) and measures the
disagreement. A photo that cannot be read gets an ``error`` and no scores; it never stops the job.

Teachers' masks are cached by the photo's content hash (:func:`content_hash`) in a folder per
teacher and model file (:func:`teacher_cache_dir`): a photo is pseudo-labelled once, whatever its
name, round, run or config.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segsynth import io
from segsynth.active import signals as S
from segsynth.white import WhiteBackgroundOptions, border_white_fraction

log = logging.getLogger(__name__)

ITEM_COLUMNS = ("key", "stem", "source", "category", "image", "bg_id", "white_policy", "category_from")
MODEL_COLUMNS = ("error", "white_bg", "border_white", "skipped", "height", "width", "entropy", "instability",
                 "model_ms", "phash", "content_hash", "model_png")


def content_hash(data: bytes) -> str:
    """The cache key of a photo: the start of the sha256 of its file's bytes."""
    return hashlib.sha256(data).hexdigest()[:24]


@lru_cache(maxsize=16)
def _model_digest(path: str) -> str:
    """The first 8 hex digits of the sha256 of a model file, or of a checkpoint folder's files."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:8]


def teacher_cache_dir(root: str, spec: dict) -> str:
    """``root/<name>-<model digest>``: a teacher's cached masks, apart from any other model that
    shares its name (a local model file is hashed; a remote one is named by its path)."""
    path = spec.get("path")
    if path and not io.is_uri(path) and Path(path).exists():
        digest = _model_digest(str(Path(path).resolve()))
    else:
        digest = hashlib.sha256(str(path or spec["kind"]).encode()).hexdigest()[:8]
    return io.join(root, f"{spec['name']}-{digest}")


def teacher_columns(name: str) -> tuple[str, str]:
    """(disagreement column, mask column) of teacher ``name`` in the scored rows."""
    return f"disagreement_{name}", f"mask_{name}"


def _mask_png(prob: np.ndarray) -> bytes:
    return io.encode_png(np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _prob(png: bytes, name: str) -> np.ndarray:
    return io.decode_mask(png, name).astype(np.float32) / 255.0


def _rows_to_columns(rows: list[dict], keys: list[str]) -> dict[str, list]:
    return {k: [r.get(k) for r in rows] for k in keys}


class ModelPass:
    """The current model on each photo: soft mask (8-bit PNG), boundary entropy, test-time
    instability, the white-background flag and a perceptual hash."""

    def __init__(self, spec: dict, boundary_band: float = 0.01, tta_scale: float = 0.75,
                 white: dict | None = None, categorize: dict | None = None):
        from segsynth.predict import load_predictor

        self.predictor = load_predictor(spec.get("path"), kind=spec["kind"], **(spec.get("options") or {}))
        self.band, self.tta_scale = boundary_band, tta_scale
        self.white = WhiteBackgroundOptions(**(white or {}))
        self._categorize, self._categorizer = categorize or {}, None

    def categorizer(self):
        if self._categorizer is None:  # loaded on first need: a pool with tables loads nothing
            from segsynth.active.categorize import ImageNetCategorizer

            self._categorizer = ImageNetCategorizer(**self._categorize)
        return self._categorizer

    def score_one(self, rgb: np.ndarray) -> dict[str, Any]:
        """``rgb (H, W, 3) uint8`` -> the model's signals (see :data:`MODEL_COLUMNS`)."""
        h, w = rgb.shape[:2]
        sw, shh = max(16, round(w * self.tta_scale)), max(16, round(h * self.tta_scale))
        scaled = cv2.resize(rgb, (sw, shh), interpolation=cv2.INTER_AREA if self.tta_scale < 1 else cv2.INTER_LINEAR)
        t0 = time.perf_counter()
        prob, flipped, small = self.predictor.predict([rgb, np.ascontiguousarray(rgb[:, ::-1]), scaled])
        ms = (time.perf_counter() - t0) * 1000.0 / 3.0
        passes = [np.ascontiguousarray(flipped[:, ::-1]), cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)]
        return {"entropy": S.boundary_entropy(prob, self.band), "instability": S.instability(prob, passes),
                "model_ms": ms, "model_png": _mask_png(prob)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = []
        for i in range(len(batch["key"])):
            row: dict[str, Any] = {k: batch[k][i] for k in ITEM_COLUMNS}
            row.update(error="", white_bg=False, border_white=float("nan"), skipped="", height=0, width=0,
                       entropy=float("nan"), instability=float("nan"), model_ms=float("nan"), phash="",
                       content_hash="", model_png=b"")
            try:
                data = io.read_bytes(str(row["image"]))
                row["content_hash"] = content_hash(data)
                rgb = io.decode_image(data, str(row["image"]))
            except (io.ImageDecodeError, OSError) as e:  # one bad photo never kills the job
                log.warning("active score: %s skipped: %s", row["key"], e)
                row["error"] = str(e)
                rows.append(row)
                continue
            bw = border_white_fraction(rgb, self.white)
            row.update(height=int(rgb.shape[0]), width=int(rgb.shape[1]), border_white=bw,
                       white_bg=bool(bw >= self.white.min_border_white), phash=S.perceptual_hash(rgb))
            if row["category_from"] == "imagenet":
                row["category"] = self.categorizer()(rgb)
            if row["white_bg"] and row["white_policy"] == "skip":
                row["skipped"] = "white background"
            else:
                row.update(self.score_one(rgb))
            rows.append(row)
        return _rows_to_columns(rows, [*ITEM_COLUMNS, *MODEL_COLUMNS])


class TeacherPass:
    """One teacher on each scored photo: its mask (from ``cache/<content hash>.png`` when there,
    else predicted) and the disagreement with the model's mask. Skips photos without a model mask and, unless
    ``on_white``, photos on white (its signal is then absent, not zero)."""

    def __init__(self, spec: dict, cache: str, on_white: bool = False):
        self.spec, self.cache, self.on_white = spec, cache, on_white
        self.name = spec["name"]
        self._predictor = None

    @property
    def predictor(self):
        if self._predictor is None:  # loaded on first need: a round whose masks are all cached loads nothing
            from segsynth.predict import load_predictor

            self._predictor = load_predictor(self.spec.get("path"), kind=self.spec["kind"],
                                             **(self.spec.get("options") or {}))
        return self._predictor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        dis_col, mask_col = teacher_columns(self.name)
        out = {k: list(v) for k, v in batch.items()}
        out[dis_col], out[mask_col] = [], []
        for i in range(len(batch["key"])):
            png, value = b"", float("nan")
            runs = bool(len(batch["model_png"][i])) and (self.on_white or not bool(batch["white_bg"][i]))
            if runs:
                stem = str(batch["stem"][i])
                cached = io.join(self.cache, f"{batch['content_hash'][i]}.png")
                try:
                    if io.exists(cached):
                        png = io.read_bytes(cached)
                        teacher = _prob(png, f"{self.name}:{stem}")
                    else:
                        rgb = io.read_image(str(batch["image"][i]))
                        teacher = self.predictor.predict_one(rgb)
                        png = _mask_png(teacher)
                    model = _prob(bytes(batch["model_png"][i]), f"model:{stem}")
                    if teacher.shape != model.shape:
                        teacher = cv2.resize(teacher, model.shape[::-1], interpolation=cv2.INTER_LINEAR)
                    value = S.disagreement(model, teacher)
                except (io.ImageDecodeError, OSError, ValueError) as e:
                    log.warning("active score: teacher %s on %s failed: %s", self.name, stem, e)
                    png = b""
            out[dis_col].append(value)
            out[mask_col].append(png)
        return out


def finish_rows(rows: list[dict], teachers: list[str], weights: dict[str, float]) -> list[dict]:
    """Per photo: ``disagreement`` (the mean over the teachers that ran) and ``score`` (the
    combined score, NaN for a skipped or unreadable photo)."""
    for r in rows:
        vals = [r.get(teacher_columns(t)[0]) for t in teachers]
        vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        r["disagreement"] = float(np.mean(vals)) if vals else float("nan")
        if r.get("error") or r.get("skipped"):
            r["score"] = float("nan")
        else:
            r["score"] = S.combined_score({k: r.get(k) for k in S.SIGNALS}, weights)
    return rows


SCORE_COLUMNS = ("key", "stem", "source", "category", "image", "bg_id", "white_bg", "border_white", "skipped", "error",
                 "height", "width", "entropy", "instability", "disagreement", "score", "model_ms", "phash",
                 "content_hash")


def scores_table(rows: list[dict], teachers: list[str]):
    """The ``scores.parquet`` table: :data:`SCORE_COLUMNS` plus ``disagreement_<teacher>``."""
    import pyarrow as pa

    cols = [*SCORE_COLUMNS, *(teacher_columns(t)[0] for t in teachers)]
    floats = {"border_white", "entropy", "instability", "disagreement", "score", "model_ms",
              *(teacher_columns(t)[0] for t in teachers)}
    data = {}
    for c in cols:
        vals = [r.get(c) for r in rows]
        if c in floats:
            data[c] = pa.array([float("nan") if v is None else float(v) for v in vals], pa.float64())
        elif c in ("height", "width"):
            data[c] = pa.array([int(v or 0) for v in vals], pa.int32())
        elif c == "white_bg":
            data[c] = pa.array([bool(v) for v in vals], pa.bool_())
        else:
            data[c] = pa.array(["" if v is None else str(v) for v in vals], pa.string())
    return pa.table(data)
