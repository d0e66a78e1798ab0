"""``segsynth eval``: models on a labelled folder -> per-sample metrics and a report.

    segsynth eval --config configs/eval.yaml                       # DIS on the ECSSD dev pairs
    segsynth eval --config configs/demo/eval.yaml limit=5          # the demo model vs white threshold

Prediction and the per-sample metrics run in Ray Data, one actor pool per model (each actor
loads its model once in ``__init__``). The driver writes:

- ``OUT/samples.parquet``: one row per (model, item): ``model, stem (str), category, bg_kind,
  height, width, predict_ms``, every metric of :data:`segsynth.metrics.METRICS` and
  ``f_curve`` (256 floats, for the dataset-level max F);
- ``OUT/predictions/<model>/<stem>.png``: each soft prediction, 8-bit;
- ``OUT/report/``: the report (Markdown, HTML, PNGs, CSVs, the config and command);
- ``OUT/config.yaml`` (resolved config) and ``OUT/summary.json``.

``bg_kind`` comes from a ``bg_kind`` column of ``categories.csv`` when there is one; otherwise it
is estimated from the image's pixels outside the (dilated) truth: ``white`` (>= 90% near-white,
like catalog photos), ``plain`` (low variation) or ``scene``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segsynth import io
from segsynth import metrics as M
from segsynth.config import ConfigError, save_config, to_dict

log = logging.getLogger(__name__)

MODEL_KINDS = ("checkpoint", "onnx", "onnx-isnet", "onnx-u2net", "white-threshold")


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: a display ``name``, a predictor ``kind`` and its ``path``.

    ``options`` go to ``segsynth.infer.load_predictor`` (e.g. ``{threads: 2}`` for ONNX, the
    white-background options for ``white-threshold``).
    """

    name: str
    kind: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def check_inputs(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"models: {self.name!r} has kind {self.kind!r}; valid kinds: {', '.join(MODEL_KINDS)}")
        if self.kind != "white-threshold" and not self.path:
            raise ConfigError(f"models: {self.name!r} (kind {self.kind}) needs a path: a checkpoint folder or .onnx file")
        if not self.name or "/" in self.name:
            raise ConfigError(f"models: name {self.name!r} must be non-empty and contain no '/' (it names a folder)")


@dataclass(frozen=True)
class EvalConfig:
    data: str = "demo_kit/eval"  # a labelled folder: images/, masks/, optional categories.csv
    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec(name="white-threshold", kind="white-threshold")])
    out: str = "outputs/eval"
    threshold: float = 0.5  # binarises predictions for IoU, accuracy and boundary IoU
    ssim_margin: int = 0  # pixels added around the truth's box before SSIM (0: the method's crop)
    workers: int = 1  # actors per model
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # e.g. 1 for checkpoints on a GPU cluster
    batch_size: int = 4  # items per actor call
    gallery_size: int = 8  # worst cases shown per model
    gallery_metric: str = "ssim_box"  # the metric that ranks the worst cases
    preferences: str | None = None  # CSV of human choices (item, annotator, choice)
    limit: int | None = None  # evaluate only the first N items (by stem)
    stems: str | None = None  # numbered items in ranges, e.g. "51-100" (ECSSD 0051..0100); None: all
    interval: str = "bootstrap"  # 95% interval of the means: bootstrap or t

    def check_inputs(self) -> None:
        if not self.models:
            raise ConfigError("models: give at least one model, e.g. [{name: white, kind: white-threshold}]")
        for spec in self.models:
            spec.check_inputs()
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"models: names must be unique; {dupes[0]!r} appears twice")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must lie strictly between 0 and 1, got {self.threshold}")
        if self.ssim_margin < 0:
            raise ConfigError(f"ssim_margin must be >= 0 pixels, got {self.ssim_margin}")
        if self.workers < 1 or self.batch_size < 1:
            raise ConfigError("workers and batch_size must be >= 1")
        if self.gallery_metric not in M.METRICS:
            raise ConfigError(f"gallery_metric {self.gallery_metric!r} is not a metric; valid: {', '.join(M.METRICS)}")
        if self.interval not in ("bootstrap", "t"):
            raise ConfigError(f"interval must be 'bootstrap' or 't', got {self.interval!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or null for all items), got {self.limit}")


# ---------------------------------------------------------------- items and per-item work
def eval_items(data: str, limit: int | None = None, stems: str | None = None) -> list[dict]:
    """Items ``{stem, image, mask, category, bg_kind}`` of a labelled folder (paths)."""
    if not io.exists(io.join(data, "images")) or not io.exists(io.join(data, "masks")):
        raise ConfigError(f"data: {data} is not a labelled folder; it needs images/ and masks/ "
                          "(build one with segsynth.evalset.build_test_set)")
    try:
        items = io.labelled_folder(data, stems)
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
        from segsynth.infer import load_predictor

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


def _predict_with_ray(cfg: EvalConfig, items: list[dict], address: str | None) -> list[dict]:
    from segsynth.pipeline.ray_env import init_ray

    ray = init_ray(address)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    rows: list[dict] = []
    for spec in cfg.models:  # one actor pool per model; pools run one after the other
        log.info("evaluating %s (%s) on %d items with %d actor(s)", spec.name, spec.kind, len(items), cfg.workers)
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), cfg.workers * 4)))
        ds = ds.map_batches(
            PredictBatch,
            fn_constructor_kwargs={"spec": to_dict(spec), "threshold": cfg.threshold, "ssim_margin": cfg.ssim_margin},
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(size=cfg.workers),
            num_cpus=cfg.cpus_per_worker,
            num_gpus=cfg.gpus_per_worker or None,
        )
        step = max(len(items) // 4, 1)
        for done, r in enumerate(ds.iter_rows(), 1):
            r = dict(r)
            if r.get("f_curve") is not None:
                r["f_curve"] = np.asarray(r["f_curve"], np.float32).tolist()
            rows.append(r)
            if done % step == 0 or done == len(items):
                log.info("%s: %d/%d items measured", spec.name, done, len(items))
    return rows


def run(cfg: EvalConfig, address: str | None = None, command: str | None = None) -> dict:
    """Evaluate ``cfg.models`` on ``cfg.data``; write samples, predictions and the report.

    Returns a small summary: ``{out, items, skipped, report, models: {name: {metric: mean}}}``.
    """
    from segsynth import report as R

    items = eval_items(cfg.data, cfg.limit, cfg.stems)
    io.makedirs(cfg.out)
    save_config(cfg, cfg.out)
    rows = _predict_with_ray(cfg, items, address)

    good, skipped = [], {}
    cards: dict[str, Any] = {}
    for r in rows:
        if r.get("card"):
            cards.setdefault(r["model"], json.loads(r["card"]))
        if r.get("error"):
            skipped.setdefault(r["model"], []).append({"stem": r["stem"], "error": r["error"]})
            continue
        io.write_bytes(io.join(cfg.out, "predictions", r["model"], f"{r['stem']}.png"), r["pred_png"])
        good.append({k: r.get(k) for k in SAMPLE_COLUMNS})
    order = {m.name: i for i, m in enumerate(cfg.models)}
    good.sort(key=lambda r: (order[r["model"]], r["stem"]))
    io.write_parquet(samples_table(good), io.join(cfg.out, "samples.parquet"))
    for model, errs in skipped.items():
        log.warning("%s: %d item(s) skipped (first: %s: %s)", model, len(errs), errs[0]["stem"], errs[0]["error"])

    prefs = R.load_preferences(cfg.preferences) if cfg.preferences else None
    if command is None:
        command = shlex.join(["segsynth" if Path(sys.argv[0]).name == "segsynth" else Path(sys.argv[0]).name,
                              *sys.argv[1:]])
    report_dir = R.write_report(
        io.join(cfg.out, "report"), good, items=items, models=[m.name for m in cfg.models],
        predictions=io.join(cfg.out, "predictions"), config=to_dict(cfg), command=command, cards=cards,
        gallery_size=cfg.gallery_size, gallery_metric=cfg.gallery_metric, preferences=prefs,
        interval=cfg.interval, skipped=skipped)
    overall = M.summarize(good, by=["model"], method=cfg.interval)
    summary = {
        "out": cfg.out,
        "data": cfg.data,
        "items": len(items),
        "skipped": {m: len(v) for m, v in skipped.items()},
        "report": report_dir,
        "models": {r["model"]: {k: r[k] for k in ["n", *M.METRICS, "max_f_dataset"] if k in r} for r in overall},
    }
    io.write_bytes(io.join(cfg.out, "summary.json"), json.dumps(summary, indent=2, default=float).encode())
    log.info("evaluation written to %s (report: %s)", cfg.out, report_dir)
    return summary


def with_overrides(cfg: EvalConfig, **changes) -> EvalConfig:
    """A copy of ``cfg`` with fields replaced (validated again)."""
    new = dataclasses.replace(cfg, **changes)
    new.check_inputs()
    return new
