"""``segsynth active harvest``: the accepted masks -> training data.

From the round's review task (exported to ``ROUND/export/``) it writes:

- ``ROUND/accepted/``: a labelled folder (``images/``, ``masks/``, ``categories.csv``) of the
  selected photos whose mask people accepted; training reads it as
  ``{path: ROUND/accepted, kind: labelled, weight: harvest.weight}``;
- ``ROUND/control/``: the same for the random control slice, kept out of training: photos
  chosen without looking at scores, whose failure scores before and after the round (and how
  often people took the model's own mask) show what the round did beyond the selected photos;
- ``ROUND/context/manifest.parquet``: *context cutouts* of the accepted photos, each the product
  with its own surroundings (the mask's box grown by ``context_margin``, edges faded), in the
  cutout manifest's format plus a ``mask`` column: synthesis pastes the patch into empty-room
  canvases with the product's mask as the sample's (:func:`segsynth.synth.engine.make_context_sample`);
- ``ROUND/accepted/contact_sheet.jpg``: the accepted masks at a glance (each photo with the
  background dimmed and the mask's outline, its category under it);
- ``ROUND/harvest.json``: counts, and ``automatic: true`` when the answers came from the
  auto-accept policy rather than people.
"""
from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from segsynth import io
from segsynth.active.config import ActiveConfig, HarvestConfig
from segsynth.active.review import MODEL_CANDIDATE
from segsynth.cutouts.manifest import MANIFEST, MANIFEST_SCHEMA
from segsynth.review.export import export
from segsynth.review.store import Store
from segsynth.sheet import grid, outline
from segsynth.synth.library import CONTEXT_MASK

log = logging.getLogger(__name__)

CONTEXT_SCHEMA = MANIFEST_SCHEMA.append(pa.field(CONTEXT_MASK, pa.binary()))


def context_cutout(rgb: np.ndarray, mask: np.ndarray, margin: float = 0.25, feather: float = 0.08
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The product with its surroundings: ``rgb (H, W, 3) uint8``, ``mask (H, W) uint8`` ->
    (``rgba (h, w, 4) uint8`` whose alpha fades to 0 over ``feather`` of the patch's shorter side
    at its edges and is 255 on the product, ``mask (h, w) uint8``), or None for an empty mask.
    The patch is the mask's box grown by ``margin`` times its longer side, within the photo."""
    ys, xs = np.nonzero(mask >= 128)
    if ys.size == 0:
        return None
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    grow = round(margin * max(y1 - y0, x1 - x0))
    h, w = mask.shape
    y0, y1, x0, x1 = max(0, y0 - grow), min(h, y1 + grow), max(0, x0 - grow), min(w, x1 + grow)
    patch, pmask = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    ph, pw = pmask.shape
    fade = max(1.0, feather * min(ph, pw))
    yy = np.minimum(np.arange(ph), np.arange(ph)[::-1])[:, None] + 0.5
    xx = np.minimum(np.arange(pw), np.arange(pw)[::-1])[None, :] + 0.5
    edge = np.clip(np.minimum(yy, xx) / fade, 0.0, 1.0)
    alpha = np.maximum((edge * 255.0 + 0.5).astype(np.uint8), pmask)  # the product itself stays opaque
    return np.dstack([patch, alpha]).astype(np.uint8), np.ascontiguousarray(pmask)


def _copy_labelled(src: Path, dest: Path, stems: list[str], cats: dict[str, str]) -> int:
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(parents=True, exist_ok=True)
    images = {io.stem(p): p for p in io.list_files(str(src / "images"), io.IMAGE_EXTS)} if (src / "images").is_dir() else {}
    rows = []
    for stem in stems:
        shutil.copyfile(images[stem], dest / "images" / Path(images[stem]).name)
        shutil.copyfile(src / "masks" / f"{stem}.png", dest / "masks" / f"{stem}.png")
        rows.append((stem, cats.get(stem, "unknown")))
    with open(dest / "categories.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stem", "category"])
        w.writerows(rows)
    return len(rows)


def write_context(labelled: str, out: str, hcfg: HarvestConfig, source: str, categories: dict[str, str]) -> int:
    """Context cutouts of every pair of the labelled folder -> ``out/manifest.parquet``."""
    rows = []
    for it in io.labelled_folder(labelled):
        try:
            rgb, mask = io.read_image(it["image"]), io.read_mask(it["mask"])
        except (io.ImageDecodeError, OSError) as e:
            log.warning("harvest: %s skipped: %s", it["stem"], e)
            continue
        if mask.shape != rgb.shape[:2]:
            mask = cv2.resize(mask, rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        got = context_cutout(rgb, mask, hcfg.context_margin, hcfg.context_feather)
        if got is None:
            continue
        rgba, pmask = got
        rows.append({"cutout_id": f"{source}/{it['stem']}@context", "category": categories.get(it["stem"], "unknown"),
                     "source": source, "source_kind": "context", "width": int(rgba.shape[1]),
                     "height": int(rgba.shape[0]), "quality": 1.0, "rgba": io.encode_png(rgba),
                     "border_white": float("nan"), CONTEXT_MASK: io.encode_png(pmask)})
    io.write_parquet(pa.Table.from_pylist(rows, schema=CONTEXT_SCHEMA), io.join(out, MANIFEST))
    return len(rows)


def contact_sheet(folder: str, path: str, columns: int = 8, tile: int = 160, limit: int = 64) -> str | None:
    """A labelled ``folder``'s photos with their masks (background dimmed to a third, the mask's
    outline in green), ``columns`` per row, the category under each; None when it is empty."""
    images = {io.stem(p): p for p in io.list_files(io.join(folder, "images"), io.IMAGE_EXTS)} \
        if io.exists(io.join(folder, "images")) else {}
    stems = sorted(images)[:limit]
    if not stems:
        return None
    cats = io.read_categories(io.join(folder, "categories.csv")) if io.exists(io.join(folder, "categories.csv")) else {}
    label_h = 18
    cells = []
    for stem in stems:
        rgb = io.read_image(images[stem])
        mask = io.read_mask(io.join(folder, "masks", f"{stem}.png"))
        if mask.shape != rgb.shape[:2]:
            mask = cv2.resize(mask, rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        scale = tile / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        m = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        weight = m.astype(np.float32)[..., None] / 255.0
        view = outline((small * (weight + (1.0 - weight) / 3.0)).astype(np.uint8), m, (0, 220, 0), 2)
        cell = np.full((tile + label_h, tile, 3), 255, np.uint8)
        cell[:size[1], :size[0]] = view
        cv2.putText(cell, str(cats.get(stem, ""))[:20], (2, tile + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cells.append(cell)
    sheet = grid(cells, columns, fill=255)
    io.write_bytes(path, io.encode_jpeg(sheet, quality=85))
    return path


def _chosen_candidates(path: Path) -> dict[str, str]:
    """stem -> the accepted candidate's name, from the export's ``categories.csv``."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["stem"]: r.get("candidate", "") for r in csv.DictReader(f)}


def harvest(cfg: ActiveConfig, round_dir: str) -> dict:
    """Export the round's review task and write accepted/, control/, context/ and harvest.json."""
    rd = Path(round_dir)
    task = rd / "review"
    io.require_input(str(task), "round's review task (run `segsynth active select` first)", "folder")
    queue = {r["stem"]: r for r in io.read_parquet(str(rd / "queue.parquet")).to_pylist()}
    for name in ("export", "accepted", "control", "context"):
        if (rd / name).exists():
            shutil.rmtree(rd / name)  # a harvest is re-run whole: more answers, another policy
    summary_export = export(str(task), str(rd / "export"))
    answers = Store(str(task)).answers()
    auto = bool(answers) and all(a["annotator"] == cfg.auto_accept.annotator for a in answers)
    accepted = [io.stem(p) for p in io.list_files(str(rd / "export" / "masks"), io.IMAGE_EXTS)] \
        if (rd / "export" / "masks").is_dir() else []
    cats = {s: (queue[s]["selected_for"] or queue[s]["category"] or "unknown") for s in queue}
    selected = sorted(s for s in accepted if queue.get(s, {}).get("slice") == "selected")
    control = sorted(s for s in accepted if queue.get(s, {}).get("slice") == "control")
    n_sel = _copy_labelled(rd / "export", rd / "accepted", selected, cats)
    n_ctl = _copy_labelled(rd / "export", rd / "control", control, cats)
    n_ctx = write_context(str(rd / "accepted"), str(rd / "context"), cfg.harvest, f"active-{rd.name}", cats) \
        if cfg.harvest.context and n_sel else 0
    sheet = contact_sheet(str(rd / "accepted"), str(rd / "accepted" / "contact_sheet.jpg")) if n_sel else None
    per_slice = {s: sum(1 for q in queue.values() if q["slice"] == s) for s in ("selected", "control")}
    chosen = _chosen_candidates(rd / "export" / "categories.csv")
    model_chosen = {sl: sum(1 for st in stems if chosen.get(st) == MODEL_CANDIDATE)
                    for sl, stems in (("selected", selected), ("control", control))}
    summary = {"round": rd.name, "automatic": auto, "annotators": sorted({a["annotator"] for a in answers}),
               "queued": per_slice, "accepted": n_sel, "accepted_control": n_ctl, "context_cutouts": n_ctx,
               "acceptance_rate": {s: (n / per_slice[s] if per_slice[s] else None)
                                   for s, n in (("selected", n_sel), ("control", n_ctl))},
               "accepted_by": json.loads((rd / "auto_accept.json").read_text()) if auto and (rd / "auto_accept.json").is_file() else {},
               "contact_sheet": sheet,
               "model_mask_chosen": model_chosen,  # accepted photos whose accepted mask is the current model's
               "answers": summary_export["answers"],
               "note": ("AUTOMATIC: masks were accepted by the auto-accept policy, not by people"
                        if auto else "masks accepted by people in the review app")}
    (rd / "harvest.json").write_text(json.dumps(summary, indent=2))
    return summary
