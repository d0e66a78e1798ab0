"""The torch-only parts of training: split, mixing, decoding, augmentation, loss, schedule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segsynth import io
from segsynth.config import ConfigError, load_config
from segsynth.split import is_validation
from segsynth.train.config import AugmentConfig, TrainConfig
from segsynth.train.data import copies, decode_samples
from segsynth.train.loop import Augmenter, lr_factor, random_letterbox, seg_loss


def _batch(n=6, size=48):
    rng = np.random.default_rng(0)
    imgs = [io.encode_jpeg(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)) for _ in range(n)]
    masks = [io.encode_png((rng.random((size, size + 8)) > 0.5).astype(np.uint8) * 255) for _ in range(n)]
    imgs[1] = b"corrupt"
    return {"sample_id": np.array([f"c{i // 2}#{i % 2}" for i in range(n)], dtype=object),
            "cutout_id": np.array([f"c{i // 2}" for i in range(n)], dtype=object),
            "image": np.array(imgs, dtype=object), "mask": np.array(masks, dtype=object)}


def test_split_is_by_cutout_and_stable():
    ids = [f"cat/{i:04d}" for i in range(2000)]
    share = np.mean([is_validation(c, 0.1) for c in ids])
    assert 0.07 < share < 0.13
    assert [is_validation(c, 0.1) for c in ids] == [is_validation(c, 0.1) for c in ids]


def test_mixing_copies():
    ids = [f"s{i}" for i in range(4000)]
    assert all(copies(s, 2.0, 0) == 2 for s in ids[:50])
    assert 0.2 < np.mean([copies(s, 0.25, 0) for s in ids]) < 0.3
    assert 1.4 < np.mean([copies(s, 1.5, 0) for s in ids]) < 1.6


def test_decode_samples_roles_and_corrupt_rows():
    batch = _batch()
    train = decode_samples(batch, "train", 32, val_fraction=0.5, weight=2.0)
    val = decode_samples(batch, "val", 32, val_fraction=0.5)
    held = {c for c in batch["cutout_id"] if is_validation(c, 0.5)}
    n_val = sum(c in held for c in batch["cutout_id"]) - (batch["cutout_id"][1] in held)
    n_train = 6 - sum(c in held for c in batch["cutout_id"]) - (batch["cutout_id"][1] not in held)
    assert len(val["key"]) == n_val and len(train["key"]) == 2 * n_train  # the corrupt row is skipped
    assert train["image"].shape[1:] == (32, 32, 3) and train["mask"].shape[1:] == (32, 32)
    assert train["image"].dtype == np.uint8


def test_plan_counts_what_decode_samples_yields(tmp_path):
    """plan() counts rows by the rule decode_samples decodes by (role_rows): per-source weights
    as copies, validation by product, training rows showing a held-out product left out."""
    from segsynth.train.data import plan

    rng = np.random.default_rng(1)
    n = 60
    cutouts = [f"c{i // 3}" for i in range(n)]
    held = sorted({c for c in cutouts if is_validation(c, 0.3)})
    assert held, "the split holds some products out"
    png = io.encode_png(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    mask = io.encode_png(np.zeros((8, 8), np.uint8))
    rows = [{"sample_id": f"{c}#{i}", "cutout_id": c, "image": png, "mask": mask,
             "distractor_ids": held[0] if i % 4 == 0 else ""} for i, c in enumerate(cutouts)]
    (tmp_path / "synth" / "shards").mkdir(parents=True)
    io.write_parquet(rows, str(tmp_path / "synth" / "shards" / "shard-00000.parquet"))
    cfg = load_config(TrainConfig, None, [f"data=[{{path: '{tmp_path / 'synth'}', weight: 1.5}}]", f"out={tmp_path / 'out'}",
                                          "val_fraction=0.3", "seed=2"])
    counts = plan(cfg)
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    train = decode_samples(batch, "train", 8, 0.3, weight=1.5, seed=2)
    val = decode_samples(batch, "val", 8, 0.3)
    leaks = sum(1 for r in rows if r["distractor_ids"] and not is_validation(r["cutout_id"], 0.3))
    assert counts.train == len(train["key"]) and counts.val == len(val["key"]) == sum(c in held for c in cutouts)
    assert counts.per_source[0]["left_out_leaks"] == leaks > 0


def test_decoding_letterboxes_like_the_predictor():
    """Training meets a non-square photo as every predictor does: longer side to size, content
    at the top-left, zero padding (not the centre crop of before)."""
    img = np.full((40, 80, 3), 200, np.uint8)
    mask = np.zeros((40, 80), np.uint8)
    mask[:, 70:] = 255  # at the right edge: a centre crop would cut it away
    batch = {"sample_id": np.array(["a#0"], dtype=object), "cutout_id": np.array(["a"], dtype=object),
             "image": np.array([io.encode_png(img)], dtype=object), "mask": np.array([io.encode_png(mask)], dtype=object)}
    out = decode_samples(batch, "train", 32, val_fraction=0.0)
    assert out["image"].shape == (1, 32, 32, 3)
    assert (out["image"][0, :16] == 200).all() and (out["image"][0, 16:] == 0).all()
    assert out["mask"][0, :16, 30:].min() == 255 and out["mask"][0, 16:].max() == 0


def test_random_letterbox_pads_anywhere_and_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    img = rng.integers(1, 255, (64, 64, 3), dtype=np.uint8)
    mask = img[:, :, 0].copy()
    offsets = set()
    for seed in range(20):
        a, m = random_letterbox(img, mask, 2.0, np.random.default_rng(seed))
        assert a.shape == img.shape and m.shape == mask.shape
        assert (a[:, :, 0] == m).all()  # the same geometry for both
        content = np.argwhere(a.max(axis=2) > 0)
        offsets.add(tuple(content.min(axis=0)))
        h, w = content.max(axis=0) - content.min(axis=0) + 1
        assert max(h, w) == 64 and 32 <= min(h, w) <= 64
    assert len(offsets) > 5  # the padding is placed anywhere, not only right/bottom


def test_crop_letterbox_and_flips_together_keep_image_and_mask_aligned():
    """The whole geometric chain of augment_sample (random crop resized back, random letterbox,
    horizontal and vertical flips) moves the mask exactly as the image: a photo whose first
    channel is its mask still is, whichever draws were made."""
    from segsynth.train.loop import augment_sample

    rng = np.random.default_rng(1)
    img = rng.integers(1, 255, (48, 48, 3), dtype=np.uint8)
    mask = img[:, :, 0].copy()
    geometry_only = AugmentConfig(crop_min=0.5, letterbox_prob=0.5, hflip=0.5, vflip=0.5, brightness=0.0,
                                  contrast=0.0, saturation=0.0, hue=0.0, jpeg_prob=0.0)
    seen = set()
    for seed in range(40):
        a, m = augment_sample(img, mask, geometry_only, np.random.default_rng(seed))
        assert a.shape == img.shape and m.shape == mask.shape
        assert (a[:, :, 0] == m).all(), seed
        padded = bool((a.max(axis=2) == 0).any())
        seen.add((padded, bool((a == img).all())))
    assert (True, False) in seen and (False, False) in seen  # letterboxed and not, both moved


def test_augmenter_is_deterministic_per_epoch_and_key():
    batch = decode_samples(_batch(), "train", 32, val_fraction=0.0)
    aug = Augmenter(AugmentConfig(jpeg_prob=1.0), seed=3)
    a, b = aug(batch), aug(batch)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert a["image"].shape == (5, 32, 32, 3) and a["mask"].shape == (5, 1, 32, 32)
    aug.epoch = 1
    assert not torch.equal(aug(batch)["image"], a["image"])
    plain = Augmenter(AugmentConfig(), seed=3, train=False)(batch)
    assert torch.equal(plain["image"], torch.from_numpy(batch["image"]))


def test_loss_and_schedule():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    good, bad = seg_loss(target * 20 - 10, target), seg_loss(10 - target * 20, target)
    assert good < 0.05 < bad
    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, min_ratio=0.01) == pytest.approx(0.01)
    assert lr_factor(55, 10, 100) == pytest.approx(0.505, abs=1e-3)


def test_config_errors_name_the_fix(repo):
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(TrainConfig, None, ["data=[{path: x}]", "size=300"])
    with pytest.raises(ConfigError, match="no sources"):
        load_config(TrainConfig, None, [])
    with pytest.raises(ConfigError, match="expected one of"):
        load_config(TrainConfig, None, ["data=[{path: x, kind: video}]"])
    cfg = load_config(TrainConfig, repo / "configs" / "train.yaml")
    assert cfg.encoder_name == "efficientnet-b5" and cfg.encoder_weights == "imagenet" and cfg.size == 512
    assert cfg.worker_cpus == 4 and load_config(TrainConfig, None, ["data=[{path: x}]"]).worker_cpus == 0.5
