"""What a synthesis or training setting does to real photos: learning curves of variants.

A variant is a name plus overrides of the CPU recipe's synth and train configs
(``configs/cpu/synth.yaml``, ``configs/cpu/train.yaml``). Every variant trains the same number of
steps from the packaged Lite weights with a small encoder at a small size (Lite0 at 224 px by
default: a variant takes minutes), in this process (``segsynth.train.local``: the loop of
``segsynth train`` without Ray), and is validated on real photos every ``--val-every`` steps:

- chosen on (``select: true``, what picks winners and best/): furniture_dev's select half and
  ECSSD dev 0001-0050;
- reported on (``select: false``, never used to choose): furniture_dev's report half, ECSSD dev
  0051-0100 and PASCAL-S dev.

Writes, under ``--out``: one plot of IoU by step per real set (one line per variant and seed),
``results.json`` and the "What the synthetic data teaches" section of BENCHMARKS.md: per
variant and set the final, best, step of best and the slope over the last half of the curve,
and on the report sets the final weights' per-photo IoU with 95% intervals and the difference
to the reference variant paired per photo. Synthesis is cached by its settings (a variant
sharing another's synth overrides, or a rerun, only trains), and a finished training run is
reused.

    python benchmarks/recipe_ablation.py --write                                   # every variant, seed 0
    python benchmarks/recipe_ablation.py --variants recipe,no-scenes --seeds 0,1 --write
    python benchmarks/recipe_ablation.py --list                                     # the variants and their overrides
    python benchmarks/recipe_ablation.py --render --write                           # re-render the saved results

Needs the recipe's cutouts (``segsynth cutouts --config configs/cpu/cutouts.yaml``).
"""
from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _sections import write_section  # noqa: E402

log = logging.getLogger("recipe_ablation")
HEADING = "## What the synthetic data teaches"
DATA = os.environ.get("SEGSYNTH_DATA", str(REPO.parent / "shared" / "data"))

# (label, folder under DATA/eval, stems, half, select): the real sets on every curve
REAL_SETS = (("furniture_select", "furniture_dev", None, "select", True),
             ("ecssd_1-50", "ecssd_dev", "1-50", None, True),
             ("furniture_report", "furniture_dev", None, "report", False),
             ("ecssd_51-100", "ecssd_dev", "51-100", None, False),
             ("pascal_s", "pascal_s_dev", None, None, False))
REPORT_SETS = tuple(s[0] for s in REAL_SETS if not s[4])
SELECT_SETS = tuple(s[0] for s in REAL_SETS if s[4])

# Every variant starts from the CPU recipe as it was before this ablation (scenes 40%, BatchNorm
# updated), whatever configs/cpu/*.yaml hold now, so the reference and the caches stay fixed when
# the recipe takes up a winner.
BASE_SYNTH = ["scene_backgrounds=[../shared/data/scenes/ikea_rooms/images]", "scene_share=0.5",
              "composite.bg_weights={white: 0.15, solid: 0.05, noise: 0.1, floor_wall: 0.2, room: 0.1, scene: 0.4}",
              "composite.distractor_kinds={scene: 1.0}", "composite.distractor_count_max=4",
              "composite.distractor_max_product_area=null", "composite.distractor_shadow_prob=0.0",
              "composite.distractor_defocus_max_px=0.0"]
BASE_TRAIN = ["freeze_encoder_bn=false"]
FROZEN = ["freeze_encoder_bn=true"]
NO_SCENES = ["composite.bg_weights={white: 0.15, solid: 0.05, noise: 0.1, floor_wall: 0.4, room: 0.3}"]
# clutter that is plainly background: smaller than the product, often out of focus, casting shadows
CLUTTER = ["composite.distractor_kinds={scene: 1.0, room: 0.6, floor_wall: 0.6}",
           "composite.distractor_max_product_area=0.5", "composite.distractor_shadow_prob=0.7",
           "composite.distractor_defocus_max_px=2.5", "composite.distractor_count_max=3"]
SCENES_01 = ["composite.bg_weights={white: 0.15, solid: 0.05, noise: 0.1, floor_wall: 0.35, room: 0.25, scene: 0.1}"]


class Variant(NamedTuple):
    """One hypothesis: ``synth`` and ``train`` overrides on top of the recipe's configs."""

    why: str
    synth: tuple[str, ...] = ()
    train: tuple[str, ...] = ()


VARIANTS = {
    "recipe": Variant("the CPU recipe's settings (scenes 40%, encoder BatchNorm updated)"),
    "frozen-bn": Variant("encoder BatchNorm in eval mode", train=tuple(FROZEN)),
    "hygiene": Variant("frozen BN, encoder lr x0.1, no decay on norms and biases, EMA 0.99",
                       train=tuple(FROZEN + ["encoder_lr_scale=0.1", "decay_norm_and_bias=false", "ema_decay=0.99"])),
    "no-scenes": Variant("frozen BN, no furnished scenes (floors and rooms take their share)",
                         synth=tuple(NO_SCENES), train=tuple(FROZEN)),
    "clutter": Variant("no scenes; distractors on rooms and floors too, at most half the product's area, "
                       "with shadows, out of focus", synth=tuple(NO_SCENES + CLUTTER), train=tuple(FROZEN)),
    "clutter-hygiene": Variant("clutter, and the hygiene's encoder lr x0.1, no decay on norms and biases, EMA 0.99",
                               synth=tuple(NO_SCENES + CLUTTER),
                               train=tuple(FROZEN + ["encoder_lr_scale=0.1", "decay_norm_and_bias=false", "ema_decay=0.99"])),
    "clutter-scenes-0.1": Variant("clutter, and furnished scenes at 10%", synth=tuple(SCENES_01 + CLUTTER),
                                  train=tuple(FROZEN)),
    "clutter-cut": Variant("clutter, and 30% of products cut by the frame",
                           synth=tuple(NO_SCENES + CLUTTER + ["composite.product_cut_prob=0.3"]), train=tuple(FROZEN)),
    "clutter-harmonize": Variant("clutter, and the product's colours moved towards the background's (60%)",
                                 synth=tuple(NO_SCENES + CLUTTER + ["composite.harmonize_prob=0.6"]),
                                 train=tuple(FROZEN)),
    # furniture_dev's select half (94 masks): the product's longer side is 0.67..0.99 of the frame
    # (5th..95th percentile, median 0.88), centred within +-0.06, and 18% touch a border (half of
    # them the bottom); the recipe draws 0.45..0.9 anywhere and never cuts
    "clutter-placement": Variant("clutter, and placement and scale as measured on furniture_dev's select half "
                                 "(longer side 0.65-1.0, mostly centred, 20% cut by the frame)",
                                 synth=tuple(NO_SCENES + CLUTTER + [
                                     "composite.scale_min=0.65", "composite.scale_max=1.0",
                                     "composite.placement_weights={center: 0.7, golden: 0.2, random: 0.1}",
                                     "composite.product_cut_prob=0.2"]), train=tuple(FROZEN)),
    "noise-mix": Variant("the method's first mix: 80% noise, 10% white, 10% rooms, no distractors or occluders",
                         synth=("composite.bg_weights={noise: 0.8, white: 0.1, room: 0.1}", "composite.occluder_prob=0.0"),
                         train=tuple(FROZEN)),
}
REFERENCE = "recipe"
INTERVAL = 0.95  # of the means and of the paired differences (bootstrap over photos)
SLOPE_PER = 100  # the curves' slope is given per this many steps


# ---------------------------------------------------------------- synthesis (cached by its settings)
def synth_config(variant: Variant, args):
    from segsynth.config import load_config
    from segsynth.synth.config import SynthConfig

    base = [f"size={args.size}", f"samples_per_cutout={args.samples_per_cutout}", "contact_sheet=16",
            "out=PLACEHOLDER"] + ([f"limit_cutouts={args.limit_cutouts}"] if args.limit_cutouts else [])
    return load_config(SynthConfig, str(REPO / "configs" / "cpu" / "synth.yaml"), base + BASE_SYNTH + list(variant.synth))


def synth_key(cfg) -> str:
    """12 hex digits of the settings that change the samples (``segsynth.synth.shards.sample_settings``)."""
    import yaml

    from segsynth.config import dump_config
    from segsynth.synth.shards import sample_settings

    settings = sample_settings(yaml.safe_load(dump_config(cfg)))
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def synthesize(variant: Variant, args, out: Path) -> Path:
    import dataclasses

    from segsynth.synth.job import run as synth_run

    cfg = synth_config(variant, args)
    folder = out / "synth" / synth_key(cfg)
    if (folder / "summary.json").is_file():
        log.info("synthesis cached in %s", folder)
        return folder
    synth_run(dataclasses.replace(cfg, out=str(folder)))
    import ray

    ray.shutdown()  # training runs in this process: Ray's idle daemons would take CPU from it
    return folder


# ---------------------------------------------------------------- training (this process)
def val_data_spec() -> str:
    items = []
    for label, folder, stems, half, select in REAL_SETS:
        parts = [f"path: '{DATA}/eval/{folder}'", f"name: {label}", f"select: {str(select).lower()}"]
        if stems:
            parts.append(f"stems: '{stems}'")
        if half:
            parts.append(f"split: {{half: {half}}}")
        items.append("{" + ", ".join(parts) + "}")
    return "[" + ", ".join(items) + "]"


def train_config(name: str, variant: Variant, synth: Path, seed: int, args, out: Path):
    from segsynth.config import load_config
    from segsynth.train.config import TrainConfig

    overrides = [f"data=[{{path: '{synth}', kind: synthetic}}]", f"out={out / 'runs' / f'{name}-s{seed}'}",
                 f"name={name}-s{seed}", f"seed={seed}", f"encoder_name={args.encoder}", f"size={args.size}",
                 f"max_steps_per_epoch={args.steps}", "epochs=1", f"val_every_steps={args.val_every}",
                 f"checkpoint_every_steps={args.steps}", "time_budget_min=null", f"val_data={val_data_spec()}",
                 "num_workers=1", "cpus_per_worker=2", f"torch_threads={args.threads}", "select_on=iou"]
    return load_config(TrainConfig, str(REPO / "configs" / "cpu" / "train.yaml"),
                       overrides + BASE_TRAIN + list(variant.train))


def train(cfg) -> dict:
    from segsynth.train.local import run_local

    from segsynth.config import dump_config

    done, resolved = Path(cfg.out) / "summary.json", Path(cfg.out) / "config.yaml"
    if done.is_file() and resolved.is_file() and resolved.read_text() == dump_config(cfg):
        log.info("%s: reusing the finished run", cfg.out)  # same settings, finished: nothing to train
        return json.loads(done.read_text())
    summary = run_local(cfg)
    gc.collect()
    return summary


def curve(run_dir: Path) -> list[dict]:
    """``[{step, <set>: iou, <set>_ssim: ssim_box}]`` of a run's metrics.csv rows."""
    rows = []
    for r in csv.DictReader((run_dir / "metrics.csv").open()):
        row = {"step": int(r["step"])}
        for label, *_ in REAL_SETS:
            if r.get(f"val_{label}_iou"):
                row[label] = float(r[f"val_{label}_iou"])
                row[f"{label}_ssim"] = float(r[f"val_{label}_ssim_box"])
                row[f"{label}_mae"] = float(r[f"val_{label}_mae"])
        rows.append(row)
    return rows


def per_photo(model_dir: Path, threads: int) -> dict[str, list[dict]]:
    """The final weights on each report set, per photo: ``{set: [{stem, category, iou, ssim_box, mae}]}``."""
    from segsynth import io
    from segsynth import metrics as M
    from segsynth.predict import load_predictor

    predictor = load_predictor(str(model_dir), kind="checkpoint", threads=threads)
    out = {}
    for label, folder, stems, half, select in REAL_SETS:
        if select:
            continue
        rows = []
        for it in io.labelled_folder(f"{DATA}/eval/{folder}", stems, half):
            image, truth = io.read_image(it["image"]), io.read_mask(it["mask"])
            pred = predictor.predict_one(image)
            rows.append({"stem": it["stem"], "category": it["category"], "iou": M.iou(pred, truth),
                         "ssim_box": M.ssim_box(pred, truth), "mae": M.mae(pred, truth)})
        out[label] = rows
    return out


def batch_diversity(args, batch_size: int = 8, pool_rows: int = 256, batches: int = 2000) -> dict:
    """Distinct products per training batch of the recipe's synthesis plan, by shard order:
    Ray Train's loader reads whole shards in a random block order and shuffles ``pool_rows``
    rows at a time (``shuffle_pool``), so a batch draws from the products of one or two
    neighbouring shards; the in-process loop permutes every row. Computed from the shard plan
    alone (no pixels), ``batches`` batches each."""
    import dataclasses

    import numpy as np

    from segsynth.split import product_key
    from segsynth.synth.shards import plan_shards

    cfg = synth_config(VARIANTS[REFERENCE], args)
    cfg = dataclasses.replace(cfg, cutouts=str(REPO / "outputs" / "cpu" / "cutouts"),
                              samples_per_cutout=12, shard_size=128)  # the recipe's own plan
    rng = np.random.default_rng(0)
    out = {}
    for order in ("product", "mixed"):
        shards = plan_shards(dataclasses.replace(cfg, shard_order=order))
        rows = [product_key(c) for s in shards for c in s["cutout_ids"]]
        counts = []
        blocks = [[product_key(c) for c in s["cutout_ids"]] for s in shards]
        while len(counts) < batches:
            stream = [p for i in rng.permutation(len(blocks)) for p in blocks[i]]
            for start in range(0, len(stream) - pool_rows + 1, pool_rows):
                pool = rng.permutation(stream[start:start + pool_rows])
                counts += [len(set(pool[b:b + batch_size])) for b in range(0, pool_rows, batch_size)]
        whole = [len(set(rng.choice(rows, batch_size, replace=False))) for _ in range(batches)]
        out[order] = {"ray_loader": float(np.mean(counts[:batches])), "global_permutation": float(np.mean(whole))}
    out.update(batch_size=batch_size, pool_rows=pool_rows)
    return out


# ---------------------------------------------------------------- reductions
def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope per :data:`SLOPE_PER` steps over the last half of the curve (None with < 2 points)."""
    import numpy as np

    if not points:
        return None
    last = points[-1][0]
    pts = [(s, v) for s, v in points if s >= last / 2]
    if len(pts) < 2:
        return None
    x, y = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
    return float(np.polyfit(x, y, 1)[0] * SLOPE_PER)


def reduce_curves(curves: list[list[dict]], label: str) -> dict:
    """Final, best, step of best and slope of the seeds' mean curve on ``label``."""
    steps = sorted({r["step"] for c in curves for r in c if label in r})
    mean = []
    for s in steps:
        vals = [r[label] for c in curves for r in c if r["step"] == s and label in r]
        if len(vals) == len(curves):
            mean.append((s, sum(vals) / len(vals)))
    if not mean:
        return {}
    best = max(mean, key=lambda p: p[1])
    return {"final": mean[-1][1], "best": best[1], "best_step": best[0], "slope": slope(mean),
            "seeds_final": [c[-1].get(label) for c in curves]}


def compare(per_seed: dict[str, list[dict]], reference: dict[str, list[dict]] | None, name: str) -> dict:
    """Per report set: mean IoU of the final weights (per photo, averaged over seeds) with a 95%
    bootstrap interval, per category, and the paired per-photo difference to ``reference``."""
    from segsynth import metrics as M

    out = {}
    for label in REPORT_SETS:
        by_stem = _seed_mean(per_seed, label)
        m, lo, hi, n = M.mean_ci([v["iou"] for v in by_stem.values()], level=INTERVAL, seed=(name, label))
        cats = {}
        for v in by_stem.values():
            cats.setdefault(v["category"], []).append(v["iou"])
        entry = {"iou": m, "iou_lo": lo, "iou_hi": hi, "n": n,
                 "mae": sum(v["mae"] for v in by_stem.values()) / max(1, len(by_stem)),
                 "ssim_box": sum(v["ssim_box"] for v in by_stem.values()) / max(1, len(by_stem)),
                 "by_category": {c: sum(v) / len(v) for c, v in sorted(cats.items())} if len(cats) > 1 else {}}
        if reference is not None:
            ref = _seed_mean(reference, label)
            diffs = [by_stem[s]["iou"] - ref[s]["iou"] for s in by_stem if s in ref]
            d, dlo, dhi, _ = M.mean_ci(diffs, level=INTERVAL, seed=(name, label, "paired"))
            entry.update(diff=d, diff_lo=dlo, diff_hi=dhi)
        out[label] = entry
    return out


def seed_spread(v: dict, label: str) -> float:
    """How far apart a variant's seeds end on report set ``label`` (mean IoU of the final
    weights); 0 with one seed."""
    means = [sum(r["iou"] for r in rows[label]) / len(rows[label]) for rows in v["per_photo"].values()]
    return max(means) - min(means) if len(means) > 1 else 0.0


def _seed_mean(per_seed: dict[str, list[dict]], label: str) -> dict[str, dict]:
    """``{stem: {iou, ssim_box, mae, category}}`` averaged over the seeds that ran."""
    acc: dict[str, dict] = {}
    runs = [rows[label] for rows in per_seed.values()]
    for rows in runs:
        for r in rows:
            a = acc.setdefault(r["stem"], {"category": r["category"], "iou": 0.0, "ssim_box": 0.0, "mae": 0.0})
            for k in ("iou", "ssim_box", "mae"):
                a[k] += r[k] / len(runs)
    return acc


# ---------------------------------------------------------------- plots and the section
def plot(results: dict, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = results["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, s in zip(axes, sets):
        label = s["label"]
        for i, (name, v) in enumerate(results["variants"].items()):
            for j, (seed, c) in enumerate(sorted(v["curves"].items())):
                pts = [(r["step"], r[label]) for r in c if label in r]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ("-" if j == 0 else "--"),
                        color=colours[i % len(colours)], label=name if j == 0 else None, lw=1.4)
        ax.set_title(label + (" (chooses)" if s["select"] else " (reports)"), fontsize=9)
        ax.set_xlabel("step"), ax.grid(alpha=0.3)
    axes[0].set_ylabel("IoU (real photos)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def section(r: dict) -> str:
    """The "## What the synthetic data teaches" section from one run's results alone."""
    st, ref, pct = r["settings"], r["reference"], f"{100 * r['interval']:.0f}%"
    labels = [s["label"] for s in r["sets"]]
    choose = [s["label"] for s in r["sets"] if s["select"]]
    report = [s["label"] for s in r["sets"] if not s["select"]]
    groups: dict[str, list[str]] = {}  # variants by the seeds they ran: one command per group
    for name, v in r["variants"].items():
        groups.setdefault(",".join(sorted(v["curves"], key=int)), []).append(name)
    cmd = " and ".join(f"`python benchmarks/recipe_ablation.py --variants {','.join(names)} --seeds {seeds} "
                       f"--steps {st['steps']} --val-every {st['val_every']} --samples-per-cutout "
                       f"{st['samples_per_cutout']} --write`" for seeds, names in groups.items())
    lines = [HEADING, "", f"{cmd} ({r['date']}, {r['cores']} cores, {r['wall_min']:.0f} min): each variant trains "
             f"{st['steps']} steps of batch {st['batch_size']} from the packaged ImageNet weights, FPN + "
             f"`{st['encoder']}` at {st['size']} px, in one process (`segsynth.train.local`, the loop of "
             f"`segsynth train`), on {st['samples_per_cutout']} composites per product of the recipe's "
             f"{st['products']} cutouts synthesised with the variant's settings, and is validated on real photos every "
             f"{st['val_every']} steps. Variants are chosen on {' and '.join(choose)}; "
             f"{', '.join(report)} are never used to choose. Seeds per variant in the tables (training seed: "
             "initialisation, augmentation, order; the same synthetic set).", ""]
    if r.get("curves_png"):
        lines += [f"![IoU by step, one panel per real set]({r['curves_png']})", ""]
    lines += [f"IoU on real photos: final (best @ step, slope per {st['slope_per']} steps over the last half of "
              "the seeds' mean curve):", "",
              "| variant | what it changes | seeds | " + " | ".join(labels) + " |",
              "|---|---|---|" + "---|" * len(labels)]
    for name, v in r["variants"].items():
        cells = []
        for label in labels:
            c = v["curve_summary"].get(label) or {}
            if not c:
                cells.append("n/a")
                continue
            sl = "n/a" if c["slope"] is None else f"{c['slope']:+.3f}"
            cells.append(f"{c['final']:.3f} ({c['best']:.3f} @ {c['best_step']}, {sl})")
        lines.append(f"| {name} | {v['why']} | {', '.join(sorted(v['curves']))} | " + " | ".join(cells) + " |")
    lines += ["", f"Final weights on the report sets, per photo (mean over seeds; {pct} bootstrap interval; "
                  f"difference to `{ref}` paired per photo):", "",
              "| variant | " + " | ".join(f"{s} IoU [{pct}] | vs {ref}" for s in report) + " | " + report[0]
              + " by category |", "|---|" + "---|---|" * len(report) + "---|"]
    for name, v in r["variants"].items():
        cells = []
        for label in report:
            e = v["report"][label]
            diff = ("—" if "diff" not in e or name == ref
                    else f"{e['diff']:+.3f} [{e['diff_lo']:+.3f}, {e['diff_hi']:+.3f}]")
            cells.append(f"{e['iou']:.3f} [{e['iou_lo']:.3f}, {e['iou_hi']:.3f}] | {diff}")
        cats = v["report"][report[0]].get("by_category") or {}
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + ", ".join(f"{c} {x:.2f}" for c, x in cats.items()) + " |")
    lines += [""] + findings(r)
    d = r.get("diversity")
    if d:
        lines += ["", f"Batches: with the recipe's shard plan, a batch of {d['batch_size']} under Ray Train's loader "
                      f"(whole shards in a random block order, {d['pool_rows']}-row shuffle pools) holds "
                      f"{d['product']['ray_loader']:.2f} distinct products on average when a shard holds consecutive "
                      f"products (`shard_order: product`, before) and {d['mixed']['ray_loader']:.2f} with "
                      f"`shard_order: mixed` (now the default); a permutation of all rows (the in-process loop "
                      f"above) gives {d['mixed']['global_permutation']:.2f}."]
    return "\n".join(lines) + "\n"


def findings(r: dict) -> list[str]:
    """Sentences computed from the numbers: which variants differ from the reference beyond
    their intervals and their seeds' spread, which curves still rise, and the leader on the
    choosing sets."""
    out, ref, variants = [], r["reference"], r["variants"]
    choose = [s["label"] for s in r["sets"] if s["select"]]
    for label in [s["label"] for s in r["sets"] if not s["select"]]:
        ahead, behind, level = [], [], []
        for n, v in variants.items():
            if n == ref or "diff" not in v["report"][label]:
                continue
            e, noise = v["report"][label], max(seed_spread(v, label), seed_spread(variants[ref], label))
            if min(len(v["per_photo"]), len(variants[ref]["per_photo"])) < 2:
                level.append(f"`{n}` ({e['diff']:+.3f}, one seed)")
                continue
            (ahead if e["diff_lo"] > 0 and e["diff"] > noise else behind if e["diff_hi"] < 0 and -e["diff"] > noise
             else level).append(f"`{n}` ({e['diff']:+.3f})")
        out.append(f"- {label}: ahead of `{ref}` (paired interval clear of zero and the difference larger than "
                   f"either's seed-to-seed spread): {', '.join(ahead) or 'none'}; behind: {', '.join(behind) or 'none'}; "
                   f"not separated: {', '.join(level) or 'none'}.")
    rising = [n for n, v in variants.items()
              if all((v["curve_summary"].get(s) or {}).get("slope") is not None
                     and v["curve_summary"][s]["slope"] > 0 for s in choose)]
    out.append(f"- Still rising over the last half on every choosing set: {', '.join(f'`{n}`' for n in rising) or 'none'}.")
    score = {n: sum((v["curve_summary"].get(s) or {}).get("final", 0.0) for s in choose) / len(choose)
             for n, v in variants.items()}
    lead = max(score, key=score.get)
    seeds = sorted(variants[lead]["curves"])
    out.append(f"- Highest final IoU on the choosing sets (mean of {', '.join(choose)}): `{lead}` "
               f"({score[lead]:.3f}), with seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"
               + ("; a winner only with two seeds." if len(seeds) < 2 else "."))
    rivals = [n for n in sorted(score, key=score.get, reverse=True) if n not in (lead, ref)][:2]
    for rival in rivals:  # the leader against the next ones, paired per photo on the report sets
        vs = compare(variants[rival]["per_photo"], variants[lead]["per_photo"], f"{rival}-vs-{lead}")
        parts = [f"{label} {vs[label]['diff']:+.3f} [{vs[label]['diff_lo']:+.3f}, {vs[label]['diff_hi']:+.3f}]"
                 for label in vs if "diff" in vs[label]]
        clear = [label for label in vs if "diff" in vs[label] and (vs[label]["diff_lo"] > 0 or vs[label]["diff_hi"] < 0)]
        one_seed = " (one seed: the interval leaves out the seed-to-seed spread)" if min(
            len(variants[rival]["per_photo"]), len(variants[lead]["per_photo"])) < 2 else ""
        out.append(f"- `{rival}` against `{lead}`{one_seed}, paired per photo: {', '.join(parts)}; "
                   + (f"the interval is clear of zero on {', '.join(clear)}." if clear
                      else "no interval is clear of zero, so this run does not separate the two."))
    return out


# ---------------------------------------------------------------- main
def measure(args, out: Path) -> dict:
    import pyarrow.parquet as pq

    manifest = REPO / "outputs" / "cpu" / "cutouts" / "manifest.parquet"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} is missing: run `segsynth cutouts --config configs/cpu/cutouts.yaml` first")
    wanted = [v for v in args.variants.split(",") if v]
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown[0]!r}; valid: {', '.join(VARIANTS)} (--list shows them)")
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    saved = out / "results.json"
    results = json.loads(saved.read_text()) if saved.is_file() and not args.fresh else {"variants": {}}
    for name in wanted:
        variant = VARIANTS[name]
        synth = synthesize(variant, args, out)
        entry = results["variants"].setdefault(name, {"curves": {}, "per_photo": {}})
        entry.update(why=variant.why, synth=os.path.relpath(synth, REPO), synth_overrides=list(variant.synth),
                     train_overrides=list(variant.train))
        for seed in seeds:
            cfg = train_config(name, variant, synth, seed, args, out)
            train(cfg)
            entry["curves"][str(seed)] = curve(Path(cfg.out))
            entry["per_photo"][str(seed)] = per_photo(Path(cfg.out) / "last", args.threads)
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(results, default=float))  # a crash keeps what finished
    results["diversity"] = batch_diversity(args)
    cfg0 = train_config(REFERENCE, VARIANTS[REFERENCE], out, 0, args, out)
    results.update(date=time.strftime("%Y-%m-%d"), cores=os.cpu_count(),
                   wall_min=results.get("wall_min", 0.0) + (time.perf_counter() - started) / 60,
                   settings={"steps": args.steps, "val_every": args.val_every, "encoder": args.encoder, "size": args.size,
                             "batch_size": cfg0.batch_size, "samples_per_cutout": args.samples_per_cutout,
                             "seeds": args.seeds, "products": pq.read_metadata(manifest).num_rows})
    return results


def finalize(results: dict, out: Path, publish_png: Path | None = None) -> dict:
    """Curve summaries, report-set comparisons and the plot, from the saved curves and per-photo
    rows; the plot is also copied to ``publish_png`` (the figure BENCHMARKS.md shows)."""
    results.update(reference=REFERENCE, interval=INTERVAL,
                   sets=[{"label": label, "select": select} for label, _, _, _, select in REAL_SETS])
    results["settings"]["slope_per"] = SLOPE_PER
    ref = results["variants"].get(REFERENCE, {}).get("per_photo")
    for name, v in results["variants"].items():
        curves = [v["curves"][s] for s in sorted(v["curves"])]
        v["curve_summary"] = {label: reduce_curves(curves, label) for label, *_ in REAL_SETS}
        v["report"] = compare(v["per_photo"], ref, name)
    png = Path(plot(results, out))
    if publish_png is not None:
        import shutil

        shutil.copyfile(png, publish_png)
        png = publish_png
    results["curves_png"] = os.path.relpath(png, REPO)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; --list shows them")
    ap.add_argument("--seeds", default="0", help="training seeds, comma-separated (two before naming a winner)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--encoder", default="tu-tf_efficientnet_lite0", help="encoder of every variant (packaged weights)")
    ap.add_argument("--size", type=int, default=224, help="synthesis, training and inference size")
    ap.add_argument("--samples-per-cutout", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-cutouts", type=int, default=None, help="synthesise only the first N products (a quick check)")
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench" / "ablation"))
    ap.add_argument("--fresh", action="store_true", help="forget the saved results.json (finished runs are still reused)")
    ap.add_argument("--list", action="store_true", help="print the variants and their overrides, then stop")
    ap.add_argument("--render", action="store_true", help="train nothing: render the saved --out/results.json")
    ap.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.list:
        for name, v in VARIANTS.items():
            print(f"{name}: {v.why}\n  synth: {' '.join(v.synth) or '-'}\n  train: {' '.join(v.train) or '-'}")
        return 0
    out = Path(args.out)
    results = json.loads((out / "results.json").read_text()) if args.render else measure(args, out)
    if args.render and "settings" not in results:
        raise SystemExit(f"{out / 'results.json'} holds no finished run yet")
    results = finalize(results, out, REPO / "docs" / "ablation_curves.png" if args.write else None)
    (out / "results.json").write_text(json.dumps(results, default=float))
    text = section(results)
    sys.stdout.write(text)
    if args.write:
        write_section(REPO / "BENCHMARKS.md", HEADING, text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
