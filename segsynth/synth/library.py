"""Inputs of the compositing engine: product cutouts and room photos, and their loaders.

Both loaders return items sorted by id (so a sample's distractors and room do not depend on
file-system order) and a list of ``(id, reason)`` for inputs that were skipped: one corrupt
file is logged and left out, it never stops the job.
"""
from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from segsynth import io
from segsynth.split import used_as_scene

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.parquet"


@dataclass(frozen=True, eq=False)
class Cutout:
    """A product cut out of its photo: ``rgba`` is ``(h, w, 4) uint8``, tight crop, alpha = mask.

    A *context* cutout (active learning's harvest) is the product with its own surroundings:
    ``rgba``'s alpha is where the patch is pasted (a rectangle with soft edges) and ``mask``
    ``(h, w) uint8 0..255`` is the product's own mask within it; None for plain cutouts."""

    cutout_id: str
    category: str
    rgba: np.ndarray
    mask: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Background:
    """A room photo: ``rgb`` is ``(H, W, 3) uint8``."""

    bg_id: str
    rgb: np.ndarray


CONTEXT_MASK = "mask"  # optional manifest column: the product's mask of a context cutout (PNG bytes)


def decode_cutout(cutout_id: str, category: str, rgba_png: bytes, mask_png: bytes | None = None,
                  name: str | None = None) -> Cutout:
    """A manifest row's PNG bytes -> :class:`Cutout` (the one decode path of cutouts); a
    context cutout's ``mask`` must match its size. Raises ``io.ImageDecodeError``."""
    name = name or f"cutout {cutout_id}"
    rgba = io.decode_rgba(rgba_png, name=name)
    mask = None
    if mask_png:
        mask = io.decode_mask(mask_png, name=f"{name} mask")
        if mask.shape != rgba.shape[:2]:
            raise io.ImageDecodeError(f"{name}: mask {mask.shape} and cutout {rgba.shape[:2]} differ in size")
    return Cutout(cutout_id=cutout_id, category=category, rgba=rgba, mask=mask)


def _manifest_path(manifest: str) -> str:
    """A manifest parquet file, or the cutouts folder holding ``manifest.parquet``."""
    candidate = io.join(manifest, MANIFEST_NAME)
    if not str(manifest).endswith(".parquet") and io.exists(candidate):
        return candidate
    return str(manifest)


def load_cutouts(manifest: str, categories: Sequence[str] | None = None
                 ) -> tuple[list[Cutout], list[tuple[str, str]]]:
    """Cutouts from a cutout manifest (``cutout_id, category, rgba`` PNG bytes, ...).

    ``manifest`` is the parquet file or the cutouts folder beside it; ``categories`` keeps only
    those categories (case-insensitive), None keeps all. Returns (cutouts sorted by cutout_id,
    skipped ``[(cutout_id, reason)]``): a corrupt or fully transparent PNG is skipped and logged.
    """
    path = _manifest_path(manifest)
    table = io.read_parquet(path)
    masks = table.column(CONTEXT_MASK) if CONTEXT_MASK in table.column_names else None
    wanted = {c.lower() for c in categories} if categories is not None else None
    ids = table.column("cutout_id").to_pylist()
    cats = table.column("category").to_pylist()
    pngs = table.column("rgba")
    cutouts: list[Cutout] = []
    skipped: list[tuple[str, str]] = []
    for i, (cid, cat) in enumerate(zip(ids, cats)):
        if wanted is not None and str(cat).lower() not in wanted:
            continue
        try:
            cutout = decode_cutout(str(cid), str(cat), pngs[i].as_py(), masks[i].as_py() if masks is not None else None,
                                   name=f"{path}:{cid}")
        except io.ImageDecodeError as e:
            skipped.append((cid, str(e)))
            continue
        if not cutout.rgba[:, :, 3].any():
            skipped.append((cid, "alpha is empty (fully transparent cutout)"))
            continue
        cutouts.append(cutout)
    cutouts.sort(key=lambda c: c.cutout_id)
    if skipped:
        log.warning("%s: skipped %d of %d cutouts (e.g. %s: %s)", path, len(skipped), len(ids), *skipped[0])
    return cutouts, skipped


def _downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    f = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _parquet_files(source: str) -> list[str]:
    if source.endswith(".parquet"):
        return [source]
    try:
        return io.list_files(source, [".parquet"], recursive=True)
    except FileNotFoundError:
        return []


def load_backgrounds(sources: Sequence[str], max_side: int = 1024
                     ) -> tuple[list[Background], list[tuple[str, str]]]:
    """Room photos from folders of images (recursive) or background-library parquet files.

    A source that is (or holds) ``*.parquet`` files is read as a background library (columns
    ``bg_id, image`` JPEG bytes); otherwise every image under the folder is a room, its id the
    path relative to the folder without extension. Images are downscaled so the longer side is
    at most ``max_side``. Returns (backgrounds sorted by bg_id, skipped ``[(bg_id, reason)]``);
    a corrupt image or a repeated bg_id is skipped and logged.
    """
    if isinstance(sources, str):
        sources = [sources]
    found: dict[str, Background] = {}
    skipped: list[tuple[str, str]] = []

    def add(bg_id: str, data: bytes, name: str) -> None:
        if bg_id in found:
            skipped.append((bg_id, f"duplicate bg_id (also in an earlier source); {name} left out"))
            return
        try:
            rgb = io.decode_image(data, name=name)
        except io.ImageDecodeError as e:
            skipped.append((bg_id, str(e)))
            return
        found[bg_id] = Background(bg_id=bg_id, rgb=_downscale(rgb, max_side))

    for source in sources:
        source = str(source)
        parquets = _parquet_files(source)
        if parquets:
            for pf in parquets:
                table = io.read_parquet(pf, columns=["bg_id", "image"])
                images = table.column("image")
                for i, bg_id in enumerate(table.column("bg_id").to_pylist()):
                    add(str(bg_id), images[i].as_py() or b"", f"{pf}:{bg_id}")
            continue
        files = io.list_files(source, io.IMAGE_EXTS, recursive=True)
        if not files:
            raise FileNotFoundError(f"background source {source} holds no images ({', '.join(io.IMAGE_EXTS)}) "
                                    "and no parquet files; pass a folder of room photos or a backgrounds.parquet")
        fs, root = io.resolve(source)
        for f in files:
            _, p = io.resolve(f)
            rel = posixpath.relpath(p.replace("\\", "/"), root.replace("\\", "/"))
            bg_id = rel.rsplit(".", 1)[0]
            try:
                data = io.read_bytes(f)
            except OSError as e:
                skipped.append((bg_id, f"{f}: cannot read ({e})"))
                continue
            add(bg_id, data, f)
    if skipped:
        log.warning("backgrounds: skipped %d (e.g. %s: %s)", len(skipped), *skipped[0])
    return sorted(found.values(), key=lambda b: b.bg_id), skipped


def split_scenes(scenes: Sequence[Background], share: float) -> tuple[list[Background], list[Background]]:
    """(used, unseen): the furnished room photos that synthesis composites on, and the rest.

    A photo is used when ``segsynth.split.used_as_scene(bg_id, share)``; the others
    are never composited, so active learning can score a model on them
    as unseen real scenes. Stable: the same bg_id is on the same side on every machine and run,
    and a larger ``share`` only adds photos. Both lists keep the input order.
    """
    used: list[Background] = []
    unseen: list[Background] = []
    for bg in scenes:
        (used if used_as_scene(bg.bg_id, share) else unseen).append(bg)
    return used, unseen
