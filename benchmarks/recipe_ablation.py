"""Two choices of the CPU recipe measured on real photos, each variant with the same budget and
schedule: the input normalisation of the packaged Lite weights (``lite``: (x - 127) / 128, as
they were trained, against ImageNet mean/std), and the background mix (the recipe's rooms,
scenes and procedural interiors against the method's first, failed mix: 80% noise, 10% white,
10% rooms, no distractors). Writes the "CPU recipe: ablations" section.

    python benchmarks/recipe_ablation.py --steps 300 --write                   # Lite0 at 224 px
    python benchmarks/recipe_ablation.py --encoder tu-tf_efficientnet_lite2 --size 320 --write   # the recipe's model

Needs the recipe's cutouts (``outputs/cpu/cutouts``, from ``segsynth cutouts --config
configs/cpu/cutouts.yaml``) and its synthetic set (``outputs/cpu/synth``); the noise-mix set is
synthesized here from the same cutouts with the same size and count. Each variant trains
``--steps`` steps with the recipe's config, by default with a smaller model (``--encoder``,
``--size``: Lite0 at 224 px, about four times faster on a CPU than the recipe's Lite2 at 320 px,
so three variants fit in the time of a quarter of the recipe), validates on ECSSD dev 0001-0050 every
``--val-every`` steps, and its last and best checkpoints are measured: the normalisation is a
choice made on the selection pairs (0001-0050); the mix is reported on the held-out pairs
(ECSSD dev 0051-0100, PASCAL-S dev 1-100) with ``segsynth eval``. The results go to
``--out``/results.json; :func:`section` renders the section from them alone, and ``--render``
re-renders a saved run without training.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _sections import write_section  # noqa: E402

log = logging.getLogger("recipe_ablation")
HEADING = "## CPU recipe: ablations"
NOISE_MIX = ["composite.bg_weights={noise: 0.8, white: 0.1, room: 0.1}", "composite.occluder_prob=0.0"]


def _train(name: str, data: str, steps: int, val_every: int, extra: list[str], out: Path, model: list[str]) -> dict:
    from segsynth.config import load_config
    from segsynth.train.config import TrainConfig
    from segsynth.train.job import run

    overrides = [f"data=[{{path: {data}, kind: synthetic}}]", f"out={out / name}", f"name={name}",
                 f"max_steps_per_epoch={steps}", "epochs=1", f"val_every_steps={val_every}",
                 f"checkpoint_every_steps={steps}", "time_budget_min=null"] + model + extra
    cfg = load_config(TrainConfig, str(REPO / "configs" / "cpu" / "train.yaml"), overrides)
    t0 = time.perf_counter()
    done = out / name / "summary.json"
    if done.is_file() and json.loads(done.read_text()).get("steps") == steps:  # a finished variant is reused
        summary = json.loads(done.read_text())
        log.info("%s: reusing the finished run in %s", name, out / name)
    else:
        summary = run(cfg)
    rows = list(csv.DictReader((out / name / "metrics.csv").open()))
    last = rows[-1]
    best = [r for r in rows if r.get("best") == "True"][-1]
    return {"name": name, "wall_s": summary.get("fit_wall_s") or time.perf_counter() - t0, "steps": summary.get("steps"),
            "last_ssim": float(last["val_ecssd_1-50_ssim_box"]), "last_iou": float(last["val_ecssd_1-50_iou"]),
            "best_ssim": float(best["val_ecssd_1-50_ssim_box"]), "best_iou": float(best["val_ecssd_1-50_iou"]),
            "best_step": int(best["step"]), "best": str(out / name / "best"), "normalization": summary.get("normalization")}


def _evaluate(models: dict[str, str], out: Path) -> dict[str, dict[str, dict]]:
    """``{set: {model: summary row}}`` on the held-out pairs."""
    from segsynth import io
    from segsynth import metrics as M
    from segsynth.config import load_config
    from segsynth.evaluate.config import EvalConfig
    from segsynth.evaluate.job import run

    spec = "[" + ", ".join(f"{{name: {n}, kind: checkpoint, path: '{p}', options: {{threads: 2}}}}" for n, p in models.items()) + "]"
    result = {}
    for cfg_name in ("eval-ecssd", "eval-pascal"):
        base = load_config(EvalConfig, str(REPO / "configs" / "cpu" / f"{cfg_name}.yaml"))
        set_name = Path(base.out).name
        cfg = load_config(EvalConfig, str(REPO / "configs" / "cpu" / f"{cfg_name}.yaml"),
                          [f"models={spec}", f"out={out / 'eval' / set_name}", "gallery_size=0"])
        run(cfg)
        rows = io.read_parquet(str(out / "eval" / set_name / "samples.parquet")).to_pylist()
        result[set_name] = {r["model"]: r for r in M.summarize([r for r in rows if not r.get("error")], by=("model",))}
    return result


def _describe(results: dict, out: Path) -> dict:
    """Fill in what a results JSON of an older run lacks, from the files that run saved.

    Settings come from the first variant's resolved train config; each variant's data from its
    synthetic set's resolved config (background weights, occluder probability); the date from
    the results file's modification time.
    """
    import yaml

    runs = results["runs"]
    if "settings" not in results:
        cfg = yaml.safe_load((out / runs[0]["name"] / "config.yaml").read_text()) or {}
        val = (cfg.get("val_data") or [{}])[0]
        results["settings"] = {"steps": cfg.get("max_steps_per_epoch"), "val_every": cfg.get("val_every_steps"),
                               "encoder": cfg.get("encoder_name"), "size": cfg.get("size"),
                               "batch_size": cfg.get("batch_size"),
                               "selection": f"{Path(str(val.get('path', ''))).name} {val.get('stems')}"}
    results.setdefault("out", os.path.relpath(out, REPO))
    if "date" not in results:
        results["date"] = time.strftime("%Y-%m-%d", time.gmtime((out / "results.json").stat().st_mtime))
    for r in runs:
        if "data" in r:
            continue
        cfg = yaml.safe_load((out / r["name"] / "config.yaml").read_text()) or {}
        synth = Path(cfg["data"][0]["path"])
        scfg = yaml.safe_load((synth / "config.yaml").read_text()) or {}
        comp = scfg.get("composite") or {}
        r["data"] = {"synth": os.path.relpath(synth, REPO),
                     "bg_weights": comp.get("bg_weights"), "occluder_prob": comp.get("occluder_prob")}
    return results


def section(r: dict) -> str:
    """The "## CPU recipe: ablations" section of BENCHMARKS.md from one run's results (nothing else)."""
    st, runs, held = r["settings"], r["runs"], r["held_out"]
    lines = [HEADING, "",
             f"`python benchmarks/recipe_ablation.py --steps {st['steps']} --val-every {st['val_every']} --encoder "
             f"{st['encoder']} --size {st['size']} --out {r['out']} --write` ({r['date']}"
             + (f", {r['cores']} cores" if r.get("cores") else "") + f"): each variant trains {st['steps']} steps of "
             f"batch {st['batch_size']} with the CPU recipe's config but FPN + `{st['encoder']}` (packaged ImageNet "
             f"weights) at {st['size']} px, the recipe's schedule shortened to these steps, validating on "
             f"{st['selection']} every {st['val_every']} steps. A smaller, shorter run than the recipe's: "
             "it compares the variants with each other, not with the recipe's figures.", "",
             f"| variant | data | normalisation | {st['selection']} SSIM (box), last | IoU, last | best step "
             "| SSIM (box), best | IoU, best | wall min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in runs:
        lines.append(f"| {x['name']} | `{x['data']['synth']}` | {x['normalization']} | {x['last_ssim']:.3f} | "
                     f"{x['last_iou']:.3f} | {x['best_step']} | {x['best_ssim']:.3f} | {x['best_iou']:.3f} | "
                     f"{x['wall_s'] / 60:.1f} |")
    seen = {}
    for x in runs:
        seen.setdefault(x["data"]["synth"], x["data"])
    lines += ["", "Data: " + "; ".join(
        f"`{name}` has background weights " + ", ".join(f"{k} {v}" for k, v in (d["bg_weights"] or {}).items())
        + f" and occluder probability {d['occluder_prob']}" for name, d in seen.items()) + "."]
    by = {x["name"]: x for x in runs}
    if "rooms-lite" in by and "rooms-imagenet" in by:
        lite, imnet = by["rooms-lite"], by["rooms-imagenet"]
        better = "lite" if lite["best_ssim"] >= imnet["best_ssim"] else "imagenet"
        lines += ["", f"Normalisation (on the selection pairs): `{better}` scores higher at its best step "
                      f"(SSIM (box) {lite['best_ssim']:.3f} with lite against {imnet['best_ssim']:.3f} with imagenet; "
                      f"IoU {lite['best_iou']:.3f} against {imnet['best_iou']:.3f})."]
    else:
        lines += ["", "Normalisation: not compared in this run (`--variants` left out rooms-lite or rooms-imagenet)."]
    lines += ["", "Each variant's best checkpoint on the held-out pairs (`segsynth eval`):", "",
              "| set | variant | n | SSIM (box) | IoU | MAE |", "|---|---|---|---|---|---|"]
    for set_name, models in held.items():
        for name, m in models.items():
            lines.append(f"| {set_name} | {name} | {m['n']} | {m['ssim_box']:.3f} [{m['ssim_box_lo']:.3f}, {m['ssim_box_hi']:.3f}] "
                         f"| {m['iou']:.3f} [{m['iou_lo']:.3f}, {m['iou_hi']:.3f}] | {m['mae']:.3f} |")
    lines.append("")
    for set_name, models in held.items():
        a, b = models.get("rooms-lite"), models.get("noise-mix-lite")
        if a and b:
            diff = a["iou"] - b["iou"]
            order = ("rooms-lite ahead" if round(diff, 3) > 0 else "noise-mix-lite ahead" if round(diff, 3) < 0
                     else "level")
            overlap = a["iou_lo"] <= b["iou_hi"] and b["iou_lo"] <= a["iou_hi"]
            lines.append(f"- {set_name}: IoU {order}, rooms-lite {a['iou']:.3f} against noise-mix-lite {b['iou']:.3f} "
                         f"(difference {diff:+.3f}); the intervals "
                         + ("overlap, so this run does not separate the two." if overlap else "do not overlap."))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--encoder", default="tu-tf_efficientnet_lite0", help="encoder of every variant (packaged weights)")
    ap.add_argument("--size", type=int, default=224, help="training and inference size of every variant")
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench" / "ablation"))
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="train nothing: render the section from --out/results.json, which an earlier run saved")
    ap.add_argument("--variants", default="rooms-lite,rooms-imagenet,noise-mix-lite",
                    help="comma-separated subset of rooms-lite, rooms-imagenet, noise-mix-lite")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    if args.render:
        results = _describe(json.loads((out / "results.json").read_text()), out)
    else:
        results = _measure(args, out)
    text = section(results)
    sys.stdout.write(text)
    if args.write:
        write_section(REPO / "BENCHMARKS.md", HEADING, text)
    return 0


def _measure(args, out: Path) -> dict:
    recipe_synth = REPO / "outputs" / "cpu" / "synth"
    if not (recipe_synth / "summary.json").is_file():
        raise SystemExit(f"{recipe_synth} is missing: run `segsynth synth --config configs/cpu/synth.yaml` first")

    from segsynth.config import load_config
    from segsynth.synth.config import SynthConfig
    from segsynth.synth.job import run as synth_run

    noise_synth = out / "synth-noise-mix"
    wanted = args.variants.split(",")
    model = [f"encoder_name={args.encoder}", f"size={args.size}"]
    variants = {"rooms-lite": (recipe_synth, "lite"), "rooms-imagenet": (recipe_synth, "imagenet"),
                "noise-mix-lite": (noise_synth, "lite")}
    unknown = [v for v in wanted if v not in variants]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown[0]!r}; valid: {', '.join(variants)}")
    if "noise-mix-lite" in wanted:
        synth_run(load_config(SynthConfig, str(REPO / "configs" / "cpu" / "synth.yaml"), [f"out={noise_synth}"] + NOISE_MIX))
    runs = [_train(v, str(variants[v][0]), args.steps, args.val_every, [f"normalization={variants[v][1]}"], out, model)
            for v in wanted]
    held = _evaluate({r["name"]: r["best"] for r in runs if r["name"] != "rooms-imagenet"}, out)
    results = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "runs": runs, "held_out": held}
    out.mkdir(parents=True, exist_ok=True)
    results = _describe(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
