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

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from segsynth import console, io
from segsynth import metrics as M
from segsynth.config import save_config, to_dict
from segsynth.evaluate.config import EvalConfig
from segsynth.evaluate.score import SAMPLE_COLUMNS, PredictBatch, eval_items, samples_table

log = logging.getLogger(__name__)


def _predict_with_ray(cfg: EvalConfig, items: list[dict], address: str | None) -> list[dict]:
    from segsynth.ray_env import init_ray

    ray = init_ray(address)
    rows: list[dict] = []
    for spec in cfg.models:  # one actor pool per model; pools run one after the other
        log.debug("evaluating %s (%s) on %d items with %d actor(s)", spec.name, spec.kind, len(items), cfg.workers)
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), cfg.workers * 4)))
        ds = ds.map_batches(
            PredictBatch,
            fn_constructor_kwargs={"spec": to_dict(spec), "threshold": cfg.threshold, "ssim_margin": cfg.ssim_margin},
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(size=cfg.workers),
            num_cpus=cfg.cpus_per_worker,
            num_gpus=cfg.gpus_per_worker or None,
        )
        for r in console.progress(ds.iter_rows(), total=len(items), desc=f"eval {spec.name}", unit="images"):
            r = dict(r)
            if r.get("f_curve") is not None:
                r["f_curve"] = np.asarray(r["f_curve"], np.float32).tolist()
            rows.append(r)
    return rows


def run(cfg: EvalConfig, address: str | None = None, command: str | None = None) -> dict:
    """Evaluate ``cfg.models`` on ``cfg.data``; write samples, predictions and the report.

    Returns a small summary: ``{out, items, skipped, report, models: {name: {metric: mean}}}``.
    """
    from segsynth.evaluate import report as R

    io.require_input(cfg.data, "data", "folder")  # before Ray starts: a wrong path fails in a second
    for i, spec in enumerate(cfg.models):
        if spec.path:
            io.require_input(spec.path, f"models[{i}].path ({spec.name})")
    if cfg.preferences:
        io.require_input(cfg.preferences, "preferences")  # a CSV/parquet/jsonl file or a review task folder
    io.require_output(cfg.out)
    items = eval_items(cfg.data, cfg.limit, cfg.stems, cfg.split.half if cfg.split else None)
    io.mark_incomplete(cfg.out)
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
    io.mark_complete(cfg.out, summary, default=float)
    log.debug("evaluation written to %s (report: %s)", cfg.out, report_dir)
    return summary
