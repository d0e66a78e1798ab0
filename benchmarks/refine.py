"""Edge refinement (guided filter) on the real dev pairs: with and without, and its cost.

    python benchmarks/refine.py --write      # a minute or two on 2 cores; needs ../shared/data and
                                             # the CPU recipe's model (outputs/cpu/train/best)

The CPU recipe's model predicts each held-out dev photo (ECSSD 51-100, PASCAL-S 1-100) once; the
mask, resized to the photo as every predictor does, is scored as is and after
:func:`segsynth.refine.refine_mask`. The dev photos are 300-500 px, under the default's 640 px,
so the refinement is run at the model's own scale (``work_px`` = the model's input size,
``min_upscale`` 1.0): it measures what the guided filter does to a model's edges at the photo's
resolution. Cost: seconds per megapixel of the refinement alone. Results go to
``outputs/bench/refine.json``; :func:`section` renders the "## Edge refinement" section.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _sections import HELD_OUT, finish  # noqa: E402

HEADING = "## Edge refinement"
METRICS = ("boundary_iou", "ssim_box", "iou", "mae")
SETS = HELD_OUT  # the pairs best/ was not selected on


def run(args) -> dict:
    import numpy as np

    from segsynth import io
    from segsynth import metrics as M
    from segsynth.predict import load_predictor
    from segsynth.refine import RefineOptions, refine_mask

    predictor = load_predictor(args.model, threads=os.cpu_count())
    size = int(predictor.card["preprocessing"]["size"])
    opts = RefineOptions(work_px=size, min_upscale=1.0)
    data = Path(args.data)
    load0 = os.getloadavg()[0]
    table, seconds, megapixels = [], 0.0, 0.0
    for label, folder, stems in SETS:
        per = {"off": {m: [] for m in METRICS}, "on": {m: [] for m in METRICS}}
        for it in io.labelled_folder(data / "eval" / folder, stems):
            rgb, truth = io.read_image(it["image"]), io.read_mask(it["mask"])
            pred = predictor.predict_one(rgb)
            t0 = time.perf_counter()
            sharp = refine_mask(rgb, pred, opts)
            seconds += time.perf_counter() - t0
            megapixels += rgb.shape[0] * rgb.shape[1] / 1e6
            for arm, mask in (("off", pred), ("on", sharp)):
                for m in METRICS:
                    fn = {"boundary_iou": M.boundary_iou, "ssim_box": M.ssim_box, "iou": M.iou, "mae": M.mae}[m]
                    per[arm][m].append(float(fn(mask, truth)))
        for m in METRICS:
            d = [b - a for a, b in zip(per["off"][m], per["on"][m])]
            mean, lo, hi, n = M.mean_ci(d, seed=("refine", label, m))
            table.append({"set": label, "metric": m, "n": n, "off": float(np.mean(per["off"][m])),
                          "on": float(np.mean(per["on"][m])), "delta": mean, "lo": lo, "hi": hi})
    return {"command": "python benchmarks/refine.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(), "load_avg": [round(load0, 1), round(os.getloadavg()[0], 1)],
            "model": args.model, "model_px": size, "radius": opts.radius, "eps": opts.eps,
            "s_per_megapixel": seconds / megapixels if megapixels else None, "megapixels": megapixels,
            "interval": 0.95, "table": table,
            "default_min_px": round(RefineOptions().work_px * RefineOptions().min_upscale)}


def _f(v, d: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{d}f}"


def section(r: dict) -> str:
    """The "## Edge refinement" section, every figure from ``r``."""
    lines = [HEADING, "",
             f"`{r['command']}` ({r['date']}, {r['cores']} cores, one-minute load average {r['load_avg'][0]} at the "
             f"start and {r['load_avg'][1]} at the end). The CPU recipe's model (`{r['model']}`, "
             f"{r['model_px']} px) on the held-out dev pairs, its mask scored as resized to the photo and after the "
             f"guided filter (radius {r['radius']}, eps {r['eps']}, fitted at the model's {r['model_px']} px); "
             f"differences paired per photo with a {round(100 * r['interval'])}% bootstrap interval.", "",
             "| set | metric | n | as resized | refined | refined - as resized |", "|---|---|---|---|---|---|"]
    for t in r["table"]:
        lines.append(f"| {t['set']} | {t['metric']} | {t['n']} | {_f(t['off'])} | {_f(t['on'])} | "
                     f"{t['delta']:+.3f} [{t['lo']:+.3f}, {t['hi']:+.3f}] |")
    b = [t for t in r["table"] if t["metric"] == "boundary_iou"]
    better = [t["set"] for t in b if t["lo"] > 0]
    worse = [t["set"] for t in b if t["hi"] < 0]
    lines += ["", f"Boundary IoU: better with the refinement on {', '.join(better) or 'no set'}, worse on "
              f"{', '.join(worse) or 'no set'} (interval clear of zero). Cost: {_f(r['s_per_megapixel'])} s per "
              f"megapixel of photo for the refinement alone ({_f(r['megapixels'], 1)} megapixels in all). The dev "
              f"photos are small; the default refines only photos over {r['default_min_px']} px, where the gap between "
              "a model's grid and the photo's pixels is larger than here."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="outputs/cpu/train/best")
    p.add_argument("--data", default=os.environ.get("SEGSYNTH_DATA", "../shared/data"))
    p.add_argument("--results", default="outputs/bench/refine.json")
    p.add_argument("--write", action="store_true")
    p.add_argument("--section-only", action="store_true")
    args = p.parse_args()
    os.chdir(REPO)
    return finish(args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
