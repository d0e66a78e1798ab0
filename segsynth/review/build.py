"""``segsynth review create``: images + candidate masks -> a task folder with precomputed views.

For each item (an image with every candidate it needs) the folder gets, under ``media/<item>/``:
``photo.jpg`` (longer side ``display_size``), ``photo_thumb.jpg`` (``thumb_size``), and per
candidate ``<cand>_checker.jpg`` (the cutout on a checkerboard), ``<cand>_white.jpg`` (on
white), ``<cand>_outline.jpg`` (the mask's outline over the photo, outside dimmed) and
``<cand>.png`` (the mask at the photo's full size, for the export). Full-size views are made on
demand by the app (:func:`render_view`). An image or mask that cannot be used (corrupt, missing,
another aspect ratio) skips that item with a reason in ``summary.json``; the task goes on.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from segsynth import io
from segsynth.config import save_config
from segsynth.review.config import CandidateSource, ReviewConfig
from segsynth.review.store import Store

log = logging.getLogger(__name__)

MEDIA = "media"
VIEWS = ("checker", "white", "outline")
JPEG_QUALITY = 85
OUTLINE_BGR = (255, 0, 255)  # magenta: visible on wood, white walls and green plants alike


def resize_to(arr: np.ndarray, side: int) -> np.ndarray:
    """``arr`` with its longer side at most ``side`` (never enlarged)."""
    h, w = arr.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale >= 1.0:
        return arr
    return cv2.resize(arr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def checkerboard(h: int, w: int, square: int = 12) -> np.ndarray:
    """``(h, w, 3) uint8`` light-gray checkerboard, the usual picture of transparency."""
    yy, xx = np.mgrid[:h, :w]
    light = ((yy // square + xx // square) % 2).astype(bool)
    out = np.full((h, w, 3), 204, np.uint8)
    out[light] = 255
    return out


def render_view(rgb: np.ndarray, mask: np.ndarray, view: str) -> np.ndarray:
    """One view of a candidate: ``rgb (H, W, 3) uint8``, ``mask (H, W) uint8`` -> ``(H, W, 3) uint8``."""
    alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
    if view in ("checker", "white"):
        bg = checkerboard(*mask.shape) if view == "checker" else np.full_like(rgb, 255)
        return np.clip(rgb * alpha + bg * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
    if view == "outline":
        out = (rgb.astype(np.float32) * (0.45 + 0.55 * alpha)).astype(np.uint8)  # outside dimmed
        contours, _ = cv2.findContours((mask >= 128).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        thickness = max(1, round(max(mask.shape) / 320))
        cv2.drawContours(out, contours, -1, OUTLINE_BGR[::-1], thickness, lineType=cv2.LINE_AA)
        return out
    raise ValueError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")


def _jpeg(path: Path, rgb: np.ndarray) -> None:
    path.write_bytes(io.encode_jpeg(rgb, JPEG_QUALITY))


class MaskSource:
    """A candidate's masks by stem, from a folder of image files or a parquet file."""

    def __init__(self, src: CandidateSource):
        self.src = src
        self.by_stem: dict[str, object] = {}
        if str(src.path).endswith(".parquet"):
            table = io.read_parquet(src.path)
            for col in (src.stem_column, src.mask_column):
                if col not in table.column_names:
                    raise io.InputError(f"candidates ({src.name}): {src.path} has no column {col!r}; its columns: "
                                        f"{', '.join(table.column_names)} (set stem_column / mask_column)")
            for stem, data in zip(table.column(src.stem_column).to_pylist(), table.column(src.mask_column).to_pylist()):
                self.by_stem[str(stem)] = data
        else:
            io.require_input(src.path, f"candidates ({src.name}).path", "folder")
            for path in io.list_files(src.path, io.IMAGE_EXTS):
                self.by_stem.setdefault(io.stem(path), path)

    def mask(self, stem: str) -> np.ndarray | None:
        """``(H, W) uint8`` or None when this source has no mask for ``stem``; a corrupt one raises."""
        got = self.by_stem.get(stem)
        if got is None:
            return None
        data = got if isinstance(got, (bytes, bytearray)) else io.read_bytes(str(got))
        return io.decode_mask(bytes(data), f"{self.src.name}:{stem}")


def _fit_mask(mask: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    """A mask at the photo's size: resized when only the scale differs, refused for another shape."""
    if mask.shape == shape:
        return mask
    h, w = shape
    mh, mw = mask.shape
    if abs(mh / mw - h / w) > 0.02:
        raise ValueError(f"{name}: mask is {mw}x{mh}, the photo {w}x{h} (another aspect ratio)")
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)


def create(cfg: ReviewConfig) -> dict:
    """Build the task folder ``cfg.out``; returns (and writes) ``summary.json``."""
    io.require_input(cfg.images, "images", "folder")
    for i, c in enumerate(cfg.candidates):
        io.require_input(c.path, f"candidates[{i}].path ({c.name})")
    if cfg.categories_csv:
        io.require_input(cfg.categories_csv, "categories_csv", "file")
    if io.is_uri(cfg.out):
        raise io.InputError("out: a review task lives on a local disk (SQLite); give a local folder")
    out = Path(cfg.out)
    if (out / "task.sqlite").exists():
        raise io.InputError(f"out: {out} holds a task already; choose another out or delete that folder")
    io.require_output(cfg.out)
    io.mark_incomplete(cfg.out)

    folder = Path(cfg.images)
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    items = [{"stem": io.stem(p), "image": str(Path(p).resolve())} for p in io.list_files(str(images_dir), io.IMAGE_EXTS)]
    items = io.select_stems(items, cfg.stems, str(images_dir))
    if cfg.limit:
        items = items[: cfg.limit]
    csv_path = cfg.categories_csv or (str(folder / "categories.csv") if (folder / "categories.csv").is_file() else None)
    categories = io.read_categories(csv_path) if csv_path else {}
    sources = [MaskSource(c) for c in cfg.candidates]

    kept, cands, skipped = [], [], {}
    for n, it in enumerate(items):
        stem = it["stem"]
        item_id = f"{n:05d}-{stem}"[:80]
        try:
            rgb = io.read_image(it["image"])
        except (io.ImageDecodeError, OSError) as e:
            skipped[stem] = f"image: {e}"
            continue
        masks, problems = {}, []
        for k, src in enumerate(sources):
            try:
                m = src.mask(stem)
                if m is not None:
                    masks[f"c{k + 1}"] = (src.src, _fit_mask(m, rgb.shape[:2], src.src.name))
            except (io.ImageDecodeError, OSError, ValueError) as e:
                problems.append(str(e))
        need_all = cfg.kind == "compare"
        if problems or not masks or (need_all and len(masks) < len(sources)):
            missing = [s.src.name for k, s in enumerate(sources) if f"c{k + 1}" not in masks]
            skipped[stem] = "; ".join(problems) or f"no mask from {', '.join(missing)}"
            continue
        media = out / MEDIA / item_id
        media.mkdir(parents=True, exist_ok=True)
        display = resize_to(rgb, cfg.display_size)
        _jpeg(media / "photo.jpg", display)
        _jpeg(media / "photo_thumb.jpg", resize_to(rgb, cfg.thumb_size))
        for cand_id, (src, mask) in masks.items():
            (media / f"{cand_id}.png").write_bytes(io.encode_png(mask))
            small = cv2.resize(mask, (display.shape[1], display.shape[0]), interpolation=cv2.INTER_AREA)
            for view in VIEWS:
                _jpeg(media / f"{cand_id}_{view}.jpg", render_view(display, small, view))
            cands.append({"item_id": item_id, "cand_id": cand_id, "name": src.name, "version": src.version,
                          "source": str(src.path)})
        kept.append({"item_id": item_id, "stem": stem, "image": it["image"], "category": categories.get(stem, ""),
                     "width": int(rgb.shape[1]), "height": int(rgb.shape[0])})
        if (n + 1) % 50 == 0:
            log.info("review: %d/%d items prepared", n + 1, len(items))
    if not kept:
        first = next(iter(skipped.items()), None)
        raise io.InputError(f"images: no item has the masks it needs ({len(items)} images"
                            + (f"; e.g. {first[0]}: {first[1]}" if first else "") + "); masks are named by the images' stems")
    meta = {"kind": cfg.kind, "question": cfg.resolved_question, "annotators_per_item": cfg.annotators_per_item,
            "lease_minutes": cfg.lease_minutes, "seed": cfg.seed, "token": cfg.token,
            "candidates": [c.name for c in cfg.candidates], "display_size": cfg.display_size}
    Store.create(out, meta, kept, cands)
    save_config(cfg, str(out))
    summary = {"out": str(out), "kind": cfg.kind, "items": len(kept), "skipped": skipped,
               "annotators_per_item": cfg.annotators_per_item, "slots": len(kept) * cfg.annotators_per_item}
    io.mark_complete(out, summary)
    for stem, why in list(skipped.items())[:10]:
        log.warning("review: skipped %s: %s", stem, why)
    return summary
