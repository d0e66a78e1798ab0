"""The guided-filter refinement: a mask upsampled from a model's resolution gets the photo's
sharp edges back; small photos and shapes are handled."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from segsynth import metrics as M
from segsynth.preprocess import to_size
from segsynth.refine import RefineOptions, refine_mask


def _photo(h=1500, w=2000):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    truth = ((yy - 700) ** 2 / 500 ** 2 + (xx - 1000) ** 2 / 700 ** 2 <= 1).astype(np.float32)
    truth[600:1400, 960:1040] = 1.0  # a thin leg: the kind of detail a 320 px model blurs away
    rgb = np.where(truth[:, :, None] > 0, np.array([180, 60, 40]), np.array([200, 200, 190])).astype(np.float32)
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, truth


def test_refinement_sharpens_an_upsampled_mask():
    rgb, truth = _photo()
    low = cv2.resize(truth, (320, 240), interpolation=cv2.INTER_AREA)  # what a 320 px model could at best say
    coarse = cv2.resize(low, truth.shape[::-1], interpolation=cv2.INTER_LINEAR)
    sharp = refine_mask(rgb, coarse)
    assert sharp.shape == truth.shape and sharp.dtype == np.float32 and 0 <= sharp.min() and sharp.max() <= 1
    band = 0.002  # a 5 px boundary band at 2000 x 1500: the edge's own pixels
    before = M.boundary_iou(coarse, truth, dilation_ratio=band)
    after = M.boundary_iou(sharp, truth, dilation_ratio=band)
    assert after > before + 0.05, (before, after)
    assert M.mae(sharp, truth) < M.mae(coarse, truth)


def test_small_photos_come_back_unchanged_and_shapes_are_checked():
    rgb = np.zeros((300, 400, 3), np.uint8)
    mask = np.random.default_rng(1).uniform(0, 1, (300, 400)).astype(np.float32)
    assert refine_mask(rgb, mask) is mask  # not larger than the working size: nothing to add
    with pytest.raises(ValueError, match="differ in size"):
        refine_mask(rgb, mask[:10])
    big = np.zeros((1200, 1600, 3), np.uint8)
    out = refine_mask(big, np.zeros((1200, 1600), np.float32), RefineOptions(work_px=320))
    assert out.shape == (1200, 1600) and float(out.max()) == 0.0


def test_photos_over_640_px_are_refined_and_640_is_not(monkeypatch):
    """The default bound: 1.25 x the 512 px working size. A 640 px photo gets the model's mask
    resized (what the docs and the endpoint's option say); 641 px goes through the filter."""
    from segsynth import refine

    calls = []
    real = refine.guided_coefficients
    monkeypatch.setattr(refine, "guided_coefficients", lambda *a: calls.append(1) or real(*a))
    low = np.random.default_rng(2).uniform(0, 1, (240, 320)).astype(np.float32)
    out = refine_mask(np.zeros((480, 640, 3), np.uint8), low)
    assert out.shape == (480, 640) and not calls
    np.testing.assert_array_equal(out, to_size(low, (480, 640)))
    assert refine_mask(np.zeros((481, 641, 3), np.uint8), np.zeros((481, 641), np.float32)).shape == (481, 641)
    assert calls == [1]


def test_every_output_path_refines_by_default_and_can_switch_it_off():
    from segsynth.serve.uploads import CutoutOptions, UploadError, cutout_pixels

    rgb, truth = _photo(1200, 1600)
    coarse = cv2.resize(cv2.resize(truth, (320, 240), interpolation=cv2.INTER_AREA), (1600, 1200))
    on = cutout_pixels(rgb, coarse, CutoutOptions(output="mask")).astype(np.float32) / 255
    off = cutout_pixels(rgb, coarse, CutoutOptions.parse({"output": "mask", "refine": "false"})).astype(np.float32) / 255
    assert M.mae(on, truth) < M.mae(off, truth)
    assert np.abs(off - coarse).max() <= 1 / 255 + 1e-6  # off: the model's mask as given
    with pytest.raises(UploadError, match="refine="):
        CutoutOptions.parse({"refine": "sometimes"})


def test_a_mask_at_the_networks_scale_is_refined_and_resized_without_a_full_size_copy_first():
    from segsynth.preprocess import to_size
    from segsynth.serve.uploads import CutoutOptions, cutout_pixels

    rgb, truth = _photo()
    low = cv2.resize(truth, (320, 240), interpolation=cv2.INTER_AREA)
    coarse = to_size(low, truth.shape)
    direct, via_full = refine_mask(rgb, low), refine_mask(rgb, coarse)
    assert direct.shape == truth.shape and M.mae(direct, via_full) < 0.01
    assert M.boundary_iou(direct, truth, dilation_ratio=0.002) > M.boundary_iou(coarse, truth, dilation_ratio=0.002) + 0.05
    off = CutoutOptions.parse({"output": "mask", "refine": "false"})
    assert np.array_equal(cutout_pixels(rgb, low, off), cutout_pixels(rgb, coarse, off))
    small = np.zeros((300, 400, 3), np.uint8)  # not refined: only resized
    assert np.array_equal(refine_mask(small, cv2.resize(low, (40, 30))), to_size(cv2.resize(low, (40, 30)), (300, 400)))
    with pytest.raises(ValueError, match="differ in size and aspect"):
        refine_mask(rgb, low[:, :100])
