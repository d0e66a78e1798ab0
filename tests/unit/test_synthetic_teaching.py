"""What issue 21 added: fixed select/report halves of real folders, the synthesis knobs for what
the mask means, mixed shards, the training-hygiene knobs and the in-process training loop."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segsynth import io
from segsynth.config import ConfigError, load_config
from segsynth.split import DEV_HALVES, HalfSplit, dev_half
from segsynth.synth.config import CompositeConfig, SynthConfig
from segsynth.synth.engine import make_sample
from segsynth.synth.library import Cutout
from segsynth.train.config import TrainConfig, ValSource


# ---------------------------------------------------------------- halves and stem lists
def _folder(tmp_path, stems, categories=True):
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    img, m = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    for s in stems:
        io.write_bytes(str(tmp_path / "images" / f"{s}.jpg"), io.encode_jpeg(img))
        io.write_bytes(str(tmp_path / "masks" / f"{s}.png"), io.encode_png(m))
    if categories:
        (tmp_path / "categories.csv").write_text("stem,category\n" + "".join(f"{s},{s.split('_')[0]}\n" for s in stems))
    return tmp_path


def test_halves_are_fixed_disjoint_and_cover_a_folder_of_named_stems(tmp_path):
    stems = [f"{c}_{i:04x}" for c in ("bed", "chair", "table") for i in range(40)]
    folder = _folder(tmp_path, stems)
    select = io.labelled_folder(str(folder), half="select")
    report = io.labelled_folder(str(folder), half="report")
    a, b = {it["stem"] for it in select}, {it["stem"] for it in report}
    assert a.isdisjoint(b) and a | b == set(stems)
    assert 40 < len(a) < 80  # about half
    assert [dev_half(s) for s in stems] == [dev_half(s) for s in stems]  # stable
    assert dev_half("bed_003a7e3a85") in DEV_HALVES
    # numeric ranges cannot select named stems; the error names both ways that can
    with pytest.raises(ValueError, match=r"split: \{half: select\}.*stems: FILE.csv"):
        io.labelled_folder(str(folder), "1-10")


def test_a_csv_of_stems_selects_and_a_missing_stem_is_an_error(tmp_path):
    folder = _folder(tmp_path / "f", ["bed_a", "bed_b", "sofa_c"])
    listed = tmp_path / "keep.csv"
    listed.write_text("stem,note\nbed_b,x\nsofa_c,y\n")
    assert [it["stem"] for it in io.labelled_folder(str(folder), str(listed))] == ["bed_b", "sofa_c"]
    listed.write_text("stem\nbed_b\nnope\n")
    with pytest.raises(ValueError, match="'nope'"):
        io.labelled_folder(str(folder), str(listed))
    listed.write_text("name\nbed_b\n")
    with pytest.raises(ValueError, match="no 'stem' column"):
        io.labelled_folder(str(folder), str(listed))


def test_val_source_split_from_yaml_labels_and_select_flag(tmp_path):
    cfg = load_config(TrainConfig, None, [
        "data=[{path: x}]",
        "val_data=[{path: d/furniture_dev, split: {half: select}}, {path: d/furniture_dev, split: {half: report}, select: false}]"])
    assert [v.label for v in cfg.val_data] == ["furniture_dev_select", "furniture_dev_report"]
    assert cfg.val_data[0].split == HalfSplit("select") and not cfg.val_data[1].select
    with pytest.raises(ConfigError, match="half"):
        load_config(TrainConfig, None, ["data=[{path: x}]", "val_data=[{path: d, split: {half: both}}]"])
    with pytest.raises(ConfigError, match="nothing chooses best"):
        load_config(TrainConfig, None, ["data=[{path: x}]", "val_data=[{path: d, select: false}]"]).check_inputs()
    assert ValSource(path="a/b", stems="keep.csv").label == "b"


# ---------------------------------------------------------------- synthesis knobs
def _product(h=80, w=50, colour=(230, 230, 230)):
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[5:h - 5, 5:w - 5] = (*colour, 255)
    return Cutout(cutout_id="cat/p1", category="sofa", rgba=rgba)


def _distractors(n=3):
    out = []
    for i in range(n):
        rgba = np.zeros((60, 60, 4), np.uint8)
        rgba[:, :] = (40, 200, 40, 255)
        out.append(Cutout(cutout_id=f"cat/d{i}", category="chair", rgba=rgba))
    return out


def test_default_samples_draw_none_of_the_new_options():
    cfg = CompositeConfig(bg_weights={"noise": 1.0})
    for k in range(6):
        s = make_sample(_product(), k, seed=1, size=96, cfg=cfg, distractors=_distractors())
        assert s.meta["product_cut"] == "" and s.meta["harmonize"] == 0.0
        assert s.meta["distractor_count"] == 0  # distractors only on scenes by default
        assert s.mask[0].max() == 0 and s.mask[-1].max() == 0  # never cut by the frame


def test_product_cut_by_the_frame_cuts_the_mask_alike():
    cfg = CompositeConfig(bg_weights={"white": 1.0}, product_cut_prob=1.0, product_cut_max=0.4, shadow_prob=0.0,
                          text_prob=0.0, occluder_prob=0.0, blend_weights={"none": 1.0}, match_prob=0.0)
    sides = set()
    for k in range(12):
        s = make_sample(_product(), k, seed=0, size=96, cfg=cfg)
        side = s.meta["product_cut"]
        sides.add(side)
        edge = {"left": s.mask[:, 0], "right": s.mask[:, -1], "bottom": s.mask[-1]}[side]
        assert edge.max() == 255, side  # the product runs off that border, and so does its mask
        full = 70 * 40 * (s.meta["scale"] * 96 / 80) ** 2  # the product's solid area at its scale
        assert (s.mask > 127).sum() < full  # part of it is outside
    assert sides == {"left", "right", "bottom"}


def test_clutter_on_other_kinds_is_background_and_smaller_than_the_product():
    from segsynth.synth import distractors as dis

    cfg = CompositeConfig(bg_weights={"noise": 1.0}, distractor_kinds={"noise": 1.0}, distractor_max_product_area=0.25,
                          distractor_shadow_prob=1.0, distractor_defocus_max_px=2.0, distractor_scale_min=0.6,
                          distractor_scale_max=0.9, shadow_prob=0.0, occluder_prob=0.0, text_prob=0.0, match_prob=0.0)
    for k in range(4):
        s = make_sample(_product(), k, seed=3, size=128, cfg=cfg, distractors=_distractors())
        assert s.meta["distractor_count"] >= 1 and s.meta["bg_kind"] == "noise"
        green = (s.image[:, :, 1].astype(int) - s.image[:, :, 0] > 100) & (s.image[:, :, 1] > 150)
        assert not (green & (s.mask > 127)).any()  # never in the mask
    # the size limit, on a black frame without blur: each one's box is at most a quarter of the product's
    sharp = CompositeConfig(distractor_max_product_area=0.25, distractor_scale_min=0.6, distractor_scale_max=0.9)
    for seed in range(5):
        frame = np.zeros((128, 128, 3), np.uint8)
        pasted = dis.add_distractors(np.random.default_rng(seed), frame, _distractors(), "cat/p1", sharp,
                                     product_area=2000.0)
        assert pasted.cutout_ids and (frame[:, :, 1] > 0).sum() <= len(pasted.cutout_ids) * 500
    # without the limit the same draws are far larger
    frame = np.zeros((128, 128, 3), np.uint8)
    dis.add_distractors(np.random.default_rng(0), frame, _distractors(), "cat/p1",
                        CompositeConfig(distractor_scale_min=0.6, distractor_scale_max=0.9), product_area=2000.0)
    assert (frame[:, :, 1] > 0).sum() > 2000


def test_harmonize_moves_the_product_towards_the_background():
    base = dict(bg_weights={"solid": 1.0}, shadow_prob=0.0, occluder_prob=0.0, text_prob=0.0, match_prob=0.0,
                blend_weights={"none": 1.0})
    plain = make_sample(_product(), 0, seed=0, size=96, cfg=CompositeConfig(**base))
    moved = make_sample(_product(), 0, seed=0, size=96,
                        cfg=CompositeConfig(**base, harmonize_prob=1.0, harmonize_strength_max=1.0))
    inside = plain.mask == 255
    bg = plain.image[~(plain.mask > 0)].astype(float).mean(0)
    before = np.abs(plain.image[inside].astype(float).mean(0) - bg).sum()
    after = np.abs(moved.image[inside].astype(float).mean(0) - bg).sum()
    assert moved.meta["harmonize"] > 0 and after < before
    assert np.array_equal(plain.mask, moved.mask)  # the mask does not change


def test_new_knobs_are_checked():
    for bad, match in (({"distractor_kinds": {"sky": 1.0}}, "unknown background kind"),
                       ({"distractor_max_product_area": 0.0}, "distractor_max_product_area"),
                       ({"product_cut_max": 1.0}, "product_cut_max"),
                       ({"harmonize_prob": 2.0}, "harmonize_prob")):
        with pytest.raises(ConfigError, match=match):
            CompositeConfig(**bad)


def test_mixed_shards_hold_many_products(tmp_path):
    from segsynth.synth.shards import plan_shards

    rows = [{"cutout_id": f"cat/{i:03d}", "category": "chair", "source": "cat", "width": 1, "height": 1, "quality": 1.0}
            for i in range(40)]
    io.write_parquet(rows, str(tmp_path / "cut" / "manifest.parquet"))
    common = [f"cutouts={tmp_path / 'cut'}", "samples_per_cutout=8", "shard_size=32"]
    mixed = plan_shards(load_config(SynthConfig, None, common))
    grouped = plan_shards(load_config(SynthConfig, None, common + ["shard_order=product"]))
    assert len(set(mixed[0]["cutout_ids"])) > 3 * len(set(grouped[0]["cutout_ids"]))
    pairs = lambda plan: sorted((c, k) for s in plan for c, k in zip(s["cutout_ids"], s["ks"]))  # noqa: E731
    assert pairs(mixed) == pairs(grouped)  # the same samples, only placed differently
    assert mixed == plan_shards(load_config(SynthConfig, None, common))


# ---------------------------------------------------------------- training hygiene
def _tiny_cfg(tmp_path, *extra):
    return load_config(TrainConfig, None, ["data=[{path: x}]", f"out={tmp_path}", "encoder_name=tu-mobilenetv3_small_050",
                                           "encoder_weights=null", "decoder_pyramid_channels=32",
                                           "decoder_segmentation_channels=32", "size=64", "batch_size=4", *extra])


def test_frozen_encoder_batchnorm_keeps_its_statistics_and_survives_validation(tmp_path):
    from segsynth.model import build_model
    from segsynth.train.loop import Stepper, model_spec, validate

    cfg = _tiny_cfg(tmp_path, "freeze_encoder_bn=true", "warmup_steps=1")
    model = build_model(model_spec(cfg))
    stepper = Stepper(model, cfg, total_steps=4, device=torch.device("cpu"))
    stepper.train_mode()
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    batch = {"image": torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8),
             "mask": torch.randint(0, 2, (4, 1, 64, 64), dtype=torch.uint8) * 255}
    stepper.micro_step(batch)
    stepper.optimizer_step()
    validate(stepper, [batch])  # puts the model back in training mode: the encoder's BN must stay frozen
    stepper.micro_step(batch)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    assert all(not m.training for m in bns) and model.decoder.training


def test_real_photos_and_the_synthetic_split_are_scored_by_one_validate(tmp_path):
    """A photo already the network's size: letterboxed, scored and resized back, it sums what
    the synthetic split's batch of the same pixels sums."""
    from segsynth.model import build_model
    from segsynth.train.loop import RealValidation, Stepper, model_spec, validate

    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (rng.random((64, 64)) > 0.5).astype(np.uint8) * 255)
             for _ in range(3)]
    for d in ("images", "masks"):
        (tmp_path / "photos" / d).mkdir(parents=True)
    for i, (image, mask) in enumerate(pairs):
        io.write_bytes(str(tmp_path / "photos" / "images" / f"p_{i}.png"), io.encode_png(image))
        io.write_bytes(str(tmp_path / "photos" / "masks" / f"p_{i}.png"), io.encode_png(mask))
    cfg = _tiny_cfg(tmp_path, f"val_data=[{{path: '{tmp_path / 'photos'}', name: photos}}]")
    stepper = Stepper(build_model(model_spec(cfg)), cfg, total_steps=1, device=torch.device("cpu"))
    batch = {"image": torch.from_numpy(np.stack([p[0] for p in pairs])),
             "mask": torch.from_numpy(np.stack([p[1] for p in pairs])[:, None])}
    real = RealValidation(cfg.val_data)(stepper, batch_size=2)
    assert real["photos"]["n"] == 3
    assert real["photos"] == pytest.approx(validate(stepper, [batch]))


def test_param_groups_encoder_rate_and_no_decay_on_norms_and_biases(tmp_path):
    from segsynth.model import build_model
    from segsynth.train.loop import Stepper, model_spec

    cfg = _tiny_cfg(tmp_path, "encoder_lr_scale=0.1", "decay_norm_and_bias=false", "lr=0.001", "weight_decay=0.01")
    model = build_model(model_spec(cfg))
    groups = Stepper(model, cfg, total_steps=10, device=torch.device("cpu")).optimizer.param_groups
    enc = {id(p) for p in model.encoder.parameters()}
    for g in groups:
        in_enc = {id(p) in enc for p in g["params"]}
        assert len(in_enc) == 1
        assert math.isclose(g["initial_lr"], 0.0001 if in_enc.pop() else 0.001)
        assert all((p.ndim > 1) == (g["weight_decay"] > 0) for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


def test_schedule_anneals_by_the_time_budget():
    from segsynth.train.loop import lr_factor

    # a 1000-step cosine stopped by its budget at step 687 used to end at a quarter of the peak
    assert lr_factor(687, 60, 1000) > 0.2
    assert lr_factor(687, 60, 1000, progress_floor=1.0) == pytest.approx(0.01)
    assert lr_factor(10, 60, 1000, progress_floor=1.0) == pytest.approx(11 / 60)  # warm-up is by step
    assert lr_factor(300, 60, 1000, progress_floor=0.5) == pytest.approx(lr_factor(530, 60, 1000))


def test_ema_weights_trail_the_trained_ones_and_are_what_best_holds(tmp_path):
    from segsynth.model import build_model
    from segsynth.train.loop import Stepper, model_spec

    cfg = _tiny_cfg(tmp_path, "ema_decay=0.9", "warmup_steps=1", "lr=0.01")
    model = build_model(model_spec(cfg))
    stepper = Stepper(model, cfg, total_steps=5, device=torch.device("cpu"))
    batch = {"image": torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8),
             "mask": torch.zeros((4, 1, 64, 64), dtype=torch.uint8)}
    first = model.segmentation_head[0].weight.detach().clone()
    for _ in range(3):
        stepper.micro_step(batch)
        stepper.optimizer_step()
    live, avg = model.segmentation_head[0].weight, stepper.eval_model.segmentation_head[0].weight
    assert stepper.eval_model is not model
    assert not torch.equal(live, avg) and not torch.equal(avg, first)
    state = stepper.state_dict()
    again = Stepper(build_model(model_spec(cfg)), cfg, total_steps=5, device=torch.device("cpu"))
    again.load_state_dict(state)
    assert torch.equal(again.eval_model.segmentation_head[0].weight, avg)  # resumes with its average


# ---------------------------------------------------------------- the loop in this process
def _rows(n, size, seed):
    """Decoded rows of a learnable task: a bright square (the product) on dark noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(4, size // 2, 2)
        s = int(rng.integers(size // 4, size // 2))
        image[y:y + s, x:x + s] = rng.integers(180, 255, 3)
        mask[y:y + s, x:x + s] = 255
        rows.append({"key": f"t/{i}#0", "image": image, "mask": mask})
    return rows


def test_the_loop_learns_in_process_and_writes_what_segsynth_train_writes(tmp_path):
    import csv
    import json

    from segsynth.train.local import run_local

    synth = tmp_path / "synth" / "shards"
    synth.mkdir(parents=True)
    rows = _rows(96, 64, 0)
    io.write_parquet([{"sample_id": r["key"][:-2], "cutout_id": r["key"][:-2], "image": io.encode_png(r["image"]),
                       "mask": io.encode_png(r["mask"])} for r in rows], str(synth / "shard-00000.parquet"))
    cfg = _tiny_cfg(tmp_path / "run", f"data=[{{path: '{tmp_path / 'synth'}'}}]", "val_fraction=0.0", "epochs=4",
                    "max_steps_per_epoch=24", "lr=0.003", "warmup_steps=5", "freeze_encoder_bn=true",
                    "augment.enabled=false", "checkpoint_every_steps=1000", "shuffle_pool=32")
    summary = run_local(cfg)
    hist = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    losses = [float(r["train_loss"]) for r in hist]
    assert summary["steps"] == 96 and summary["backend"] == "local"
    assert losses[-1] < 0.6 * losses[0], losses  # it learns
    for name in ("best", "last", "local_checkpoint"):
        assert (tmp_path / "run" / name / "model_card.json").is_file(), name
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 96
    # this process was not started with segsynth.train.malloc.ENV: the loop set the thresholds itself
    assert json.loads((tmp_path / "run" / "best" / "model_card.json").read_text())["malloc"] == "tuned by mallopt"
    # a rerun into the same out resumes at the end: nothing more to train
    assert run_local(cfg)["steps"] == 96


def test_best_iou_is_best_s_iou_on_what_it_was_selected_on_also_for_a_step_row(tmp_path, monkeypatch):
    """best/ chosen at a step row (real photos only, no synthetic columns): the summary's
    best_iou is that row's IoU on the selecting real set, not empty; the checkpoints Ray ranks
    carry the select_on score."""
    import csv

    from segsynth.train import loop
    from segsynth.train.local import run_local

    real = loop.RealValidation.__call__
    calls = []

    def fading(self, stepper, batch_size):  # each validation scores lower: the first (a step row) is best
        calls.append(1)
        return {label: {**sums, "iou": sums["iou"] / len(calls)} for label, sums in real(self, stepper, batch_size).items()}

    monkeypatch.setattr(loop.RealValidation, "__call__", fading)
    synth = tmp_path / "synth" / "shards"
    synth.mkdir(parents=True)
    io.write_parquet([{"sample_id": r["key"][:-2], "cutout_id": r["key"][:-2], "image": io.encode_png(r["image"]),
                       "mask": io.encode_png(r["mask"])} for r in _rows(12, 64, 0)], str(synth / "shard-00000.parquet"))
    labelled = _folder(tmp_path / "real", ["a_1", "b_2"])
    cfg = _tiny_cfg(tmp_path / "run", f"data=[{{path: '{tmp_path / 'synth'}'}}]", "val_fraction=0.0", "epochs=1",
                    "max_steps_per_epoch=3", "val_every_steps=1", "select_on=iou", "checkpoint_every_steps=1000",
                    f"val_data=[{{path: '{labelled}', name: photos}}]", "shuffle_pool=8")
    summary = run_local(cfg)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["kind"] for r in rows] == ["step", "step", "epoch"] and rows[0]["best"] == "True"
    assert summary["best_step"] == 1 and summary["best_iou"] is not None
    assert summary["best_iou"] == pytest.approx(float(rows[0]["val_photos_iou"]))


def test_a_checkpoint_from_before_best_iou_resumes():
    from segsynth.train.loop import LoopState

    state = LoopState.from_dict({**LoopState(step=7, best_score=0.5).as_dict(), "best_val_iou": None})
    assert state.step == 7 and state.best_score == 0.5 and state.best_iou is None


def test_a_run_stopped_between_epochs_resumes_to_the_same_weights_and_learning_rate(tmp_path, monkeypatch):
    """Resuming carries everything the next step depends on (weights, optimizer moments, the
    schedule's position, the epoch's data order, the dropout RNG), not only the step count: a run
    killed after its first epoch and started again ends where the uninterrupted run ends."""
    import csv

    from segsynth.train import loop
    from segsynth.train.local import run_local

    synth = tmp_path / "synth" / "shards"
    synth.mkdir(parents=True)
    io.write_parquet([{"sample_id": r["key"][:-2], "cutout_id": r["key"][:-2], "image": io.encode_png(r["image"]),
                       "mask": io.encode_png(r["mask"])} for r in _rows(24, 64, 0)], str(synth / "shard-00000.parquet"))

    def cfg(name):
        return _tiny_cfg(tmp_path / name, f"data=[{{path: '{tmp_path / 'synth'}'}}]", "val_fraction=0.0", "epochs=2",
                         "max_steps_per_epoch=3", "lr=0.003", "warmup_steps=1", "checkpoint_every_steps=1000",
                         "shuffle_pool=8", "ema_decay=0.9")

    whole = run_local(cfg("whole"))
    original = loop.WorkerRun.train_epoch

    def killed_in_epoch_two(self, epoch):
        if epoch == 1:
            raise RuntimeError("killed")
        return original(self, epoch)

    monkeypatch.setattr(loop.WorkerRun, "train_epoch", killed_in_epoch_two)
    with pytest.raises(RuntimeError, match="killed"):
        run_local(cfg("stopped"))
    monkeypatch.setattr(loop.WorkerRun, "train_epoch", original)
    resumed = run_local(cfg("stopped"))

    assert resumed["steps"] == whole["steps"] == 6
    rows = {name: list(csv.DictReader(open(tmp_path / name / "metrics.csv"))) for name in ("whole", "stopped")}
    assert [r["lr"] for r in rows["stopped"]] == [r["lr"] for r in rows["whole"]]
    assert float(rows["stopped"][-1]["train_loss"]) == pytest.approx(float(rows["whole"][-1]["train_loss"]), rel=1e-5)
    a, b = (torch.load(tmp_path / name / "last" / loop.MODEL_FILE, weights_only=True) for name in ("whole", "stopped"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
