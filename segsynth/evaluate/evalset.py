"""Build a small, balanced test set: about ``per_category`` items from every category.

As in the method, a test set samples a few items per category from the catalog, so that big
categories (hundreds of chairs) do not dominate the averages.

    build_test_set("catalog/products.csv", "catalog/images", "data/testset", per_category=3,
                   masks_dir="catalog/masks")                      # real masks where they exist
    build_test_set("catalog/products.csv", "catalog/images", "data/testset",
                   teacher="isnet-general-fp16.onnx")             # pseudo-labels from a teacher

Masks are needed. Either ``masks_dir`` holds ``<stem>.png`` for (some of) the images, and only
those items are eligible; or a ``teacher`` model (any ``segsynth.predict`` predictor, e.g. the DIS
ONNX) labels the sampled images, its soft mask binarised at 0.5. Pseudo-labelled sets measure
agreement with the teacher, not truth: the written ``categories.csv`` says which it is in its
``label_source`` column (``mask`` or ``teacher:<name>``), and the summary repeats it.

A labelled folder with a ``categories.csv`` is a catalog too: pass its ``categories.csv``,
``images/`` and ``masks/`` (``stem_column="stem"``, ``category_column="category"``).

The output is a labelled folder (``images/``, ``masks/``, ``categories.csv`` with ``stem,
category, label_source``) ready for ``segsynth eval``. Sampling uses ``rng_for(seed, category)``,
so adding a category never changes what the others draw.
"""
from __future__ import annotations

import argparse
import csv
import io as _pyio
import json
import logging
import sys

import numpy as np

from segsynth import io
from segsynth.rng import rng_for

log = logging.getLogger(__name__)


def _catalog_rows(catalog_csv: str, stem_column: str, category_column: str, file_column: str | None) -> list[dict]:
    rows = list(csv.DictReader(_pyio.StringIO(io.read_bytes(catalog_csv).decode("utf-8-sig"))))
    if not rows:
        raise ValueError(f"{catalog_csv}: no rows")
    for col in (stem_column, category_column):
        if col not in rows[0]:
            raise ValueError(f"{catalog_csv}: no {col!r} column; columns: {list(rows[0])} "
                             "(set stem_column / category_column)")
    return rows


def build_test_set(catalog_csv: str, images_dir: str, out: str, per_category: int = 3, seed: int = 0,
                   masks_dir: str | None = None, teacher: str | None = None, teacher_kind: str | None = None,
                   category_column: str = "type", stem_column: str = "stem", file_column: str | None = "file",
                   min_category_size: int = 1) -> dict:
    """Sample ``per_category`` items per category into the labelled folder ``out``.

    ``catalog_csv``: rows with ``stem_column``, ``category_column`` and optionally
    ``file_column`` (the image's file name in ``images_dir``; else ``<stem>.<ext>`` is looked
    up). Categories with fewer than ``min_category_size`` eligible items are left out.
    Returns a summary ``{out, items, categories, label_source, per_category}``.
    """
    if per_category < 1:
        raise ValueError(f"per_category must be >= 1, got {per_category}")
    if masks_dir is None and teacher is None:
        raise ValueError("a test set needs masks: pass masks_dir (a folder of <stem>.png) or teacher "
                         "(a predictor path, e.g. the DIS ONNX, for pseudo-labels)")
    io.mark_incomplete(out)
    rows = _catalog_rows(catalog_csv, stem_column, category_column, file_column)
    images = {io.stem(p): p for p in io.list_files(images_dir, io.IMAGE_EXTS)}
    by_name = {p.rsplit("/", 1)[-1]: p for p in images.values()}
    masks = {io.stem(p): p for p in io.list_files(masks_dir, io.IMAGE_EXTS)} if masks_dir else {}

    eligible: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        s = str(r[stem_column])
        img = by_name.get(r.get(file_column, "")) if file_column and r.get(file_column) else None
        img = img or images.get(s)
        if img is None or (masks_dir and s not in masks):
            continue
        eligible.setdefault(str(r[category_column]) or "unknown", []).append((s, img))

    chosen: list[tuple[str, str, str]] = []
    for cat in sorted(eligible):
        cands = sorted(set(eligible[cat]))
        if len(cands) < min_category_size:
            continue
        rng = rng_for(seed, "test-set", cat)
        idx = rng.choice(len(cands), size=min(per_category, len(cands)), replace=False)
        chosen += [(cands[i][0], cands[i][1], cat) for i in sorted(idx)]
    if not chosen:
        raise ValueError(f"no eligible items in {catalog_csv} (images in {images_dir}"
                         + (f", masks in {masks_dir}" if masks_dir else "") + ")")

    predictor, source = None, "mask"
    if masks_dir is None:
        from segsynth.predict import load_predictor

        predictor = load_predictor(teacher, kind=teacher_kind)
        source = f"teacher:{predictor.name}"
    out_rows, skipped = [], 0
    for s, img_path, cat in chosen:
        try:
            data = io.read_bytes(img_path)
            image = io.decode_image(data, img_path)
            if predictor is None:
                mask = io.read_mask(masks[s])
                if mask.shape != image.shape[:2]:
                    raise ValueError(f"{masks[s]}: mask size {mask.shape} differs from its image {image.shape[:2]}")
            else:
                mask = np.where(predictor.predict([image])[0] >= 0.5, 255, 0).astype(np.uint8)
        except (io.ImageDecodeError, ValueError, OSError) as e:
            log.warning("test set: %s skipped: %s", s, e)
            skipped += 1
            continue
        ext = img_path.rsplit(".", 1)[-1].lower()
        io.write_bytes(io.join(out, "images", f"{s}.{ext}"), data)
        io.write_bytes(io.join(out, "masks", f"{s}.png"), io.encode_png(mask))
        out_rows.append({"stem": s, "category": cat, "label_source": source})
    buf = _pyio.StringIO()
    w = csv.DictWriter(buf, fieldnames=["stem", "category", "label_source"], lineterminator="\n")
    w.writeheader()
    w.writerows(out_rows)
    io.write_bytes(io.join(out, "categories.csv"), buf.getvalue().encode())
    summary = {"out": out, "items": len(out_rows), "skipped": skipped, "categories": len({r["category"] for r in out_rows}),
               "label_source": source, "per_category": per_category, "seed": seed}
    io.mark_complete(out, summary)
    log.info("test set: %d items from %d categories -> %s", summary["items"], summary["categories"], out)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m segsynth.evaluate.evalset", description=__doc__.split("\n")[0])
    p.add_argument("--catalog", required=True, help="CSV with stem and category columns")
    p.add_argument("--images", required=True, help="folder of the catalog's images")
    p.add_argument("--out", required=True, help="labelled folder to write")
    p.add_argument("--masks", default=None, help="folder of <stem>.png masks (else --teacher)")
    p.add_argument("--teacher", default=None, help="predictor path for pseudo-labels (e.g. isnet-general-fp16.onnx)")
    p.add_argument("--teacher-kind", default=None, help="predictor kind (default: inferred from the path)")
    p.add_argument("--per-category", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--category-column", default="type")
    p.add_argument("--stem-column", default="stem")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = build_test_set(a.catalog, a.images, a.out, a.per_category, a.seed, a.masks, a.teacher, a.teacher_kind,
                             a.category_column, a.stem_column)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
