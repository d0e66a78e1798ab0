"""Ray Train end to end on tiny data: 2-worker DDP on CPU, resume after a worker failure, the
best checkpoint folder loads as a predictor."""
from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest

from segsynth import io
from segsynth.config import load_config
from segsynth.testing import failing_train_loop


SIZE = 64
TINY = ["encoder_name=tu-mobilenetv3_small_050", "encoder_weights=null", "decoder_pyramid_channels=64",
        "decoder_segmentation_channels=32", f"size={SIZE}", "batch_size=4", "shuffle_pool=8",
        "val_fraction=0.25", "warmup_steps=2", "lr=0.003", "cache_decoded=true"]


def make_synth(folder: Path, n_cutouts: int = 8, per_cutout: int = 4, size: int = SIZE, seed: int = 0) -> Path:
    """A tiny synthetic dataset in the synth contract: ellipses/boxes on noisy backgrounds."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_cutouts):
        for k in range(per_cutout):
            bg = rng.integers(0, 255, 3)
            image = np.clip(bg + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            ry, rx = rng.integers(size // 8, size // 3, 2)
            yy, xx = np.mgrid[:size, :size]
            if c % 2:
                mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 255
            else:
                mask[max(cy - ry, 0):cy + ry, max(cx - rx, 0):cx + rx] = 255
            image[mask > 0] = rng.integers(0, 255, 3)
            rows.append({"sample_id": f"cat/{c:03d}#{k}", "cutout_id": f"cat/{c:03d}", "category": "box" if c % 2 == 0 else "ball",
                         "k": k, "seed": seed, "image": io.encode_jpeg(image), "mask": io.encode_png(mask), "bg_kind": "noise"})
    io.write_parquet(rows[: len(rows) // 2], folder / "shards" / "shard-00000.parquet")
    io.write_parquet(rows[len(rows) // 2:], folder / "shards" / "shard-00001.parquet")
    return folder


def make_labelled(folder: Path, n: int = 4, size: int = 80) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        image = rng.integers(0, 255, (size, size + 16, 3), dtype=np.uint8)
        mask = np.zeros((size, size + 16), np.uint8)
        mask[20:60, 30:70] = 255
        io.write_bytes(folder / "images" / f"real{i}.jpg", io.encode_jpeg(image))
        io.write_bytes(folder / "masks" / f"real{i}.png", io.encode_png(mask))
    io.write_bytes(folder / "images" / "broken.jpg", b"not a jpeg")  # skipped, counted, logged
    io.write_bytes(folder / "masks" / "broken.png", b"nor a png")
    return folder


def _config(tmp_path: Path, synth: Path, *extra: str):
    from segsynth.train.config import TrainConfig

    data = f"data=[{{path: {synth}, kind: synthetic, weight: 1.0}}]"
    return load_config(TrainConfig, None, [data, f"out={tmp_path / 'out'}", *TINY, *extra])


def test_plan_splits_by_cutout_and_mixes(tmp_path):
    from segsynth.train.config import TrainConfig
    from segsynth.train.data import plan
    from segsynth.split import is_validation

    synth = make_synth(tmp_path / "synth")
    labelled = make_labelled(tmp_path / "real")
    cfg = load_config(TrainConfig, None, [
        f"data=[{{path: {synth}}}, {{path: {labelled}, kind: labelled, weight: 3.0}}]", *TINY])
    counts = plan(cfg)
    ids = io.read_parquet(synth / "shards", columns=["cutout_id"]).column("cutout_id").to_pylist()
    val_cutouts = {c for c in ids if is_validation(c, cfg.val_fraction)}
    assert 0 < len(val_cutouts) < 8  # both sides populated for this seed-independent split
    synth_rows, real_rows = counts.per_source
    assert synth_rows["val_rows"] == 4 * len(val_cutouts)
    assert synth_rows["train_rows"] == 32 - synth_rows["val_rows"]
    n_real_train = sum(not is_validation(f"real/real{i}", 0.25) for i in range(4)) + (not is_validation("real/broken", 0.25))
    assert real_rows["train_rows"] == 3 * n_real_train


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ddp_two_workers_resume_after_failure(tmp_path, ray_local):
    """2 CPU workers over Ray Data shards; rank 0 raises once at step 3 after the step-2
    checkpoint; the restarted attempt resumes from step 2, not from 0, and finishes."""
    from segsynth.predict import load_predictor
    from segsynth.train.job import run

    synth = make_synth(tmp_path / "synth")
    labelled = make_labelled(tmp_path / "real")
    cfg = _config(tmp_path, synth, "epochs=2", "num_workers=2", "max_steps_per_epoch=2", "checkpoint_every_steps=1",
                  "max_failures=1", "name=ddp")
    from dataclasses import replace

    from segsynth.train.config import DataSource

    cfg = replace(cfg, data=cfg.data + (DataSource(str(labelled), "labelled", 1.0),))
    summary = run(cfg, worker_loop=functools.partial(failing_train_loop, at_step=3))
    assert summary["steps"] == 4 and summary["epochs"] == 2
    assert summary["resumed_from_steps"][0] == 0
    assert summary["resumed_from_steps"][-1] >= 2, summary["resumed_from_steps"]  # not from step 0
    out = Path(cfg.out)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["val_iou"]) <= 1.0 and 0.0 <= float(r["val_ssim_box"]) <= 1.0 for r in rows)
    assert int(rows[-1]["attempt"]) == 2
    assert (out / "learning_curve.png").stat().st_size > 1000
    best = out / "best"
    card = json.loads((best / "model_card.json").read_text())
    assert card["preprocessing"]["size"] == SIZE and card["preprocessing"]["pad_to"] == 32
    assert card["encoder_name"] == "tu-mobilenetv3_small_050" and "val_iou" in card["metrics"]
    assert (best / "config.yaml").is_file()
    predictor = load_predictor(str(best))
    masks = predictor.predict([np.zeros((50, 70, 3), np.uint8)])
    assert masks[0].shape == (50, 70) and masks[0].dtype == np.float32


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rerun_same_name_resumes(tmp_path, ray_local):
    """A finished run started again with more epochs continues from its latest checkpoint."""
    from segsynth.train.job import run

    synth = make_synth(tmp_path / "synth")
    first = run(_config(tmp_path, synth, "epochs=1", "max_steps_per_epoch=2", "name=again"))
    assert first["steps"] == 2
    second = run(_config(tmp_path, synth, "epochs=2", "max_steps_per_epoch=2", "name=again"))
    assert second["steps"] == 4 and second["resumed_from_steps"] == [0, 2]


def test_training_rows_showing_validation_products_are_left_out(tmp_path):
    """A training sample whose distractors include a held-out product never reaches training."""
    from segsynth.split import is_validation
    from segsynth.train.config import TrainConfig
    from segsynth.train.data import decode_samples, plan

    synth = make_synth(tmp_path / "synth")
    table = io.read_parquet(synth / "shards" / "shard-00000.parquet")
    ids = sorted(set(io.read_parquet(synth / "shards", columns=["cutout_id"]).column("cutout_id").to_pylist()))
    val_product = next(c for c in ids if is_validation(c, 0.25)).split("/")[-1]
    train_rows = [r for r in table.to_pylist() if not is_validation(r["cutout_id"], 0.25)]
    assert train_rows, "the first shard should hold training samples"
    leaking = train_rows[0]["sample_id"]
    rows = [{**r, "distractor_ids": val_product if r["sample_id"] == leaking else "x|y"} for r in table.to_pylist()]
    io.write_parquet(rows, synth / "shards" / "shard-00000.parquet")
    other = synth / "shards" / "shard-00001.parquet"  # every shard of a dataset has the column
    io.write_parquet([{**r, "distractor_ids": ""} for r in io.read_parquet(other).to_pylist()], other)
    cfg = load_config(TrainConfig, None, [f"data=[{{path: {synth}}}]", *TINY])
    assert plan(cfg).per_source[0]["left_out_leaks"] == 1
    batch = {k: np.asarray([r[k] for r in rows], dtype=object) for k in ("sample_id", "cutout_id", "image", "mask", "distractor_ids")}
    keys = decode_samples(batch, "train", SIZE, 0.25)["key"]
    assert f"{leaking}#0" not in set(keys) and len(keys) == len(train_rows) - 1


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_validation_every_steps_selects_best(tmp_path, ray_local):
    """val_data is validated every val_every_steps and at the epoch end; best/ is the row that
    scores best on select_on over the real photos, and the card records the normalisation."""
    from segsynth.train.job import run

    synth = make_synth(tmp_path / "synth")
    labelled = make_labelled(tmp_path / "real")
    cfg = _config(tmp_path, synth, "epochs=1", "max_steps_per_epoch=4", "val_every_steps=1", "name=realval",
                  f"val_data=[{{path: {labelled}, name: photos}}]", "select_on=iou", "normalization=lite")
    summary = run(cfg)
    assert summary["selected_on"] == "val_data" and summary["select_on"] == "iou"
    rows = list(csv.DictReader((Path(cfg.out) / "metrics.csv").open()))
    assert [r["kind"] for r in rows] == ["step", "step", "step", "epoch"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    ious = [float(r["val_photos_iou"]) for r in rows]
    assert all(0.0 <= v <= 1.0 for v in ious) and all(r["val_photos_ssim_box"] for r in rows)
    best_rows = [r for r in rows if r["best"] == "True"]
    assert int(best_rows[-1]["step"]) == summary["best_step"] == int(rows[int(np.argmax(ious))]["step"])
    assert summary["best_iou"] == pytest.approx(max(ious))  # best/'s IoU on the photos, a step row's too
    card = json.loads((Path(cfg.out) / "best" / "model_card.json").read_text())
    assert card["step"] == summary["best_step"] and card["preprocessing"]["normalization"] == "lite"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_time_budget_stops_stepping_then_validates_and_saves(tmp_path, ray_local):
    """A spent time_budget_min ends the run after the current step: it still validates, writes
    metrics and best/, and reports fewer steps than planned."""
    from segsynth.train.job import run

    synth = make_synth(tmp_path / "synth")
    cfg = _config(tmp_path, synth, "epochs=2", "max_steps_per_epoch=4", "time_budget_min=0.00001", "name=budget")
    summary = run(cfg)
    assert summary["steps"] == 1 and summary["epochs"] == 1
    rows = list(csv.DictReader((Path(cfg.out) / "metrics.csv").open()))
    assert [(r["kind"], int(r["step"])) for r in rows] == [("epoch", 1)]
    card = json.loads((Path(cfg.out) / "best" / "model_card.json").read_text())
    # the worker process started with segsynth.train.malloc's settings (train.malloc: tuned)
    assert card["malloc"] == "tuned at process start"
