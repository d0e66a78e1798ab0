"""The round-over-round table: what each round changed, from the files the rounds wrote.

``OUT/rounds.md`` and ``OUT/rounds.csv`` hold, per finished round:

- per evaluation set (and the round's control slice): the previous and the new model's mean
  SSIM (box) and IoU, and the paired difference with its 95% bootstrap interval;
- per worst category of the round, for the selected photos, for the random control slice and
  for the whole pool: the mean failure score before (the round's ``scores.parquet``) and after
  (``report/after/scores.parquet``: the new model on the same photos, same teachers), paired;
- whether the masks were accepted by people or automatically.
"""
from __future__ import annotations

import csv
import io as _pyio
import json
import math
from pathlib import Path

import numpy as np

from segsynth import io
from segsynth import metrics as M
from segsynth.active.pool import split_categories

METRICS = ("ssim_box", "iou")
CONTROL, SELECTED, ALL = "(control slice)", "(selected photos)", "(all photos)"


def _by_model(samples: list[dict], model: str, metric: str) -> dict[str, float]:
    return {r["stem"]: float(r[metric]) for r in samples if r["model"] == model and r.get(metric) is not None}


def eval_rows(round_dir: Path, summary: dict) -> list[dict]:
    """Per evaluation set and metric: before, after, paired difference (mean, 95% interval)."""
    rows = []
    new = f"round-{summary['round']}"
    for label in summary.get("eval") or {}:
        path = round_dir / "report" / label / "samples.parquet"
        if not path.is_file():
            continue
        samples = io.read_parquet(str(path)).to_pylist()
        models = list(dict.fromkeys(r["model"] for r in samples))
        before = next((m for m in models if m != new), None)
        if before is None:
            continue
        for metric in METRICS:
            a, b = _by_model(samples, before, metric), _by_model(samples, new, metric)
            common = sorted(set(a) & set(b))
            d = [b[s] - a[s] for s in common]
            mean, lo, hi, n = M.mean_ci(d, seed=("rounds", label, metric))
            rows.append({"round": summary["round"], "set": label, "metric": metric, "n": n,
                         "before_model": before, "before": float(np.mean([a[s] for s in common])) if common else math.nan,
                         "after": float(np.mean([b[s] for s in common])) if common else math.nan,
                         "delta": mean, "delta_low": lo, "delta_high": hi})
    return rows


def category_rows(round_dir: Path, summary: dict) -> list[dict]:
    """Per worst category of the round (and all photos): mean failure score before and after."""
    before_p, after_p = round_dir / "scores.parquet", round_dir / "report" / "after" / "scores.parquet"
    sel = round_dir / "select_summary.json"
    if not (before_p.is_file() and after_p.is_file() and sel.is_file()):
        return []
    worst = json.loads(sel.read_text()).get("worst_categories") or []
    before = {r["key"]: r for r in io.read_parquet(str(before_p)).to_pylist()}
    after = {r["key"]: r for r in io.read_parquet(str(after_p)).to_pylist()}
    queue = io.read_parquet(str(round_dir / "queue.parquet")).to_pylist() if (round_dir / "queue.parquet").is_file() else []
    groups = {cat: [k for k, r in before.items() if cat in split_categories(r["category"])] for cat in worst}
    groups[CONTROL] = [q["key"] for q in queue if q["slice"] == "control"]
    groups[SELECTED] = [q["key"] for q in queue if q["slice"] == "selected"]
    groups[ALL] = list(before)
    rows = []
    for cat, keys in groups.items():
        keys = [k for k in keys if k in before and k in after]
        pairs = [(before[k]["score"], after[k]["score"]) for k in keys]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
        if not pairs:
            continue
        mean, lo, hi, n = M.mean_ci([y - x for x, y in pairs], seed=("rounds", cat))
        rows.append({"round": summary["round"], "category": cat, "n": n,
                     "before": float(np.mean([x for x, _ in pairs])), "after": float(np.mean([y for _, y in pairs])),
                     "delta": mean, "delta_low": lo, "delta_high": hi})
    return rows


def _relative(path: str, out: str) -> str:
    """``path`` as a link from ``out/rounds.md`` (as given when it lies elsewhere)."""
    p, base = Path(path).resolve(), Path(out).resolve()
    return p.relative_to(base).as_posix() if p.is_relative_to(base) else str(path)


def write_rounds(out: str) -> str:
    """Write ``out/rounds.md`` and ``out/rounds.csv`` over every finished round; returns the .md path."""
    rounds = sorted((p for p in Path(out).glob("round-*") if (p / "report" / "summary.json").is_file()),
                    key=lambda p: int(p.name.split("-", 1)[1]))
    lines = ["# Active learning: round over round", ""]
    flat = []
    for rd in rounds:
        s = json.loads((rd / "report" / "summary.json").read_text())
        hv = s.get("harvest") or {}
        lines += [f"## Round {s['round']}", "",
                  f"- answers: {'AUTOMATIC (auto-accept policy, no people)' if s.get('automatic') else 'people in the review app'}; "
                  f"{hv.get('accepted', 0)} accepted of {hv.get('queued', {}).get('selected', 0)} selected, "
                  f"{hv.get('accepted_control', 0)} of {hv.get('queued', {}).get('control', 0)} in the control slice; "
                  f"{hv.get('context_cutouts', 0)} context cutouts; the model's own mask was the accepted one for "
                  f"{(hv.get('model_mask_chosen') or {}).get('selected', 0)} selected and "
                  f"{(hv.get('model_mask_chosen') or {}).get('control', 0)} control photos",
                  *([f"- accepted masks: ![accepted masks, round {s['round']}]({_relative(hv['contact_sheet'], out)})"]
                    if hv.get("contact_sheet") else []),
                  f"- model: `{s.get('model')}` (training: {s.get('train', {}).get('steps')} steps, best at step "
                  f"{s.get('train', {}).get('best_step')})", ""]
        ev = eval_rows(rd, s)
        if ev:
            lines += ["| set | metric | n | before | after | after - before (95% CI) |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['set']} | {r['metric']} | {r['n']} | {r['before']:.3f} ({r['before_model']}) | {r['after']:.3f} | "
                      f"{r['delta']:+.3f} [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}] |" for r in ev]
            lines.append("")
        cats = category_rows(rd, s)
        if cats:
            lines += ["Pool failure score (lower is better), the same photos and teachers before and after:", "",
                      "| category | n | before | after | after - before (95% CI) |", "|---|---|---|---|---|"]
            lines += [f"| {r['category']} | {r['n']} | {r['before']:.3f} | {r['after']:.3f} | "
                      f"{r['delta']:+.3f} [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}] |" for r in cats]
            lines.append("")
        flat += [{"kind": "eval", **r} for r in ev] + [{"kind": "category", **r} for r in cats]
    md = io.join(out, "rounds.md")
    io.write_bytes(md, ("\n".join(lines) + "\n").encode())
    keys = ["kind", "round", "set", "category", "metric", "n", "before_model", "before", "after", "delta", "delta_low", "delta_high"]
    buf = _pyio.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(flat)
    io.write_bytes(io.join(out, "rounds.csv"), buf.getvalue().encode())
    return md
