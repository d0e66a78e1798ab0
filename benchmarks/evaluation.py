"""The "## Evaluation" section of BENCHMARKS.md, rendered from ``segsynth eval`` output folders.

    segsynth eval --config configs/eval.yaml                                    # -> outputs/eval/ecssd_dev
    segsynth eval --config configs/eval.yaml data=../shared/data/eval/pascal_s_dev out=outputs/eval/pascal_s_dev
    python benchmarks/evaluation.py --set "ECSSD dev=outputs/eval/ecssd_dev" \\
        --set "PASCAL-S dev=outputs/eval/pascal_s_dev" --write

It measures nothing itself: every figure comes from the runs' own files (``samples.parquet``,
``config.yaml``, ``report/command.txt``), reduced here with ``segsynth.metrics.summarize``, and
the metric definitions' constants come from ``segsynth.metrics``. The results go to ``--out`` as
JSON; :func:`section` renders the section from them alone.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _sections import write_section  # noqa: E402

log = logging.getLogger("bench.evaluation")
SECTION = "## Evaluation"
INTERVAL = 0.95  # bootstrap interval level
COLUMNS = [("ssim_box", "SSIM (box)"), ("iou", "IoU"), ("mae", "MAE"), ("max_f", "max F"), ("s_measure", "S-measure"),
           ("weighted_f", "weighted F"), ("e_measure", "E-measure (mean)"), ("boundary_iou", "Boundary IoU"), ("ap", "AP")]
WITH_INTERVAL = ("ssim_box", "iou")


def collect(sets: list[tuple[str, str]]) -> dict:
    """Per labelled eval folder: its command, models and per-model means (with intervals)."""
    import numpy as np
    import yaml

    from segsynth import io
    from segsynth import metrics as M

    out = {"date": time.strftime("%Y-%m-%d"), "interval": INTERVAL, "sets": [],
           "metric_constants": {"ssim_sigma": M.SSIM_SIGMA, "ssim_k1": M.SSIM_K1, "ssim_k2": M.SSIM_K2,
                                "ssim_data_range": 1.0, "f_beta2": M.F_BETA2, "thresholds": M.N_THRESHOLDS}}
    for label, folder in sets:
        folder_p = Path(folder)
        cfg = yaml.safe_load((folder_p / "config.yaml").read_text()) or {}
        command = folder_p / "report" / "command.txt"
        rows = [r for r in io.read_parquet(str(folder_p / "samples.parquet")).to_pylist() if r.get("error") in (None, "")]
        models = []
        for s in M.summarize(rows, by=("model",), level=INTERVAL):
            ms = [r["predict_ms"] for r in rows if r["model"] == s["model"] and r.get("predict_ms") is not None]
            spec = next((m for m in cfg.get("models", []) if m.get("name") == s["model"]), {})
            models.append({"model": s["model"], "kind": spec.get("kind"), "path": spec.get("path"),
                           "options": spec.get("options") or {}, "n": s["n"],
                           **{k: s.get("max_f_dataset", s.get("max_f")) if k == "max_f" else s.get(k) for k, _ in COLUMNS},
                           **{f"{k}_{b}": s[f"{k}_{b}"] for k in WITH_INTERVAL for b in ("lo", "hi")},
                           "median_ms": float(np.median(ms)) if ms else None})
        out["sets"].append({"label": label, "folder": folder, "data": cfg.get("data"), "stems": cfg.get("stems"),
                            "threshold": cfg.get("threshold"),
                            "command": command.read_text().strip() if command.is_file() else None, "models": models})
    return out


def section(r: dict) -> str:
    """The "## Evaluation" section of BENCHMARKS.md from the collected results (nothing else)."""
    mc = r["metric_constants"]
    lines = [SECTION, ""]
    for s in r["sets"]:
        how = f"`{s['command']}`" if s["command"] else "(command not recorded)"
        lines.append(f"- {s['label']}: {how}, on `{s['data']}`" + (f" items {s['stems']}" if s["stems"] else "")
                     + f"; figures from `{s['folder']}`.")
    specs = {}
    for s in r["sets"]:
        for m in s["models"]:
            specs.setdefault(m["model"], m)
    lines += ["", "Models: " + "; ".join(
        f"`{name}` (kind `{m['kind']}`" + (f", `{m['path']}`" if m["path"] else "")
        + "".join(f", {k} {v}" for k, v in m["options"].items()) + ")" for name, m in specs.items()) + ".", "",
        f"Mean per model; SSIM and IoU with their {r['interval']:.0%} percentile-bootstrap interval. SSIM (box): "
        f"prediction and truth cropped to the truth's bounding box, Gaussian window sigma {mc['ssim_sigma']}, K1 "
        f"{mc['ssim_k1']}, K2 {mc['ssim_k2']}, data range {mc['ssim_data_range']}. IoU and boundary IoU of the mask "
        f"thresholded at {', '.join(sorted({str(s['threshold']) for s in r['sets']}))}. max F: maximum of the mean "
        f"F-measure curve (beta squared {mc['f_beta2']}, {mc['thresholds']} "
        "thresholds). E-measure: mean over thresholds. AP: mean per-image average precision. Latency: the median "
        "wall time per image inside the model's actor during that run; the eval job records no machine load, so "
        "compare latencies only between models of one run.", "",
        "| set | model | n | " + " | ".join(name for _, name in COLUMNS) + " | median ms/image |",
        "|" + "---|" * (len(COLUMNS) + 4)]
    for s in r["sets"]:
        for m in s["models"]:
            cells = []
            for k, _ in COLUMNS:
                v = m[k]
                cell = "n/a" if v is None else f"{v:.3f}"
                if k in WITH_INTERVAL and v is not None:
                    cell += f" [{m[k + '_lo']:.3f}, {m[k + '_hi']:.3f}]"
                cells.append(cell)
            ms = "n/a" if m["median_ms"] is None else f"{m['median_ms']:.0f}"
            lines.append(f"| {s['label']} | {m['model']} | {m['n']} | " + " | ".join(cells) + f" | {ms} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", action="append", required=True, metavar="LABEL=FOLDER",
                   help="a `segsynth eval` output folder and its label in the table (repeatable)")
    p.add_argument("--out", default=str(REPO / "outputs" / "bench" / "evaluation.json"), help="where the results JSON goes")
    p.add_argument("--write", action="store_true", help="rewrite the '## Evaluation' section of BENCHMARKS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sets = []
    for item in args.set:
        label, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "samples.parquet").is_file():
            raise SystemExit(f"--set {item!r}: expected LABEL=FOLDER with FOLDER/samples.parquet from `segsynth eval`")
        sets.append((label, folder))
    results = collect(sets)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    text = section(results)
    sys.stdout.write(text)
    if args.write:
        write_section(REPO / "BENCHMARKS.md", SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
