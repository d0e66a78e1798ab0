"""One unattended active-learning round against the same training budget without it.

    python benchmarks/active.py --write          # about 45 min on 2 cores; needs the CPU recipe's
                                                 # model (outputs/cpu/train/best), its synthetic set,
                                                 # ../shared/data and the DIS model

Both arms start from the CPU recipe's model and train the same steps with the same config
(``configs/active.yaml``'s ``train_config`` and ``train_overrides``): *with* is one round of
``segsynth active round`` with the auto-accept policy (DIS agrees with the model), so its
training data adds the accepted real photos and their context samples; *without* trains on the
recipe's synthetic data alone. Both are evaluated on the dev pairs that nothing selects on
(ECSSD 51-100, PASCAL-S 1-100; training selects on ECSSD 1-50), per set and pooled, with paired
95% bootstrap intervals. Results go to ``outputs/bench/active.json``; :func:`section` renders
the "## Active learning" section of BENCHMARKS.md from them alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _sections import finish  # noqa: E402

log = logging.getLogger("bench.active")
HEADING = "## Active learning"
METRICS = ("ssim_box", "iou")
METHOD_SHARE = 0.05  # the method's write-up: about 2000 accepted samples, 5% of its training data


def _paired(samples: dict[str, dict[str, dict[str, float]]], a: str, b: str, metric: str, seed: str) -> dict:
    """Mean of ``b - a`` over the items both have, with a 95% bootstrap interval."""
    from segsynth import metrics as M

    common = sorted(set(samples[a]) & set(samples[b]))
    d = [samples[b][s][metric] - samples[a][s][metric] for s in common]
    mean, lo, hi, n = M.mean_ci(d, seed=seed)
    return {"n": n, "delta": mean, "lo": lo, "hi": hi}


def _means(samples: dict[str, dict[str, float]], metric: str, seed: str) -> dict:
    from segsynth import metrics as M

    mean, lo, hi, n = M.mean_ci([v[metric] for v in samples.values()], seed=seed)
    return {"n": n, "mean": mean, "lo": lo, "hi": hi}


def run(args) -> dict:
    from segsynth import io
    from segsynth.active.config import ActiveConfig
    from segsynth.active.job import _train_config, run_rounds
    from segsynth.config import load_config
    from segsynth.evaluate import job as eval_job
    from segsynth.evaluate.config import EvalConfig, EvalModel
    from segsynth.train import job as train_job

    out = Path(args.out)
    cfg = load_config(ActiveConfig, args.config, [f"out={out / 'with'}", "auto_accept.enabled=true", *args.overrides])
    cached = {t.name: len(list(Path(out / "with" / "teachers" / t.name).glob("*.png"))) for t in cfg.teachers}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with_summary = run_rounds(cfg)
    with_s = time.perf_counter() - t0
    rd = out / "with" / "round-1"
    hv = json.loads((rd / "harvest.json").read_text())
    sel = json.loads((rd / "select_summary.json").read_text())
    score = json.loads((rd / "score_summary.json").read_text())

    # the same budget without the round: the same training config, the recipe's data alone
    base = cfg.model
    tcfg = _train_config(cfg, rd, base, {"accepted": 0, "context_cutouts": 0}, None)
    tcfg = dataclasses.replace(tcfg, out=str(out / "without" / "train"), name="active-bench-without")
    t0 = time.perf_counter()
    ts = train_job.run(tcfg)
    without_s = time.perf_counter() - t0
    without = EvalModel(name="without", kind="checkpoint", path=ts["best"])
    sets = []
    for ev in cfg.eval:
        ecfg = EvalConfig(data=ev.data, stems=ev.stems, models=[without], out=str(out / "without" / "eval" / ev.label))
        eval_job.run(ecfg, command="benchmarks/active.py (without)")
        rows = io.read_parquet(str(rd / "report" / ev.label / "samples.parquet")).to_pylist()
        rows += io.read_parquet(str(out / "without" / "eval" / ev.label / "samples.parquet")).to_pylist()
        per: dict[str, dict[str, dict[str, float]]] = {}
        for r in rows:
            name = {"round-1": "with"}.get(r["model"], r["model"])
            name = "base" if name not in ("with", "without") else name
            per.setdefault(name, {})[f"{ev.label}/{r['stem']}"] = {m: float(r[m]) for m in METRICS}
        sets.append({"set": ev.label, "data": ev.data, "stems": ev.stems, "per": per})
    pooled = {k: {} for k in ("base", "with", "without")}
    for s in sets:
        for k in pooled:
            pooled[k].update(s["per"][k])
    table = []
    for label, per in [*((s["set"], s["per"]) for s in sets), ("pooled", pooled)]:
        for m in METRICS:
            table.append({"set": label, "metric": m,
                          **{arm: _means(per[arm], m, f"{label}/{m}/{arm}") for arm in ("base", "with", "without")},
                          "with_minus_without": _paired(per, "without", "with", m, f"{label}/{m}/ww"),
                          "with_minus_base": _paired(per, "base", "with", m, f"{label}/{m}/wb")})
    train_with = json.loads((rd / "train" / "summary.json").read_text()) if (rd / "train" / "summary.json").exists() else {}
    return {
        "command": "python benchmarks/active.py " + shlex.join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(), "load_avg": [round(load0, 1), round(os.getloadavg()[0], 1)],
        "config": args.config, "base_model": base.path,
        "pool": {"photos": score["photos"], "scored": score["scored"], "skipped_white": score["skipped_white"],
                 "seen_by_synthesis": score.get("seen_by_synthesis", 0), "worst_categories": score["worst_categories"]},
        "select": {k: sel.get(k) for k in ("selected", "control", "near_duplicate", "category_cap", "white_background")},
        "auto_accept_min_iou": cfg.auto_accept.min_iou, "auto_accept_max_entropy": cfg.auto_accept.teacher_max_entropy,
        "accepted_by": {k: hv.get("accepted_by", {}).get(k, 0) for k in ("teacher_agrees", "teacher_confident")},
        "teacher_masks_cached_before": sum(cached.values()),
        "harvest": {k: hv[k] for k in ("accepted", "accepted_control", "context_cutouts", "model_mask_chosen", "automatic")},
        "train": {"steps_with": train_with.get("steps"), "steps_without": ts.get("steps"),
                  "best_step_with": train_with.get("best_step"), "best_step_without": ts.get("best_step"),
                  "overrides": list(cfg.train_overrides), "train_config": cfg.train_config, "weight": cfg.harvest.weight},
        "wall_s": {"with_round": round(with_s, 1), "without_train": round(without_s, 1)},
        "harvest_share": harvest_share(out, cfg.harvest.weight),
        "method_share": METHOD_SHARE,
        "rounds_table": with_summary.get("table"), "interval": 0.95,  # segsynth.metrics.mean_ci's default level
        "table": table,
    }


def harvest_share(out: Path, weight: float) -> dict:
    """What the harvest added to the round's training, from the run's own files: accepted photo
    rows (times their weight), context samples, all training rows per epoch, samples seen."""
    rd = out / "with" / "round-1"
    hv = json.loads((rd / "harvest.json").read_text())
    train = json.loads((rd / "train" / "summary.json").read_text())
    cfg = (rd / "train" / "config.yaml").read_text()
    batch = next(int(line.split(":", 1)[1]) for line in cfg.splitlines() if line.startswith("batch_size:"))
    ctx = rd / "context_synth" / "summary.json"
    context = json.loads(ctx.read_text())["samples_written"] if ctx.is_file() else 0
    rows = train["train_rows_per_epoch"]
    added = hv["accepted"] * weight + context
    return {"accepted_rows": hv["accepted"] * weight, "context_samples": context, "train_rows": rows,
            "share": added / rows if rows else None, "samples_seen": train["steps"] * batch}


def _f(v, d: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{d}f}"


def _ci(x: dict) -> str:
    return f"{_f(x['mean'])} [{_f(x['lo'])}, {_f(x['hi'])}]"


def _d(x: dict) -> str:
    return f"{x['delta']:+.3f} [{x['lo']:+.3f}, {x['hi']:+.3f}]"


def section(r: dict) -> str:
    """The "## Active learning" section, every figure from ``r``."""
    hv, p, t = r["harvest"], r["pool"], r["train"]
    pooled = {row["metric"]: row for row in r["table"] if row["set"] == "pooled"}
    ssim = pooled["ssim_box"]["with_minus_without"]
    iou = pooled["iou"]
    moved_without = iou["without"]["mean"] - iou["base"]["mean"]
    moved_with = iou["with"]["mean"] - iou["base"]["mean"]
    sign = ("higher with the round than without it" if ssim["lo"] > 0 else
            "lower with the round than without it" if ssim["hi"] < 0 else
            "not different with and without the round by more than this many pairs can show")
    verdict = (f"The pooled SSIM (box) was {sign} ({_d(ssim)}). Both arms are one training run each, and the "
               "interval covers the choice of photos, not the run-to-run variation of training (data order, "
               f"seed): from the same starting model the arm without the round moved the pooled IoU by "
               f"{moved_without:+.3f} and the arm with it by {moved_with:+.3f}, while the harvest was "
               f"{_f(100 * r['harvest_share']['share'], 1)}% of the rows. A difference this large from so few rows "
               "needs a second seed per arm before it is credited to the round.")
    lines = [HEADING, "",
             f"`{r['command']}` ({r['date']}, {r['cores']} cores, one-minute load average {r['load_avg'][0]} at the "
             f"start and {r['load_avg'][1]} at the end). One unattended round of `segsynth active round` "
             f"(`{r['config']}`) from the CPU recipe's model `{r['base_model']}` against the same training budget "
             f"without it. Both arms start from that model with `{t['train_config']}` and "
             f"{', '.join('`' + o + '`' for o in t['overrides'])}; the arm with the round trained {t['steps_with']} "
             f"steps and the arm without it {t['steps_without']}.", "",
             f"- Pool: {p['photos']} photos, {p['scored']} scored ({p['skipped_white']} catalog photos on white not "
             f"scored; {p['seen_by_synthesis']} room photos left out because synthesis composites on them). Worst "
             f"categories: {', '.join(p['worst_categories'])}.",
             f"- Selection: {r['select']['selected']} photos plus a control slice of {r['select']['control']} "
             f"({r['select'].get('near_duplicate') or 0} near-duplicates and {r['select'].get('category_cap') or 0} "
             "over a category's cap left out).",
             f"- AUTOMATIC acceptance (no people): the teacher's (DIS) mask is accepted where it agrees with the "
             f"model's at IoU >= {r['auto_accept_min_iou']} ({r['accepted_by']['teacher_agrees']} photos) or where its "
             f"boundary entropy is at most {r['auto_accept_max_entropy']} bits ({r['accepted_by']['teacher_confident']} "
             f"photos). Accepted: {hv['accepted']} selected photos (training weight {t['weight']}) and "
             f"{hv['accepted_control']} of the control slice; {hv['context_cutouts']} context cutouts went into "
             "empty-room canvases. No person looked at these masks: a confident teacher can be confidently wrong.",
             f"- Weight of the harvest: {_f(r['harvest_share']['accepted_rows'], 0)} accepted-photo rows and "
             f"{r['harvest_share']['context_samples']} context samples among {r['harvest_share']['train_rows']} "
             f"training rows per epoch ({_f(100 * r['harvest_share']['share'], 1)}%), and the round's training saw "
             f"{r['harvest_share']['samples_seen']} samples in all; the method's accepted masks were about "
             f"{_f(100 * r['method_share'], 0)}% of its data.",
             f"- Wall time: the round {_f(r['wall_s']['with_round'], 0)} s (scoring, selection, harvest, context "
             f"synthesis, training, evaluation, rescoring), the arm without it {_f(r['wall_s']['without_train'], 0)} s "
             "of training" + (f"; {r['teacher_masks_cached_before']} teacher masks were cached from an earlier scoring "
                              "of the same pool, so the round's time leaves most of DIS out." if r['teacher_masks_cached_before']
                              else "."), "",
             f"Held-out dev pairs (nothing selects on them), mean with {round(100 * r['interval'])}% bootstrap interval; "
             "differences paired per photo:", "",
             "| set | metric | n | before (recipe model) | without the round | with the round | with - without | with - before |",
             "|---|---|---|---|---|---|---|---|"]
    for row in r["table"]:
        lines.append(f"| {row['set']} | {row['metric']} | {row['with']['n']} | {_ci(row['base'])} | {_ci(row['without'])} | "
                     f"{_ci(row['with'])} | {_d(row['with_minus_without'])} | {_d(row['with_minus_base'])} |")
    lines += ["", verdict + f" The round's own table (per category, control slice) is `{r['rounds_table']}`."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/active.yaml")
    p.add_argument("--out", default="outputs/bench/active")
    p.add_argument("--results", default="outputs/bench/active.json")
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    p.add_argument("--section-only", action="store_true", help="render the section from --results, run nothing")
    p.add_argument("overrides", nargs="*", help="key=value on the active config")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.chdir(REPO)
    return finish(args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
