"""The CPU recipe's model against DIS (and other checkpoints) on the real dev pairs not used for
selection, its training wall time, and CPU latency per image: the "CPU recipe" section.

    segsynth demo --config configs/cpu/recipe.yaml                  # makes outputs/cpu (~1.5 h)
    python benchmarks/cpu_recipe.py --write                           # reads it, measures latency
    python benchmarks/cpu_recipe.py --write --also demo=outputs/demo/train/best

Accuracy comes from the recipe's own evaluation folders (``outputs/cpu/eval/*/samples.parquet``,
written by ``segsynth eval``); ``--also NAME=CHECKPOINT`` evaluates more models on the same
items here (e.g. the demo model). Latency: the recipe's ONNX export and DIS through their
predictors, one image at a time, 2 threads, on the same photos in one run (ms per image and the
ratio). Every sentence written to BENCHMARKS.md is built by :func:`section` from this run's
results (saved to ``--results``; ``--render JSON`` re-renders a saved run without measuring).
"""
from __future__ import annotations

import argparse
import csv
import itertools
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

log = logging.getLogger("cpu_recipe")
HEADING = "## CPU recipe"
OURS = "segsynth-cpu"  # the recipe's model in its evaluation config
# IoU on the pairs not used for selection (issue 21): a number, or "dis" for DIS's IoU on the same photos
TARGETS = {"furniture": "dis", "ecssd": 0.72, "pascal": 0.55}
INTERVAL = 0.95  # bootstrap interval level
LATENCY_THREADS = 2


def _eval_sets(out: Path) -> list[tuple[str, Path]]:
    sets = sorted(p for p in (out / "eval").iterdir() if (p / "samples.parquet").is_file()) if (out / "eval").is_dir() else []
    if not sets:
        raise SystemExit(f"{out}/eval holds no evaluation: run `segsynth demo --config configs/cpu/recipe.yaml` first")
    return [(p.name, p) for p in sets]


def _also(sets: list[tuple[str, Path]], extra: dict[str, str]) -> dict[str, list[dict]]:
    """Per set, rows of the extra models, evaluated on the same items as the recipe's run."""
    from segsynth import io
    from segsynth.config import load_config
    from segsynth.evaluate.config import EvalConfig
    from segsynth.evaluate.job import run

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


def _latency(onnx: Path, dis: Path, images: list[np.ndarray], threads: int, repeats: int = 1) -> dict:
    """Median ms per image of each model (``NAME``) and its input side (``NAME_px``)."""
    from segsynth.predict import load_predictor

    out = {}
    for name, path, kind in ((OURS, onnx, None), ("dis", dis, "onnx-isnet")):
        pred = load_predictor(str(path), kind, threads=threads)
        out[f"{name}_px"] = _size(pred)
        pred.predict_one(images[0])  # warm-up: session start, first allocation
        times = []
        for _ in range(repeats):
            for im in images:
                t0 = time.perf_counter()
                pred.predict_one(im)
                times.append(time.perf_counter() - t0)
        out[name] = 1000 * float(np.median(times))
    return out


def gallery(onnx: Path, data: Path, half: str | None, out: Path, n: int = 6, tile: int = 256) -> list[str]:
    """A grid of the recipe model's cutouts on real photos nothing chose on (furniture_dev's
    report half by default), one per category in turn: photo | cutout on a checkerboard. Returns
    the photos' stems."""
    import cv2

    from segsynth import io
    from segsynth.predict import load_predictor

    by_cat: dict[str, list[dict]] = {}
    for it in io.labelled_folder(data, None, half):
        by_cat.setdefault(it["category"], []).append(it)
    # round-robin over the categories, first stems first: the i-th photo of every category, then the next
    rounds = itertools.zip_longest(*(by_cat[c] for c in sorted(by_cat)))
    chosen = [it for rnd in rounds for it in rnd if it is not None][:n]
    pred = load_predictor(str(onnx), threads=2)
    yy, xx = np.mgrid[:tile, :tile]
    rows = []
    for it in chosen:
        photo = io.read_image(it["image"])
        h, w = photo.shape[:2]
        th = round(tile * h / w)
        rgb = cv2.resize(photo, (tile, th), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(pred.predict_one(photo), (tile, th), interpolation=cv2.INTER_AREA)[:, :, None]
        board = np.where(((yy[:th] // 16 + xx[:th] // 16) % 2)[:, :, None] == 0, 235, 190).astype(np.float32)
        cut = (rgb * alpha + board * (1 - alpha)).astype(np.uint8)
        rows.append(np.hstack([rgb, np.full((th, 4, 3), 255, np.uint8), cut]))
    if len(rows) % 2:  # two photos per line: an odd one out gets a blank partner
        rows.append(np.full_like(rows[-1], 255))
    pairs = [np.hstack([a, np.full((a.shape[0], 8, 3), 255, np.uint8), b]) for a, b in zip(rows[0::2], rows[1::2])]
    width = pairs[0].shape[1]
    grid = np.vstack([np.vstack([r, np.full((4, width, 3), 255, np.uint8)]) for r in pairs])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(io.encode_jpeg(grid, 85))
    return [it["stem"] for it in chosen]


def curve_check(metrics_rows: list[dict], label: str) -> dict:
    """The real-photo learning curve of ``label`` (``val_<label>_iou`` by step): its value at the
    first validation at or after a quarter of the run, at the end, and where its best is."""
    pts = [(int(r["step"]), float(r[f"val_{label}_iou"])) for r in metrics_rows if r.get(f"val_{label}_iou")]
    if not pts:
        return {}
    last = pts[-1][0]
    quarter = next(p for p in pts if p[0] >= last / 4)
    best = max(pts, key=lambda p: p[1])
    return {"set": label, "last_step": last, "quarter_step": quarter[0], "quarter": quarter[1], "final": pts[-1][1],
            "best_step": best[0], "best": best[1], "points": len(pts)}


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def _size(pred) -> int | None:
    """The square input side of a predictor (padded models: ``size``; salient ONNX models: ``pre``)."""
    return getattr(pred, "size", None) or getattr(pred, "pre", {}).get("size")


def collect(args) -> dict:
    """Everything the section says, from the recipe's saved outputs and this run's measurements."""
    import yaml

    from segsynth import io
    from segsynth import metrics as M
    from segsynth.config import load_config
    from segsynth.evaluate.config import EvalConfig
    from segsynth.evaluate.score import eval_items

    load_start = os.getloadavg()[0]
    out = Path(args.out)
    sets = _eval_sets(out)
    extra = dict(a.split("=", 1) for a in args.also)
    extra_rows = _also(sets, extra) if extra else {}

    table, held, by_category, paired = [], [], [], []
    for name, folder in sets:
        ecfg = load_config(EvalConfig, str(folder / "config.yaml"))
        held.append({"set": name, "data": os.path.basename(str(ecfg.data).rstrip("/")), "stems": ecfg.stems,
                     "half": getattr(ecfg.split, "half", None)})
        rows = [{k: v for k, v in r.items() if k != "f_curve" or v is not None}
                for r in io.read_parquet(str(folder / "samples.parquet")).to_pylist() + extra_rows.get(name, [])
                if r.get("error") in (None, "")]
        for r in M.summarize(rows, by=("model",), level=INTERVAL):
            table.append({"set": name, **{k: r[k] for k in ("model", "n", "ssim_box", "ssim_box_lo", "ssim_box_hi", "iou",
                                                            "iou_lo", "iou_hi", "mae")},
                          "max_f": r.get("max_f_dataset", r.get("max_f", float("nan")))})
        paired += paired_iou(name, rows)
        if "furniture" in name:  # the photos this system is for: per category beside DIS
            for r in M.summarize(rows, by=("category", "model"), metrics=("iou", "ssim_box"), level=INTERVAL):
                by_category.append({"set": name, **{k: r[k] for k in ("category", "model", "n", "iou", "iou_lo",
                                                                      "iou_hi", "ssim_box")}})

    train = json.loads((out / "train" / "summary.json").read_text())
    train_cfg = yaml.safe_load((out / "train" / "config.yaml").read_text()) or {}
    synth_cfg = yaml.safe_load((out / "synth" / "config.yaml").read_text()) or {}
    cutouts = json.loads((out / "cutouts" / "summary.json").read_text())
    metrics_rows = list(csv.DictReader((out / "train" / "metrics.csv").open()))
    best = [r for r in metrics_rows if r.get("best") == "True"]
    samples_s = [float(r["samples_per_s"]) for r in metrics_rows if r.get("samples_per_s")]
    curves = [curve_check(metrics_rows, v["name"]) for v in train_cfg.get("val_data") or []
              if v.get("name") and v.get("select", True)]
    val = (train_cfg.get("val_data") or [{}])[0]
    val_key = f"val_{val.get('name')}"
    best_val = ({m: float(best[-1][f"{val_key}_{m}"]) for m in ("ssim_box", "iou") if best[-1].get(f"{val_key}_{m}")}
                if best else {})

    ecfg = load_config(EvalConfig, str(sets[0][1] / "config.yaml"))
    photos = [io.read_image(it["image"]) for it in eval_items(ecfg.data, None, ecfg.stems)[:args.latency_images]]
    latency = _latency(out / "model.onnx", Path(args.dis), photos, threads=LATENCY_THREADS)
    latency.update({"images": len(photos), "set": sets[0][0], "threads": LATENCY_THREADS})

    import torch

    return {"argv": " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
            "load_avg": [round(load_start, 1), round(os.getloadavg()[0], 1)],
            "gpu": torch.cuda.is_available(), "also": extra, "targets": TARGETS, "interval": INTERVAL,
            "recipe": {"cutouts": cutouts.get("written"), "synth_size": synth_cfg.get("size"),
                       "synth_samples": json.loads((out / "synth" / "summary.json").read_text()).get("samples_written"),
                       "encoder": train_cfg.get("encoder_name"), "encoder_weights": train_cfg.get("encoder_weights"),
                       "size": train_cfg.get("size"), "batch_size": train_cfg.get("batch_size"),
                       "val_every_steps": train_cfg.get("val_every_steps"),
                       "selection": [{"data": os.path.basename(str(v.get("path", ""))),
                                      "part": v.get("stems") or (v.get("split") or {}).get("half") or "all"}
                                     for v in train_cfg.get("val_data") or [] if v.get("select", True)]},
            "held_out": held, "table": table, "by_category": by_category, "paired": paired,
            "curves": [c for c in curves if c],
            "train": {"steps": train.get("steps"), "fit_wall_s": train.get("fit_wall_s"),
                      "samples_per_s": float(np.mean(samples_s)) if samples_s else None,
                      "best_step": train.get("best_step"), "select_on": train.get("select_on"),
                      "selected_on": train.get("selected_on"), "normalization": train.get("normalization"),
                      "best_val": best_val, "best_val_set": val.get("name")},
            "latency": latency}


def paired_iou(name: str, rows: list[dict]) -> list[dict]:
    """IoU of the recipe's model minus each other model's on the same photos of set ``name``, with a
    bootstrap interval over the photos (one training run each: seed-to-seed spread is not in it)."""
    from segsynth import metrics as M

    by_model: dict[str, dict[str, float]] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[str(r["stem"])] = float(r["iou"])
    ours = by_model.get(OURS)
    out = []
    for model, scores in by_model.items():
        if ours is None or model == OURS:
            continue
        diffs = [ours[s] - scores[s] for s in ours if s in scores]
        d, lo, hi, n = M.mean_ci(diffs, level=INTERVAL, seed=(name, model, "paired"))
        out.append({"set": name, "model": model, "n": n, "diff": d, "lo": lo, "hi": hi})
    return out


def _paired_text(p: dict) -> str:
    side = "ahead" if p["lo"] > 0 else "behind" if p["hi"] < 0 else "not separated"
    return f"`{p['model']}` {p['diff']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}] ({side})"


def _selection(sel: list[dict]) -> str:
    """``furniture_dev select half and ecssd_dev 1-50`` from the results' selection list."""
    return " and ".join(f"{s['data']} {s['part']}" + (" half" if s["part"] in ("select", "report") else "") for s in sel)


def _verdict(name: str, ours: dict, models: dict, targets: dict) -> str:
    target = next((t for key, t in targets.items() if key in name), None)
    if target is None:
        return "no target for this set"
    if target == "dis":
        dis = models.get("dis")
        if dis is None:
            return "target: DIS's IoU on the same photos, not measured (no DIS rows)"
        gap = ours["iou"] - dis["iou"]
        return (f"target at least DIS's {_fmt(dis['iou'])}: **met** ({gap:+.3f})" if gap >= 0
                else f"target at least DIS's {_fmt(dis['iou'])}: **missed** by {-gap:.3f}")
    return (f"target IoU >= {target}: **met**" if ours["iou"] >= target
            else f"target IoU >= {target}: **missed** by {target - ours['iou']:.3f}")


def section(r: dict) -> str:
    """The "## CPU recipe" section of BENCHMARKS.md from one run's results (nothing else)."""
    rc, tr, lat = r["recipe"], r["train"], r["latency"]
    chosen_on = _selection(rc["selection"])
    command = " ".join(["python benchmarks/cpu_recipe.py", r["argv"]]).strip()
    lines = [HEADING, "",
             f"`segsynth demo --config configs/cpu/recipe.yaml`, then `{command}` ({r['date']}; {r['cores']} cores"
             + (f", one-minute load average {r['load_avg'][0]} at the start and {r['load_avg'][1]} at the end"
                if r.get("load_avg") else "")
             + f", {'a GPU' if r['gpu'] else 'no GPU'}, no model hub)."
             + "".join(f" `{n}` is the checkpoint `{p}`, evaluated here on the same items." for n, p in r["also"].items()),
             "",
             f"The recipe: {rc['cutouts']} cutouts (`configs/cpu/cutouts.yaml`), {rc['synth_samples']} samples "
             f"synthesized at {rc['synth_size']} px (`configs/cpu/synth.yaml`), FPN + `{rc['encoder']}` from the packaged "
             f"`{rc['encoder_weights']}` weights trained on them at {rc['size']} px (`configs/cpu/train.yaml`), `best/` "
             f"selected on {chosen_on}; reported below on the pairs not used for selection: "
             + ", ".join(f"{h['data']} {h['stems']}" if h["stems"] else
                         f"{h['data']} {h['half']} half" if h.get("half") else
                         f"{h['data']} (all {max(t['n'] for t in r['table'] if t['set'] == h['set'])} pairs)"
                         for h in r["held_out"])
             + f". Means with {r['interval']:.0%} bootstrap intervals.",
             "",
             "| set | model | n | SSIM (box) | IoU | MAE | max F |",
             "|---|---|---|---|---|---|---|"]
    by_set: dict[str, dict[str, dict]] = {}
    for t in r["table"]:
        by_set.setdefault(t["set"], {})[t["model"]] = t
        lines.append(f"| {t['set']} | {t['model']} | {t['n']} | {_fmt(t['ssim_box'])} [{_fmt(t['ssim_box_lo'])}, "
                     f"{_fmt(t['ssim_box_hi'])}] | {_fmt(t['iou'])} [{_fmt(t['iou_lo'])}, {_fmt(t['iou_hi'])}] | "
                     f"{_fmt(t['mae'])} | {_fmt(t['max_f'])} |")
    lines.append("")
    for name, models in by_set.items():
        ours = models.get(OURS)
        if ours is None:
            continue
        dis = models.get("dis")
        vs = "" if dis is None else (f"; DIS {_fmt(dis['iou'])} IoU, SSIM (box) {_fmt(dis['ssim_box'])} against ours "
                                     f"{_fmt(ours['ssim_box'])}")
        lines.append(f"- {name}: IoU {_fmt(ours['iou'])} ({_verdict(name, ours, models, r['targets'])}){vs}.")
    paired = r.get("paired") or []
    if paired:
        lines += ["", f"Paired per photo, IoU of `{OURS}` minus each model on the same photos ({r['interval']:.0%} "
                      "bootstrap over the photos; one training run of each model, so the spread between seeds is not "
                      "in these intervals):", ""]
        for name in dict.fromkeys(p["set"] for p in paired):
            lines.append(f"- {name}: " + ", ".join(_paired_text(p) for p in paired if p["set"] == name) + ".")
    cats = r.get("by_category") or []
    if cats:
        models = sorted({c["model"] for c in cats}, key=lambda m: (m != OURS, m))
        lines += ["", f"Per category on {cats[0]['set']} (IoU [{r['interval']:.0%}]; the masks are filled outlines, "
                      "so gaps between legs count as foreground):", "",
                  "| category | n | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
        table: dict[str, dict[str, dict]] = {}
        for c in cats:
            table.setdefault(c["category"], {})[c["model"]] = c
        for cat, row in table.items():
            n = next(iter(row.values()))["n"]
            lines.append(f"| {cat} | {n} | " + " | ".join(
                f"{_fmt(row[m]['iou'])} [{_fmt(row[m]['iou_lo'])}, {_fmt(row[m]['iou_hi'])}]" if m in row else "n/a"
                for m in models) + " |")
    bv = tr["best_val"]
    lines += ["",
              f"Training: {tr['steps']} steps of batch {rc['batch_size']} in {tr['fit_wall_s'] / 60:.1f} min of "
              f"`trainer.fit()` wall time (workers' start, data, steps, validation every {rc['val_every_steps']} steps "
              "and checkpoints)"
              + (f", {tr['samples_per_s']:.2f} samples/s during the steps" if tr["samples_per_s"] else "")
              + f"; `best/` is step {tr['best_step']} (by {tr['select_on']} on {tr['selected_on']}, normalisation "
              f"`{tr['normalization']}`)"
              + (f", its {tr.get('best_val_set') or 'first selection set'} SSIM (box) {bv['ssim_box']:.3f}, "
                 f"IoU {bv['iou']:.3f}" if "ssim_box" in bv and "iou" in bv else "") + "."]
    late = tr["best_step"] > tr["steps"] / 4
    lines.append(f"- `best/` (step {tr['best_step']} of {tr['steps']}) is "
                 + ("after the first quarter of the run (target: not in the first quarter, **met**)." if late
                    else "in the first quarter of the run (target: not in the first quarter, **missed**)."))
    for c in r.get("curves") or []:
        rises = c["final"] >= c["quarter"]
        lines.append(f"- Learning curve on {c['set']} (real photos, {c['points']} validations): IoU {c['quarter']:.3f} "
                     f"at step {c['quarter_step']} (a quarter of the run), {c['final']:.3f} at the end (step "
                     f"{c['last_step']}): {'rises' if rises else 'falls'} (target: the end at least the quarter, "
                     f"**{'met' if rises else 'missed'}**); its highest IoU {c['best']:.3f} at step {c['best_step']}"
                     + (", in the first quarter." if c["best_step"] <= c["last_step"] / 4 else "."))
    lines += ["",
              f"CPU latency per image (median of {lat['images']} {lat['set']} photos, one at a time, {lat['threads']} "
              f"ONNX Runtime threads, resize + network + resize back): ours at {lat[OURS + '_px']} px "
              f"{lat[OURS]:.0f} ms, DIS at {lat['dis_px']} px {lat['dis']:.0f} ms: ours "
              + (f"{lat['dis'] / lat[OURS]:.1f}x faster." if lat[OURS] < lat["dis"]
                 else f"{lat[OURS] / lat['dis']:.1f}x slower.")]
    if not r["gpu"]:  # the recipe at full size with AMP needs a GPU run of its own
        lines += ["", "GPU (the recipe with AMP at full size): not measured, this run had no GPU "
                      "(on one: `segsynth train --config configs/cpu/train.yaml use_gpu=true amp=bf16 size=512 "
                      "time_budget_min=null`)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "outputs" / "cpu"), help="the recipe's output folder")
    ap.add_argument("--dis", default=str(REPO.parent / "shared" / "models" / "isnet-general-fp16.onnx"))
    ap.add_argument("--also", action="append", default=[], metavar="NAME=CHECKPOINT",
                    help="evaluate another checkpoint on the same items (e.g. demo=outputs/demo/train/best)")
    ap.add_argument("--latency-images", type=int, default=20)
    ap.add_argument("--results", default=str(REPO / "outputs" / "bench" / "cpu_recipe" / "results.json"),
                    help="where this run's results JSON goes")
    ap.add_argument("--render", default=None, metavar="JSON",
                    help="measure nothing: render the section from a results JSON an earlier run saved")
    ap.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    ap.add_argument("--gallery", default=None, metavar="JPG",
                    help="also write a gallery of the model's cutouts on furniture_dev's report half")
    ap.add_argument("--gallery-data", default=str(REPO.parent / "shared" / "data" / "eval" / "furniture_dev"))
    ap.add_argument("--gallery-half", default="report", help="the half of --gallery-data shown (select|report|all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.render:
        results = json.loads(Path(args.render).read_text())
    else:
        results = collect(args)
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(results, indent=2))
    if args.gallery:
        half = None if args.gallery_half == "all" else args.gallery_half
        stems = gallery(Path(args.out) / "model.onnx", Path(args.gallery_data), half, Path(args.gallery))
        log.info("gallery %s: %s", args.gallery, stems)
    text = section(results)
    sys.stdout.write(text)
    if args.write:
        write_section(REPO / "BENCHMARKS.md", HEADING, text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
