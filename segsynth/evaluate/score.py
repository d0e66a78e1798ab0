"""Scoring without Ray: the items of a labelled folder, one model's prediction and metrics per
item (:class:`PredictBatch`, a ``map_batches`` callable), and the per-sample table."""
from __future__ import annotations

import json
import logging
import time

import numpy as np

from segsynth import io
from segsynth import metrics as M
from segsynth.config import ConfigError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- items and per-item work
def eval_items(data: str, limit: int | None = None, stems: str | None = None, half: str | None = None) -> list[dict]:
    """Items ``{stem, image, mask, category, bg_kind}`` of a labelled folder (paths)."""
    if not io.exists(io.join(data, "images")) or not io.exists(io.join(data, "masks")):
        raise ConfigError(f"data: {data} is not a labelled folder; it needs images/ and masks/ "
                          "(build one with segsynth.evaluate.evalset.build_test_set)")
    try:
        items = io.labelled_folder(data, stems, half)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cats = io.join(data, "categories.csv")
    bg = {}
    if io.exists(cats):
        try:
            bg = io.read_categories(cats, value="bg_kind")
        except ValueError:  # no bg_kind column: estimate it from the pixels
            bg = {}
    for it in items:
        it["bg_kind"] = bg.get(it["stem"], "")
    if limit:
        items = items[:limit]
    if not items:
        raise ConfigError(f"data: {data} holds no image with a mask")
    return items


def estimate_bg_kind(image: np.ndarray, truth: np.ndarray) -> str:
    """``white``, ``plain`` or ``scene`` from the pixels away from the object.

    ``image (H, W, 3) uint8``, ``truth (H, W)`` mask; pixels within 2% of the diagonal of the
    object are ignored (anti-aliased edges, shadows).
    """
    import cv2

    g = M.as_truth(truth).astype(np.uint8)
    r = max(int(0.02 * np.hypot(*g.shape)), 1)
    near = cv2.dilate(g, np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
    bg = image[~near]
    if bg.shape[0] < 16:
        return "scene"
    if np.mean(bg.min(axis=1) >= 235) >= 0.9:
        return "white"
    if float(bg.astype(np.float32).std(axis=0).mean()) < 12.0:
        return "plain"
    return "scene"


def evaluate_item(predictor, item: dict, model: str, threshold: float = 0.5, ssim_margin: int = 0) -> dict:
    """Predict one item and measure it -> a samples row (plus ``pred_png`` bytes).

    Raises ``io.ImageDecodeError`` for an unreadable file and ``ValueError`` when the mask and
    the image differ in size; :class:`PredictBatch` counts such items and goes on.
    """
    image = io.read_image(item["image"])
    truth = io.read_mask(item["mask"])
    if truth.shape != image.shape[:2]:
        raise ValueError(f"{item['mask']}: mask is {truth.shape[1]}x{truth.shape[0]} but its image is "
                         f"{image.shape[1]}x{image.shape[0]}; masks must match their images")
    t0 = time.perf_counter()
    pred = predictor.predict([image])[0]
    ms = (time.perf_counter() - t0) * 1000.0
    row = {"model": model, "stem": str(item["stem"]), "category": str(item.get("category") or "unknown"),
           "bg_kind": str(item.get("bg_kind") or estimate_bg_kind(image, truth)),
           "height": int(image.shape[0]), "width": int(image.shape[1]), "predict_ms": ms}
    row.update(M.sample_metrics(pred, truth, threshold=threshold, ssim_margin=ssim_margin, curves=True))
    row["pred_png"] = io.encode_png(np.clip(np.rint(np.asarray(pred, np.float32) * 255), 0, 255).astype(np.uint8))
    return row


class PredictBatch:
    """Ray Data callable class: loads one model in ``__init__``, measures a batch of items."""

    def __init__(self, spec: dict, threshold: float, ssim_margin: int):
        from segsynth.predict import load_predictor

        self.spec = spec
        self.predictor = load_predictor(spec.get("path"), kind=spec["kind"], **(spec.get("options") or {}))
        self.threshold, self.ssim_margin = threshold, ssim_margin
        self.card = json.dumps(self.predictor.card, default=str)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = []
        keys = list(batch)
        for i in range(len(batch["stem"])):
            item = {k: batch[k][i] for k in keys}
            try:
                row = evaluate_item(self.predictor, item, self.spec["name"], self.threshold, self.ssim_margin)
                row["error"] = ""
            except (io.ImageDecodeError, ValueError, OSError) as e:  # one bad pair never kills the job
                log.warning("model %s, item %s skipped: %s", self.spec["name"], item["stem"], e)
                row = {"model": self.spec["name"], "stem": str(item["stem"]), "error": str(e)}
            row["card"] = self.card
            rows.append(row)
        return _columns(rows)


_ROW_DEFAULTS = {"category": "", "bg_kind": "", "height": 0, "width": 0, "predict_ms": float("nan"),
                 "f_curve": None, "pred_png": b""}


def _columns(rows: list[dict]) -> dict[str, list]:
    keys = ["model", "stem", *_ROW_DEFAULTS, *M.METRICS, "error", "card"]
    out = {k: [] for k in keys}
    for r in rows:
        for k in keys:
            default = float("nan") if k in M.METRICS else _ROW_DEFAULTS.get(k, "")
            v = r.get(k, default)
            if k == "f_curve":
                v = np.asarray(v if v is not None else np.full(M.N_THRESHOLDS, np.nan), np.float32)
            out[k].append(v)
    out["f_curve"] = np.stack(out["f_curve"]) if out["f_curve"] else np.zeros((0, M.N_THRESHOLDS), np.float32)
    return out


# ---------------------------------------------------------------- the stage
SAMPLE_COLUMNS = ["model", "stem", "category", "bg_kind", "height", "width", "predict_ms", *M.METRICS, "f_curve"]


def samples_table(rows: list[dict]):
    """Rows -> the ``samples.parquet`` table (``stem`` stays a string)."""
    import pyarrow as pa

    fields = [pa.field("model", pa.string()), pa.field("stem", pa.string()), pa.field("category", pa.string()),
              pa.field("bg_kind", pa.string()), pa.field("height", pa.int32()), pa.field("width", pa.int32()),
              pa.field("predict_ms", pa.float64())]
    fields += [pa.field(m, pa.float64()) for m in M.METRICS]
    fields.append(pa.field("f_curve", pa.list_(pa.float32())))
    schema = pa.schema(fields)
    cols = {f.name: [r.get(f.name) for r in rows] for f in fields}
    cols["f_curve"] = [None if v is None else [float(x) for x in v] for v in cols["f_curve"]]
    return pa.Table.from_pydict(cols, schema=schema)
