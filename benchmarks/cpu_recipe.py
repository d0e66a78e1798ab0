"""The CPU recipe's model against DIS (and other checkpoints) on the real dev pairs not used for
selection, its training wall time, and CPU latency per image: the "CPU recipe" section.

    segsynth demo --config configs/cpu/recipe.yaml                  # makes outputs/cpu (~1.5 h)
    python benchmarks/cpu_recipe.py --write                           # reads it, measures latency
    python benchmarks/cpu_recipe.py --write --also demo=outputs/demo/train/best

Accuracy comes from the recipe's own evaluation folders (``outputs/cpu/eval/*/samples.parquet``,
written by ``segsynth eval``); ``--also NAME=CHECKPOINT`` evaluates more models on the same
items here (e.g. the demo model). Latency: the recipe's ONNX export and DIS through their
predictors, one image at a time, 2 threads, on the same photos in one run (ms per image and the
ratio). Every sentence written to BENCHMARKS.md is built from this run's numbers.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _sections import write_section  # noqa: E402

from segsynth import io  # noqa: E402
from segsynth import metrics as M  # noqa: E402

log = logging.getLogger("cpu_recipe")
HEADING = "## CPU recipe"
TARGETS = {"ecssd": 0.72, "pascal": 0.58}  # IoU on the pairs not used for selection (the targets)


def _eval_sets(out: Path) -> list[tuple[str, Path]]:
    sets = sorted(p for p in (out / "eval").iterdir() if (p / "samples.parquet").is_file()) if (out / "eval").is_dir() else []
    if not sets:
        raise SystemExit(f"{out}/eval holds no evaluation: run `segsynth demo --config configs/cpu/recipe.yaml` first")
    return [(p.name, p) for p in sets]


def _also(sets: list[tuple[str, Path]], extra: dict[str, str]) -> dict[str, list[dict]]:
    """Per set, rows of the extra models, evaluated on the same items as the recipe's run."""
    from segsynth.config import load_config
    from segsynth.pipeline.evaluate import EvalConfig, run

    rows: dict[str, list[dict]] = {}
    for name, folder in sets:
        base = load_config(EvalConfig, str(folder / "config.yaml"))
        models = "[" + ", ".join(f"{{name: {n}, kind: checkpoint, path: '{p}', options: {{threads: 2}}}}"
                                 for n, p in extra.items()) + "]"
        out = REPO / "outputs" / "bench" / "cpu_recipe" / name
        cfg = load_config(EvalConfig, str(folder / "config.yaml"), [f"models={models}", f"out={out}", "gallery_size=0"])
        assert cfg.data == base.data and cfg.stems == base.stems
        run(cfg)
        rows[name] = io.read_parquet(str(out / "samples.parquet")).to_pylist()
    return rows


def _latency(onnx: Path, dis: Path, images: list[np.ndarray], repeats: int = 1) -> dict[str, float]:
    from segsynth.infer import load_predictor

    out = {}
    for name, path, kind in (("segsynth-cpu", onnx, None), ("dis", dis, "onnx-isnet")):
        pred = load_predictor(str(path), kind, threads=2)
        pred.predict_one(images[0])  # warm-up: session start, first allocation
        times = []
        for _ in range(repeats):
            for im in images:
                t0 = time.perf_counter()
                pred.predict_one(im)
                times.append(time.perf_counter() - t0)
        out[name] = 1000 * float(np.median(times))
    return out


def gallery(onnx: Path, scenes: Path, share: float, out: Path, n: int = 6, tile: int = 256) -> list[str]:
    """A grid of the recipe model's cutouts on furnished room photos synthesis never used
    (``segsynth.synth.split_scenes``' unseen side): photo | cutout on a checkerboard. Returns the
    photos' ids."""
    import cv2

    from segsynth.infer import load_predictor
    from segsynth.synth import load_backgrounds, split_scenes

    photos, _ = load_backgrounds([str(scenes)])
    _, unseen = split_scenes(photos, share)
    chosen = unseen[:: max(1, len(unseen) // n)][:n]
    pred = load_predictor(str(onnx), threads=2)
    yy, xx = np.mgrid[:tile, :tile]
    rows = []
    for bg in chosen:
        h, w = bg.rgb.shape[:2]
        th = round(tile * h / w)
        rgb = cv2.resize(bg.rgb, (tile, th), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(pred.predict_one(bg.rgb), (tile, th), interpolation=cv2.INTER_AREA)[:, :, None]
        board = np.where(((yy[:th] // 16 + xx[:th] // 16) % 2)[:, :, None] == 0, 235, 190).astype(np.float32)
        cut = (rgb * alpha + board * (1 - alpha)).astype(np.uint8)
        rows.append(np.hstack([rgb, np.full((th, 4, 3), 255, np.uint8), cut]))
    width = rows[0].shape[1]
    grid = np.vstack([np.vstack([r, np.full((4, width, 3), 255, np.uint8)]) for r in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(io.encode_jpeg(grid, 85))
    return [bg.bg_id for bg in chosen]


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "outputs" / "cpu"), help="the recipe's output folder")
    ap.add_argument("--dis", default=str(REPO.parent / "shared" / "models" / "isnet-general-fp16.onnx"))
    ap.add_argument("--also", action="append", default=[], metavar="NAME=CHECKPOINT",
                    help="evaluate another checkpoint on the same items (e.g. demo=outputs/demo/train/best)")
    ap.add_argument("--latency-images", type=int, default=20)
    ap.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    ap.add_argument("--gallery", default=None, metavar="JPG", help="also write a gallery of cutouts on unseen room photos")
    ap.add_argument("--scenes", default=str(REPO.parent / "shared" / "data" / "scenes" / "ikea_rooms" / "images"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    sets = _eval_sets(out)
    extra = dict(a.split("=", 1) for a in args.also)
    extra_rows = _also(sets, extra) if extra else {}

    table, by_set = [], {}
    for name, folder in sets:
        rows = io.read_parquet(str(folder / "samples.parquet")).to_pylist() + extra_rows.get(name, [])
        for r in M.summarize([{k: v for k, v in r.items() if k != "f_curve" or v is not None} for r in rows
                              if r.get("error") in (None, "")], by=("model",)):
            r["set"] = name
            table.append(r)
            by_set.setdefault(name, {})[r["model"]] = r
        log.info("%s: %s", name, {m: round(r["iou"], 3) for m, r in by_set[name].items()})

    train = json.loads((out / "train" / "summary.json").read_text())
    metrics_rows = list(csv.DictReader((out / "train" / "metrics.csv").open()))
    best = [r for r in metrics_rows if r.get("best") == "True"]
    samples_s = [float(r["samples_per_s"]) for r in metrics_rows if r.get("samples_per_s")]
    train_cfg = (out / "train" / "config.yaml").read_text()

    first_set = sets[0][1]
    from segsynth.config import load_config
    from segsynth.pipeline.evaluate import EvalConfig, eval_items

    ecfg = load_config(EvalConfig, str(first_set / "config.yaml"))
    photos = [io.read_image(it["image"]) for it in eval_items(ecfg.data, None, ecfg.stems)[:args.latency_images]]
    onnx = out / "model.onnx"
    lat = _latency(onnx, Path(args.dis), photos)

    lines = [HEADING, "",
             f"`segsynth demo --config configs/cpu/recipe.yaml`, then `python benchmarks/cpu_recipe.py --write"
             + "".join(f" --also {a}" for a in args.also) + (f" --gallery {args.gallery}" if args.gallery else "")
             + f"` ({time.strftime('%Y-%m-%d')}; 2 cores, no GPU, no model hub)."
             + "".join(f" `{n}` is the checkpoint `{p}`, evaluated here on the same items." for n, p in extra.items()),
             "",
             "The recipe: cutouts of the whole shared IKEA catalog, synthesis at 320 px (`configs/cpu/synth.yaml`), "
             "FPN + `tu-tf_efficientnet_lite2` from the packaged ImageNet weights trained on it (`configs/cpu/train.yaml`), "
             "`best/` selected on ECSSD dev 0001-0050; reported below on the pairs not used for selection: "
             "ECSSD dev 0051-0100 and PASCAL-S dev 1-100. Means with 95% bootstrap intervals.",
             "",
             "| set | model | n | SSIM (box) | IoU | MAE | max F |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['set']} | {r['model']} | {r['n']} | {_fmt(r['ssim_box'])} [{_fmt(r['ssim_box_lo'])}, {_fmt(r['ssim_box_hi'])}] "
                     f"| {_fmt(r['iou'])} [{_fmt(r['iou_lo'])}, {_fmt(r['iou_hi'])}] | {_fmt(r['mae'])} "
                     f"| {_fmt(r.get('max_f_dataset', r.get('max_f', float('nan'))))} |")
    lines.append("")
    for name, models in by_set.items():
        ours = models.get("segsynth-cpu")
        if ours is None:
            continue
        target = next((t for key, t in TARGETS.items() if key in name), None)
        dis = models.get("dis")
        verdict = "" if target is None else (f"target IoU >= {target}: **met**" if ours["iou"] >= target
                                            else f"target IoU >= {target}: **missed** by {target - ours['iou']:.3f}")
        vs = "" if dis is None else (f"; DIS {_fmt(dis['iou'])} IoU, SSIM (box) {_fmt(dis['ssim_box'])} against ours "
                                     f"{_fmt(ours['ssim_box'])}")
        lines.append(f"- {name}: IoU {_fmt(ours['iou'])} ({verdict}){vs}.")
    lines += ["",
              f"Training: {train.get('steps')} steps of batch 8 in {train.get('fit_wall_s', float('nan')) / 60:.1f} min of "
              f"`trainer.fit()` wall time (workers' start, data, steps, validation every "
              f"{_yaml_value(train_cfg, 'val_every_steps')} steps and checkpoints), "
              f"{np.mean(samples_s) if samples_s else float('nan'):.2f} samples/s during the steps; `best/` is step "
              f"{train.get('best_step')} (by {train.get('select_on')} on {train.get('selected_on')}, "
              f"normalisation `{train.get('normalization')}`)"
              + (f", its ECSSD 0001-0050 SSIM (box) {float(best[-1].get('val_ecssd_1-50_ssim_box') or 'nan'):.3f}, "
                 f"IoU {float(best[-1].get('val_ecssd_1-50_iou') or 'nan'):.3f}" if best else "") + ".",
              "",
              f"CPU latency per image (median of {len(photos)} ECSSD photos, one at a time, 2 ONNX Runtime threads, "
              f"letterbox + network + resize back): ours at 320 px {lat['segsynth-cpu']:.0f} ms, DIS at 1024 px "
              f"{lat['dis']:.0f} ms: {lat['dis'] / lat['segsynth-cpu']:.1f}x faster."]
    import torch

    if not torch.cuda.is_available():  # the recipe at 512 px with AMP needs a GPU run of its own
        lines += ["", "GPU (the recipe at 512 px with AMP): not measured, this run had no GPU "
                      "(on one: `segsynth train --config configs/cpu/train.yaml use_gpu=true amp=bf16 size=512 time_budget_min=null`)."]
    if args.gallery:
        import yaml

        share = float((yaml.safe_load((out / "synth" / "config.yaml").read_text()) or {}).get("scene_share", 1.0))
        ids = gallery(onnx, Path(args.scenes), share, Path(args.gallery))
        log.info("gallery %s: %s", args.gallery, ids)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.write:
        write_section(REPO / "BENCHMARKS.md", HEADING, text)
    return 0


def _yaml_value(text: str, key: str) -> str:
    import yaml

    return str((yaml.safe_load(text) or {}).get(key))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
