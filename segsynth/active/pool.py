"""The unlabelled pool: photos from folders, with their categories, minus what training saw.

An item is ``{key, stem, source, image, category, bg_id, white_policy, category_from}``: ``key`` is ``"<source>/<stem>"``,
``stem`` the file-safe ``"<source>--<stem>"`` used for every file the round writes about the
photo (masks, the review task's images), ``category`` one category or several joined by ``|``
(a room photo shows many product types).
"""
from __future__ import annotations

import csv
import io as _pyio
import logging
import posixpath
import re

from segsynth import io
from segsynth.active.config import PoolSource
from segsynth.split import used_as_scene

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(source: str, stem: str) -> str:
    """The file-safe name of a pool photo, unique across sources."""
    return _UNSAFE.sub("_", f"{source}--{stem}")


def _categories(source: PoolSource) -> dict[str, str]:
    """file name or stem -> ``|``-joined categories (lower case, deduplicated, in order)."""
    if not source.table:
        return {}
    text = io.read_bytes(source.table).decode("utf-8-sig")
    rows = list(csv.DictReader(_pyio.StringIO(text)))
    if rows and (source.file_column not in rows[0] or source.category_column not in rows[0]):
        raise io.InputError(f"pool {source.label}: {source.table} needs columns {source.file_column!r} and "
                            f"{source.category_column!r}; it has {', '.join(rows[0])} (set file_column / category_column)")
    out = {}
    for r in rows:
        cats = [c.strip().lower() for c in str(r[source.category_column] or "").split("|") if c.strip()]
        joined = "|".join(dict.fromkeys(cats))
        name = str(r[source.file_column])
        out[name] = joined
        out.setdefault(io.stem(name), joined)
    return out


def pool_items(sources: tuple[PoolSource, ...] | list[PoolSource]) -> tuple[list[dict], dict[str, int]]:
    """Every pool photo as an item (see the module's docstring), sorted by key, and counts of
    what was left out per reason (``seen_by_synthesis``)."""
    items: list[dict] = []
    left_out = {"seen_by_synthesis": 0}
    for src in sources:
        io.require_input(src.path, f"pool ({src.label}).path", "folder")
        if src.table:
            io.require_input(src.table, f"pool ({src.label}).table", "file")
        folder = io.join(src.path, "images") if io.exists(io.join(src.path, "images")) else src.path
        cats = _categories(src)
        _, root = io.resolve(folder)
        files = io.list_files(folder, io.IMAGE_EXTS, recursive=True)
        if src.limit:
            files = files[: src.limit]
        for f in files:
            rel = posixpath.relpath(io.resolve(f)[1].replace("\\", "/"), root.replace("\\", "/"))
            bg_id = rel.rsplit(".", 1)[0]  # the id synthesis gives this photo (segsynth.synth.load_backgrounds)
            if src.unseen_scene_share is not None and used_as_scene(bg_id, src.unseen_scene_share):
                left_out["seen_by_synthesis"] += 1
                continue
            name = posixpath.basename(rel)
            stem = io.stem(name)
            category = cats.get(name) or cats.get(stem) or src.default_category
            items.append({"key": f"{src.label}/{bg_id}", "stem": file_stem(src.label, bg_id), "source": src.label,
                          "image": f, "category": category, "bg_id": bg_id, "white_policy": src.white,
                          "category_from": src.category_from})
    items.sort(key=lambda it: it["key"])
    stems = [it["stem"] for it in items]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise io.InputError(f"pool: two photos map to the file name {dup!r}; give the sources distinct names")
    if not items:
        raise io.InputError("pool: no photos found (" + ", ".join(s.path for s in sources) + ")")
    log.debug("pool: %d photos from %d source(s), %s", len(items), len(sources), left_out)
    return items, left_out


def split_categories(category: str) -> list[str]:
    """``"sofa|chair"`` -> ``["sofa", "chair"]``; an empty category is ``["unknown"]``."""
    cats = list(dict.fromkeys(c for c in str(category or "").split("|") if c))
    return cats or ["unknown"]
