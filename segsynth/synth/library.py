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
import pyarrow.compute as pc

from segsynth import io
from segsynth.rooms.config import LIBRARY_FILENAME
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


class CutoutStore:
    """A cutout manifest, indexed: ids and categories in memory, pixels read when asked.

    ``category`` maps every cutout_id to its category and ``context`` holds the ids of context
    cutouts (with a product ``mask``); :meth:`load` reads and decodes only the cutouts asked
    for (:class:`segsynth.io.ParquetIndex`), so a worker holds what its shard needs, not the
    catalog. ``manifest`` is the parquet file or the cutouts folder beside it.
    """

    def __init__(self, manifest: str):
        self.path = _manifest_path(manifest)
        self.index = io.ParquetIndex([self.path], "cutout_id", keep=["category"])
        self.category = {cid: v["category"] for cid, v in self.index.values.items()}
        self.has_mask = CONTEXT_MASK in self.index.columns
        self.context: set[str] = set()
        if self.has_mask:
            for ids, masks in self.index.group_values(CONTEXT_MASK):
                present = pc.fill_null(pc.greater(pc.binary_length(masks), 0), False).to_pylist()
                self.context.update(i for i, has in zip(ids, present) if has)

    def ids(self, categories: Sequence[str] | None = None) -> list[str]:
        """Sorted cutout ids, of ``categories`` only (case-insensitive) unless None."""
        wanted = {c.lower() for c in categories} if categories is not None else None
        return sorted(cid for cid, cat in self.category.items() if wanted is None or str(cat).lower() in wanted)

    def load(self, ids: Sequence[str], skip_empty: bool = True) -> tuple[dict[str, Cutout], list[tuple[str, str]]]:
        """(``{cutout_id: Cutout}``, skipped ``[(cutout_id, reason)]``) for ``ids``: a corrupt PNG,
        and with ``skip_empty`` a fully transparent one, is skipped, not raised."""
        columns = ["rgba", CONTEXT_MASK] if self.has_mask else ["rgba"]
        rows = self.index.fetch(ids, columns)
        cutouts: dict[str, Cutout] = {}
        skipped: list[tuple[str, str]] = []
        for cid in ids:
            if cid in cutouts:
                continue
            try:
                cutout = decode_cutout(cid, str(self.category[cid]), rows[cid]["rgba"], rows[cid].get(CONTEXT_MASK),
                                       name=f"{self.path}:{cid}")
            except io.ImageDecodeError as e:
                skipped.append((cid, str(e)))
                continue
            if skip_empty and not cutout.rgba[:, :, 3].any():
                skipped.append((cid, "alpha is empty (fully transparent cutout)"))
                continue
            cutouts[cid] = cutout
        return cutouts, skipped


def load_cutouts(manifest: str, categories: Sequence[str] | None = None
                 ) -> tuple[list[Cutout], list[tuple[str, str]]]:
    """Cutouts from a cutout manifest (``cutout_id, category, rgba`` PNG bytes, ...).

    ``manifest`` is the parquet file or the cutouts folder beside it; ``categories`` keeps only
    those categories (case-insensitive), None keeps all. Returns (cutouts sorted by cutout_id,
    skipped ``[(cutout_id, reason)]``): a corrupt or fully transparent PNG is skipped and logged.
    All of them in memory: for a catalog, :class:`CutoutStore` loads what is needed.
    """
    store = CutoutStore(manifest)
    ids = store.ids(categories)
    cutouts, skipped = store.load(ids)
    if skipped:
        log.warning("%s: skipped %d of %d cutouts (e.g. %s: %s)", store.path, len(skipped), len(ids), *skipped[0])
    return [cutouts[c] for c in ids if c in cutouts], skipped


def _downscale(rgb: np.ndarray, max_side: int, max_short: int | None = None) -> np.ndarray:
    """``rgb`` shrunk (never enlarged) so its longer side is <= ``max_side`` and its shorter
    side <= ``max_short``."""
    h, w = rgb.shape[:2]
    f = min(1.0, max_side / max(h, w), (max_short or min(h, w)) / min(h, w))
    if f >= 1.0:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _parquet_files(source: str) -> list[str]:
    """The background-library files of ``source``: itself when it is a parquet file; a folder's
    ``backgrounds.parquet`` alone when it has one (a `segsynth rooms` output, whose ``parts/``
    hold blank and duplicate rooms too); else every parquet file under the folder."""
    if source.endswith(".parquet"):
        return [source]
    if io.exists(io.join(source, LIBRARY_FILENAME)):
        return [io.join(source, LIBRARY_FILENAME)]
    try:
        return io.list_files(source, [".parquet"], recursive=True)
    except FileNotFoundError:
        return []


class BackgroundStore:
    """Room photos from folders of images (recursive) or background-library parquet files,
    indexed: ``ids`` (sorted) in memory, pixels read when asked (:meth:`load`).

    A source that is (or holds) ``*.parquet`` files is read as a background library (columns
    ``bg_id, image`` JPEG bytes); otherwise every image under the folder is a room, its id the
    path relative to the folder without extension. A bg_id already found in an earlier source
    is left out and listed in ``skipped`` as ``(bg_id, reason)``.
    """

    def __init__(self, sources: Sequence[str]):
        if isinstance(sources, str):
            sources = [sources]
        self._files: dict[str, str] = {}
        self._libraries: dict[str, io.ParquetIndex] = {}
        self.skipped: list[tuple[str, str]] = []

        def add(bg_id: str, where: str) -> bool:
            if bg_id in self._files or bg_id in self._libraries:
                self.skipped.append((bg_id, f"duplicate bg_id (also in an earlier source); {where} left out"))
                return False
            return True

        for source in map(str, sources):
            parquets = _parquet_files(source)
            for pf in parquets:
                index = io.ParquetIndex([pf], "bg_id")
                self.skipped += [(b, f"duplicate bg_id (also in an earlier source); {pf}:{b} left out")
                                 for b, _ in index.duplicates]
                for bg_id in sorted(index.where, key=lambda b: index.where[b]):
                    if add(bg_id, f"{pf}:{bg_id}"):
                        self._libraries[bg_id] = index
            if parquets:
                continue
            files = io.list_files(source, io.IMAGE_EXTS, recursive=True)
            if not files:
                raise FileNotFoundError(f"background source {source} holds no images ({', '.join(io.IMAGE_EXTS)}) "
                                        "and no parquet files; pass a folder of room photos or a backgrounds.parquet")
            _, root = io.resolve(source)
            for f in files:
                _, p = io.resolve(f)
                bg_id = posixpath.relpath(p.replace("\\", "/"), root.replace("\\", "/")).rsplit(".", 1)[0]
                if add(bg_id, f):
                    self._files[bg_id] = f
        self.ids = sorted([*self._files, *self._libraries])

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, ids: Sequence[str], max_side: int = 1024, max_short: int | None = None
             ) -> tuple[list[Background], list[tuple[str, str]]]:
        """(backgrounds sorted by bg_id, skipped ``[(bg_id, reason)]``) for ``ids``, shrunk so
        the longer side is at most ``max_side`` (and the shorter at most ``max_short``); a
        corrupt or unreadable image is skipped, not raised."""
        data: dict[str, tuple[bytes, str]] = {}
        skipped: list[tuple[str, str]] = []
        by_library: dict[int, list[str]] = {}
        for bg_id in ids:
            if bg_id in self._libraries:
                by_library.setdefault(id(self._libraries[bg_id]), []).append(bg_id)
                continue
            f = self._files[bg_id]
            try:
                data[bg_id] = (io.read_bytes(f), f)
            except OSError as e:
                skipped.append((bg_id, f"{f}: cannot read ({e})"))
        for wanted in by_library.values():
            index = self._libraries[wanted[0]]
            for bg_id, row in index.fetch(wanted, ["image"]).items():
                data[bg_id] = (row["image"] or b"", f"{index.file_of(bg_id)}:{bg_id}")
        found: list[Background] = []
        for bg_id in sorted(data):
            raw, name = data.pop(bg_id)
            try:
                rgb = io.decode_image(raw, name=name)
            except io.ImageDecodeError as e:
                skipped.append((bg_id, str(e)))
                continue
            found.append(Background(bg_id=bg_id, rgb=_downscale(rgb, max_side, max_short)))
        return found, skipped


def load_backgrounds(sources: Sequence[str], max_side: int = 1024
                     ) -> tuple[list[Background], list[tuple[str, str]]]:
    """Every room photo of ``sources`` (see :class:`BackgroundStore`), shrunk so the longer side
    is at most ``max_side``. Returns (backgrounds sorted by bg_id, skipped ``[(bg_id, reason)]``);
    a corrupt image or a repeated bg_id is skipped and logged."""
    store = BackgroundStore(sources)
    found, skipped = store.load(store.ids, max_side)
    skipped = store.skipped + skipped
    if skipped:
        log.warning("backgrounds: skipped %d (e.g. %s: %s)", len(skipped), *skipped[0])
    return found, skipped


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
