"""Catalog photos -> RGBA cutouts: white-background extraction, quality scores, source readers.

The numpy core of the ``cutouts`` stage (``segsynth.cutouts.job`` is the Ray layer). It
imports neither Ray nor torch.

    cut = white_background_alpha(rgb)              # rgb (H, W, 3) uint8
    if cut.is_white_background and cut.quality >= 0.3:
        rgba = make_cutout(rgb, cut.alpha)         # (h, w, 4) uint8, tight-cropped

White-background extraction and the quality score are :mod:`segsynth.white`.

Sources produce *items*, plain dicts ``{cutout_id, category, source, source_kind, mask}``
(``mask`` is the mask path for image+mask pairs, else ``""``): cheap to list, shipped to the
workers, which read and decode them (:class:`CutoutExtractor`).
"""
from __future__ import annotations

import dataclasses
import logging
import posixpath
from dataclasses import dataclass
from typing import Literal, Sequence

import cv2
import numpy as np

from segsynth import io
from segsynth.white import (WhiteBackgroundOptions, mask_quality, white_background_alpha)

log = logging.getLogger(__name__)

SOURCE_KINDS = ("catalog", "pairs", "rgba")
TEACHER_FOR = ("rejected", "all", "both")
# what happened to an item; "written" rows go to the manifest, the rest are counted
STATUSES = ("written", "not_white", "low_quality", "empty", "corrupt")


# ---------------------------------------------------------------- cutouts
def bleed_colors(rgb: np.ndarray, solid: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Copy of ``rgb`` where pixels in ``where`` take the colour of the nearest ``solid`` pixel.

    Removes the background halo from soft edges (the edge pixels of a photo on white are
    partly white). ``rgb`` ``(H, W, 3) uint8``; ``solid``, ``where`` ``(H, W) bool``.
    """
    if not solid.any() or not where.any():
        return rgb
    src = (~solid).astype(np.uint8)  # distance to the nearest zero = nearest solid pixel
    _, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(solid)
    lut = np.zeros((labels.max() + 1, 3), np.uint8)
    lut[labels[ys, xs]] = rgb[ys, xs]
    out = rgb.copy()
    out[where] = lut[labels[where]]
    return out


def make_cutout(rgb: np.ndarray, alpha: np.ndarray, decontaminate: bool = True) -> np.ndarray | None:
    """``(H, W, 3) uint8`` + alpha ``(H, W) float32 0..1`` (or uint8) -> ``(h, w, 4) uint8`` RGBA.

    Tight-cropped to the pixels with alpha >= 1/255; None when there are none. With
    ``decontaminate``, soft-edge pixels take the colour of the nearest opaque pixel, so the old
    background does not show as a halo when the cutout is composited elsewhere.
    """
    a8 = alpha if alpha.dtype == np.uint8 else np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    if a8.shape != rgb.shape[:2]:
        raise ValueError(f"alpha {a8.shape} does not match image {rgb.shape[:2]}")
    ys, xs = np.nonzero(a8)
    if ys.size == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop_rgb, crop_a = rgb[y0:y1, x0:x1], a8[y0:y1, x0:x1]
    if decontaminate:
        crop_rgb = bleed_colors(crop_rgb, crop_a >= 250, (crop_a > 0) & (crop_a < 250))
    return np.dstack([crop_rgb, crop_a])


# ---------------------------------------------------------------- sources -> items
def _rel_id(root: str, path: str) -> str:
    """``root/a/b.jpg`` -> ``a/b`` (posix, no extension)."""
    rel = posixpath.relpath(str(path).replace("\\", "/"), str(root).replace("\\", "/"))
    return rel.rsplit(".", 1)[0] if "." in posixpath.basename(rel) else rel


def read_category_csv(path: str, column: str = "type", key_columns: Sequence[str] = ("file", "stem")) -> dict[str, str]:
    """A product CSV -> ``{file name or stem: category}`` with the category lower-cased.

    Rows are keyed by every column of ``key_columns`` that the CSV has (the shared
    ``products.csv`` has both ``file`` and ``stem``). Raises ValueError naming the columns found
    when ``column`` or all key columns are missing.
    """
    import csv
    import io as _io

    rows = list(csv.DictReader(_io.StringIO(io.read_bytes(path).decode("utf-8-sig"))))
    if not rows:
        return {}
    have = list(rows[0])
    keys = [k for k in key_columns if k in have]
    if column not in have or not keys:
        raise ValueError(f"{path}: needs a category column {column!r} and one of {list(key_columns)} to match "
                         f"images; found columns {have}. Set category_column to one of them.")
    out: dict[str, str] = {}
    for r in rows:
        cat = (r[column] or "").strip().lower() or "unknown"
        for k in keys:
            if r[k]:
                out[r[k]] = cat
    return out


def _category_for(rel_id: str, path: str, table: dict[str, str] | None, fixed: str | None) -> str:
    if fixed:
        return fixed
    if table is not None:
        name = posixpath.basename(str(path))
        return table.get(name) or table.get(io.stem(path)) or table.get(rel_id) or "unknown"
    parent = posixpath.dirname(rel_id)
    return parent.split("/")[-1].lower() if parent else "unknown"


def _limit(items: list[dict], limit: int | None, seed: int, name: str) -> list[dict]:
    if limit is None or len(items) <= limit:
        return items
    from segsynth.rng import rng_for

    pick = np.sort(rng_for(seed, "cutouts-limit", name).choice(len(items), size=limit, replace=False))
    return [items[i] for i in pick]


def image_folder_items(path: str, kind: Literal["catalog", "rgba"] = "catalog", name: str | None = None,
                       categories_csv: str | None = None, category_column: str = "type",
                       category: str | None = None, limit: int | None = None, seed: int = 0) -> list[dict]:
    """Items of a folder of catalog photos (``kind="catalog"``) or RGBA PNGs (``kind="rgba"``).

    Images are taken from ``path/images`` when that folder exists, else from ``path``
    (recursively). Category: ``category`` if given; else from ``categories_csv`` (column
    ``category_column``, matched on file name or stem, lower-cased); else the image's parent
    folder name (``path/chair/x.jpg`` -> ``chair``); else ``"unknown"``. ``limit`` keeps a
    seeded random subset. ``cutout_id`` is ``<name>/<path relative to the image folder>``
    without extension, ``name`` defaulting to ``kind``.
    """
    root = io.join(path, "images") if io.exists(io.join(path, "images")) else str(path)
    exts = (".png", ".webp", ".tif", ".tiff") if kind == "rgba" else io.IMAGE_EXTS
    files = io.list_files(root, exts, recursive=True)
    if not files:
        raise FileNotFoundError(f"{root} holds no images ({', '.join(exts)}); check the source path")
    table = read_category_csv(categories_csv, category_column) if categories_csv else None
    name = name or kind
    items = []
    for f in files:
        rid = _rel_id(root, f)
        items.append({"cutout_id": f"{name}/{rid}", "category": _category_for(rid, f, table, category),
                      "source": f, "source_kind": kind, "mask": ""})
    if table is not None:
        missing = sum(it["category"] == "unknown" for it in items)
        if missing:
            log.warning("%s: %d of %d images are not in %s (category 'unknown')", path, missing, len(items), categories_csv)
    return _limit(items, limit, seed, name)


def pair_folder_items(path: str, name: str | None = None, categories_csv: str | None = None,
                      category_column: str = "category", category: str | None = None,
                      limit: int | None = None, seed: int = 0) -> list[dict]:
    """Items of a labelled folder (``images/<stem>.<ext>`` + ``masks/<stem>.png``).

    Category: ``category`` if given; else ``categories_csv`` (keyed on ``stem``/``file``); else the
    folder's own ``categories.csv`` (via :func:`segsynth.io.labelled_folder`); else the folder's
    name (``eval/ecssd_dev`` -> ``ecssd_dev``) when every item would be ``"unknown"``.
    """
    pairs = io.labelled_folder(path)
    if not pairs:
        raise FileNotFoundError(f"{path} holds no image+mask pairs (images/<stem>.<ext> with masks/<stem>.png)")
    table = read_category_csv(categories_csv, category_column) if categories_csv else None
    folder_name = posixpath.basename(str(path).rstrip("/")).lower() or "unknown"
    name = name or "pairs"
    items = []
    for p in pairs:
        if category:
            cat = category
        elif table is not None:
            cat = table.get(p["stem"]) or table.get(posixpath.basename(p["image"])) or "unknown"
        else:
            cat = p["category"] if p["category"] != "unknown" else folder_name
        items.append({"cutout_id": f"{name}/{p['stem']}", "category": cat, "source": p["image"],
                      "source_kind": "pairs", "mask": p["mask"]})
    return _limit(items, limit, seed, name)


def source_items(kind: str, path: str, **kwargs) -> list[dict]:
    """Items of one source section (``kind`` catalog | pairs | rgba)."""
    if kind in ("catalog", "rgba"):
        return image_folder_items(path, kind=kind, **kwargs)
    if kind == "pairs":
        kwargs.setdefault("category_column", "category")
        return pair_folder_items(path, **kwargs)
    raise ValueError(f"unknown cutout source kind {kind!r}; valid kinds: {', '.join(SOURCE_KINDS)}")


# ---------------------------------------------------------------- item -> cutout
@dataclass(frozen=True)
class CutoutResult:
    """One extraction attempt; ``status`` is one of STATUSES, ``rgba`` PNG bytes when written."""

    cutout_id: str
    category: str
    source: str
    source_kind: str  # catalog | teacher | pairs | rgba
    status: str
    quality: float = 0.0
    width: int = 0
    height: int = 0
    border_white: float = float("nan")
    rgba: bytes | None = None
    reason: str = ""

    def row(self) -> dict:
        return dataclasses.asdict(self)


class CutoutExtractor:
    """Turns items into :class:`CutoutResult` s; holds the (optional) teacher predictor.

    ``teacher`` is any object with ``predict(list of (H, W, 3) uint8) -> list of (H, W) float32``
    (a :class:`segsynth.predict.Predictor`). ``teacher_for``: ``"rejected"`` runs it on catalog
    photos the white extractor rejects (background not white, or quality below
    ``min_quality``); ``"all"`` uses it instead of the white extractor; ``"both"`` writes a
    white cutout and a teacher cutout (``<cutout_id>@teacher``).
    """

    def __init__(self, white: WhiteBackgroundOptions = WhiteBackgroundOptions(), min_quality: float = 0.3,
                 teacher=None, teacher_for: str = "rejected", png_compression: int = 3):
        if teacher_for not in TEACHER_FOR:
            raise ValueError(f"unknown teacher_for {teacher_for!r}; valid: {', '.join(TEACHER_FOR)}")
        self.white, self.min_quality = white, min_quality
        self.teacher, self.teacher_for = teacher, teacher_for
        self.png_compression = png_compression

    def __call__(self, item: dict) -> list[CutoutResult]:
        base = {k: item[k] for k in ("cutout_id", "category", "source", "source_kind")}
        try:
            if item["source_kind"] == "rgba":
                rgba = io.decode_rgba(io.read_bytes(item["source"]), name=item["source"])
                return [self._finish(base, rgba[:, :, :3], rgba[:, :, 3], cropped=True)]
            rgb = io.decode_image(io.read_bytes(item["source"]), name=item["source"])
            if item["source_kind"] == "pairs":
                mask = io.decode_mask(io.read_bytes(item["mask"]), name=item["mask"])
                if mask.shape != rgb.shape[:2]:
                    raise io.ImageDecodeError(f"{item['mask']}: mask {mask.shape} does not match image "
                                              f"{rgb.shape[:2]}; masks must have their image's size")
                return [self._finish(base, rgb, mask)]
        except (io.ImageDecodeError, OSError, ValueError, cv2.error) as e:
            log.warning("skipping corrupt input %s: %s", item["source"], e)
            return [CutoutResult(**base, status="corrupt", reason=str(e))]
        return self._catalog(base, rgb)

    def _catalog(self, base: dict, rgb: np.ndarray) -> list[CutoutResult]:
        results = []
        if self.teacher is None or self.teacher_for in ("rejected", "both"):
            cut = white_background_alpha(rgb, self.white)
            if not cut.is_white_background:
                res = CutoutResult(**base, status="not_white", quality=cut.quality, border_white=cut.border_white,
                                   reason=f"only {cut.border_white:.0%} of the border is white "
                                          f"(min_border_white {self.white.min_border_white:.0%})")
            else:
                res = self._finish(base, rgb, cut.alpha, quality=cut.quality, border_white=cut.border_white)
            if self.teacher is None or self.teacher_for == "both" or res.status == "written":
                results.append(res)
            if self.teacher is None or (self.teacher_for == "rejected" and res.status == "written"):
                return results
        tbase = dict(base, source_kind="teacher")
        if self.teacher_for == "both":
            tbase["cutout_id"] = base["cutout_id"] + "@teacher"
        alpha = np.asarray(self.teacher.predict([rgb])[0], np.float32)
        results.append(self._finish(tbase, rgb, alpha))
        return results

    def _finish(self, base: dict, rgb: np.ndarray, alpha: np.ndarray, quality: float | None = None,
                border_white: float = float("nan"), cropped: bool = False) -> CutoutResult:
        if quality is None:
            quality = mask_quality(alpha, rgb, cropped=cropped).score
        if quality < self.min_quality:
            return CutoutResult(**base, status="low_quality", quality=quality, border_white=border_white,
                                reason=f"quality {quality:.2f} < min_quality {self.min_quality:.2f}")
        rgba = make_cutout(rgb, alpha)
        if rgba is None:
            return CutoutResult(**base, status="empty", quality=quality, border_white=border_white,
                                reason="mask is empty")
        return CutoutResult(**base, status="written", quality=quality, width=int(rgba.shape[1]),
                            height=int(rgba.shape[0]), border_white=border_white,
                            rgba=io.encode_png(rgba, self.png_compression))
