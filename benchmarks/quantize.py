"""What int8 costs: the CPU recipe's model exported to fp32 and to int8 ONNX, both scored on the
held-out dev pairs and timed on this CPU.

    python benchmarks/quantize.py --write     # about 1.5 min on 2 cores; needs ../shared/data and
                                              # the CPU recipe's model (outputs/cpu/train/best)

``--ckpt`` is exported twice with :func:`segsynth.train.export.export` (what ``segsynth export``
runs): fp32 (``model.onnx``) and ``--quantize`` (``model-int8.onnx``, onnxruntime dynamic
quantization), into ``--out``. Both files are loaded with :func:`segsynth.predict.load_predictor`,
one ONNX Runtime thread each, and every held-out dev photo (``_sections.HELD_OUT``: ECSSD 51-100,
PASCAL-S 1-100) goes through both in turn, timed, in one run (the order alternates per photo, so
neither model always runs on a warm cache). Accuracy: SSIM (box), IoU and MAE per photo, int8 -
fp32 paired per photo with a bootstrap interval (:func:`segsynth.metrics.mean_ci`), and the
largest per-photo IoU drop. Speed: the geometric mean of the per-photo time ratios int8/fp32 with
its interval. Results go to ``--results``; :func:`section` renders the "## Int8 export" section
and :func:`judge` the verdict, from those numbers alone.
"""
# no `from __future__ import annotations`: the dataclass below must build when this file is loaded
# from its path without a sys.modules entry (as tests/unit/test_benchmark_prose.py loads the scripts)
import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _sections import HELD_OUT, finish, held_out_pairs  # noqa: E402

HEADING = "## Int8 export"
METRICS = ("ssim_box", "iou", "mae")
LOWER_IS_BETTER = {"mae"}
INTERVAL = 0.95
THREADS = 1  # one ONNX Runtime thread: a per-core comparison, and the 2 cores are shared
# Accuracy loss taken as negligible: absolute, on each metric, at the interval's worse end. Chosen
# here (the issue sets none): below the per-photo noise of these 50-100 pair means.
TOLERANCE = 0.01


def run(args) -> dict:
    import numpy as np
    import onnxruntime
    import torch

    from segsynth import io
    from segsynth import metrics as M
    from segsynth.predict import load_predictor
    from segsynth.train import export as exporting

    torch.set_num_threads(THREADS)
    load0 = os.getloadavg()[0]
    out = Path(args.out)
    files = {}
    refusal = exporting.QUANTIZED_TOLERANCE
    # Lift the export's refusal (int8 vs torch on a random batch) for this run: the point is the cost on
    # real photos, which that gate only guesses at; the section says whether `segsynth export` refuses.
    exporting.QUANTIZED_TOLERANCE = math.inf
    try:
        for name, quantize in (("fp32", False), ("int8", True)):
            path = out / ("model-int8.onnx" if quantize else "model.onnx")
            card = exporting.export(args.ckpt, "onnx", str(path), quantize=quantize)
            files[name] = {"path": str(path), "mb": path.stat().st_size / 2**20,
                           "parity_max_abs_diff": float(card["parity_max_abs_diff"])}
    finally:
        exporting.QUANTIZED_TOLERANCE = refusal
    predictors = {name: load_predictor(f["path"], threads=THREADS) for name, f in files.items()}
    size = int(predictors["fp32"].card["preprocessing"]["size"])

    fns = {"ssim_box": M.ssim_box, "iou": M.iou, "mae": M.mae}
    table, drops, log_ratios, ms = [], [], [], {"fp32": [], "int8": []}
    warm = True
    for label, items in held_out_pairs(args.data):
        per = {name: {m: [] for m in METRICS} for name in predictors}
        for k, it in enumerate(items):
            rgb, truth = io.read_image(it["image"]), io.read_mask(it["mask"])
            if warm:  # session start and first allocations, once per model, not timed
                for p in predictors.values():
                    p.predict_one(rgb)
                warm = False
            order = ("fp32", "int8") if k % 2 == 0 else ("int8", "fp32")
            took = {}
            for name in order:
                t0 = time.perf_counter()
                mask = predictors[name].predict_one(rgb)
                took[name] = time.perf_counter() - t0
                for m in METRICS:
                    per[name][m].append(float(fns[m](mask, truth)))
            for name in took:
                ms[name].append(1000 * took[name])
            log_ratios.append(math.log(took["int8"] / took["fp32"]))
        for m in METRICS:
            d = [b - a for a, b in zip(per["fp32"][m], per["int8"][m])]
            mean, lo, hi, n = M.mean_ci(d, level=INTERVAL, seed=("quantize", label, m))
            table.append({"set": label, "metric": m, "n": n, "fp32": float(np.mean(per["fp32"][m])),
                          "int8": float(np.mean(per["int8"][m])), "delta": mean, "lo": lo, "hi": hi})
        iou_drop = [a - b for a, b in zip(per["fp32"]["iou"], per["int8"]["iou"])]
        worst = int(np.argmax(iou_drop))
        drops.append({"set": label, "n": len(items), "max_iou_drop": float(iou_drop[worst]),
                      "stem": items[worst]["stem"],
                      "over_tolerance": int(sum(x > TOLERANCE for x in iou_drop))})
    gm, lo, hi, n = M.mean_ci(log_ratios, level=INTERVAL, seed=("quantize", "time"))
    speed = {"images": n, "threads": THREADS, "fp32_ms": float(np.median(ms["fp32"])),
             "int8_ms": float(np.median(ms["int8"])), "ratio": math.exp(gm), "lo": math.exp(lo), "hi": math.exp(hi)}
    return {"command": " ".join(["python benchmarks/quantize.py", *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(), "gpu": "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
            "load_avg": [round(load0, 1), round(os.getloadavg()[0], 1)], "onnxruntime": onnxruntime.__version__,
            "ckpt": args.ckpt, "model_px": size, "held_out": [{"set": s, "data": f, "stems": st} for s, f, st in HELD_OUT],
            "interval": INTERVAL, "tolerance": TOLERANCE, "export_refuses_above": refusal, "files": files, "table": table, "drops": drops,
            "speed": speed}


@dataclass(frozen=True)
class Judgement:
    """What the numbers say: ``beyond`` lists ``(set, metric, cost)`` where int8's accuracy loss at
    the interval's worse end exceeds the tolerance; ``refused``: ``segsynth export --quantize``
    refuses the int8 graph (its parity gate); ``speed`` is ``faster``, ``slower`` or ``unclear``
    (the time ratio's interval holds 1); ``worth`` one of ``yes``, ``size-only``, ``no``."""

    beyond: tuple[tuple[str, str, float], ...]
    refused: bool
    speed: str
    size_ratio: float
    worth: str


def worst_cost(row: dict) -> float:
    """int8's accuracy loss on one table row at the interval's worse end (positive = worse)."""
    return row["hi"] if row["metric"] in LOWER_IS_BETTER else -row["lo"]


def judge(r: dict) -> Judgement:
    """The verdict from a results dict: int8 is worth it when no metric of any set loses more
    than ``r["tolerance"]`` (at the interval's worse end) and it is faster; with the accuracy kept
    but no speed-up it is worth it only for the smaller file; beyond the tolerance, or when the
    export refuses it, it is not."""
    beyond = tuple((t["set"], t["metric"], worst_cost(t)) for t in r["table"] if worst_cost(t) > r["tolerance"])
    refused = r["files"]["int8"]["parity_max_abs_diff"] > r["export_refuses_above"]
    s = r["speed"]
    speed = "faster" if s["hi"] < 1 else "slower" if s["lo"] > 1 else "unclear"
    worth = "no" if beyond or refused else "yes" if speed == "faster" else "size-only"
    return Judgement(beyond, refused, speed, r["files"]["int8"]["mb"] / r["files"]["fp32"]["mb"], worth)


def _f(v: float, d: int = 3) -> str:
    return f"{v:.{d}f}"


def section(r: dict) -> str:
    """The "## Int8 export" section, every figure and the verdict from ``r``."""
    f32, i8, s = r["files"]["fp32"], r["files"]["int8"], r["speed"]
    j = judge(r)
    pct = round(100 * r["interval"])
    held = " and ".join(f"{h['data']} {h['stems']}" if h["stems"] else f"{h['data']} (all {d['n']} pairs)"
                        for h, d in zip(r["held_out"], r["drops"]))
    lines = [HEADING, "",
             f"`{r['command']}` ({r['date']}; {r['cores']} cores, {'a GPU' if r['gpu'] else 'no GPU'}, one-minute "
             f"load average {r['load_avg'][0]} at the start and {r['load_avg'][1]} at the end; onnxruntime "
             f"{r['onnxruntime']}). The CPU recipe's checkpoint (`{r['ckpt']}`, {r['model_px']} px) exported with "
             f"`segsynth export` to fp32 ONNX and with `--quantize` to int8 (dynamic quantization, uint8 weights), "
             f"both loaded with `load_predictor` ({s['threads']} ONNX Runtime thread) and run on the held-out dev "
             f"pairs, {held}; int8 - fp32 paired per photo with a {pct}% bootstrap interval.", "",
             "| set | metric | n | fp32 | int8 | int8 - fp32 |", "|---|---|---|---|---|---|"]
    for t in r["table"]:
        lines.append(f"| {t['set']} | {t['metric']} | {t['n']} | {_f(t['fp32'])} | {_f(t['int8'])} | "
                     f"{t['delta']:+.4f} [{t['lo']:+.4f}, {t['hi']:+.4f}] |")
    lines.append("")
    for d in r["drops"]:
        lines.append(f"- {d['set']}: largest per-photo IoU drop {_f(d['max_iou_drop'], 4)} (photo {d['stem']}); "
                     f"{d['over_tolerance']} of {d['n']} photos lose more than {r['tolerance']} IoU.")
    speed_words = {"faster": "int8 is faster", "slower": "int8 is slower",
                   "unclear": "no clear difference (the interval holds 1)"}[j.speed]
    lines += ["",
              f"Files: fp32 {f32['mb']:.1f} MB, int8 {i8['mb']:.1f} MB ({j.size_ratio:.2f} of fp32). Largest "
              f"|export - torch| on the export's random parity batch: fp32 {f32['parity_max_abs_diff']:.6f}, int8 "
              f"{i8['parity_max_abs_diff']:.3f}; `segsynth export --quantize` refuses an int8 graph above "
              f"{r['export_refuses_above']}, so it "
              + ("**refuses** this checkpoint (measured here with that refusal lifted)." if j.refused
                 else "accepts this checkpoint."),
              "",
              f"Speed on this CPU ({s['images']} photos, each through both models in turn in one run, {s['threads']} "
              f"thread, letterbox + network + resize back): median fp32 {s['fp32_ms']:.1f} ms, int8 "
              f"{s['int8_ms']:.1f} ms per photo; time int8/fp32 {s['ratio']:.2f} [{s['lo']:.2f}, {s['hi']:.2f}] "
              f"(geometric mean of per-photo ratios): {speed_words}.",
              ""]
    cost = (f"accuracy loss beyond {r['tolerance']} on " + ", ".join(f"{st} {m} (up to {c:.4f})" for st, m, c in j.beyond)
            if j.beyond else f"no metric of any set loses more than {r['tolerance']} at the interval's worse end")
    verdict = {"yes": "**worth it** here", "size-only": "**worth it only for the file size** here",
               "no": "**not worth it** here"}[j.worth]
    lines.append(f"Int8 is {verdict}: {cost}; the file is {j.size_ratio:.2f} of fp32's size and {speed_words}"
                 + ("; and `segsynth export --quantize` refuses it." if j.refused else "."))
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default="outputs/cpu/train/best", help="checkpoint folder (model.pt + model_card.json)")
    p.add_argument("--data", default=os.environ.get("SEGSYNTH_DATA", "../shared/data"))
    p.add_argument("--out", default="outputs/bench/quantize", help="where the two ONNX files are written")
    p.add_argument("--results", default="outputs/bench/quantize/results.json")
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    p.add_argument("--section-only", action="store_true", help="render --results again, measure nothing")
    args = p.parse_args()
    os.chdir(REPO)
    if not args.section_only and not (Path(args.ckpt) / "model.pt").is_file():
        raise SystemExit(f"{args.ckpt}/model.pt is missing: train the CPU recipe first "
                         "(`segsynth demo --config configs/cpu/recipe.yaml`) or pass --ckpt")
    return finish(args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
