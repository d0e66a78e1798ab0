"""CheckpointPredictor / OnnxModelPredictor: any size, gray/RGBA input, mixed-size batches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segsynth.predict import PREDICTORS, infer_kind, load_predictor
from segsynth.model import ModelSpec, build_model, preprocessing, save_model_folder

SIZE = 64


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    spec = ModelSpec(encoder_name="tu-mobilenetv3_small_050", decoder_pyramid_channels=64, decoder_segmentation_channels=32)
    card = {"name": "tiny", "model": spec.__dict__, "preprocessing": preprocessing(SIZE), "metrics": {}}
    save_model_folder(str(folder), build_model(spec), card)
    return folder


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (37, 101, 3), dtype=np.uint8),   # odd, wide
            rng.integers(0, 255, (129, 33), dtype=np.uint8),      # grayscale, tall
            rng.integers(0, 255, (64, 64, 4), dtype=np.uint8),    # RGBA
            rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)]      # tiny


def test_registered_and_inferred(ckpt):
    assert {"checkpoint", "onnx"} <= set(PREDICTORS)
    assert infer_kind(str(ckpt)) == "checkpoint"


def test_letterbox_into_the_model_square():
    from segsynth.preprocess import Preprocessing

    pre = Preprocessing(size=SIZE)
    boxed, box = pre.letterbox(np.full((37, 101, 3), 9, np.uint8))
    assert box == (0, 0, 23, 64) and boxed.shape == (64, 64, 3)
    assert (boxed[:23] == 9).all() and (boxed[23:] == 0).all()
    x = pre.normalize(boxed[None])
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    odd = Preprocessing(size=50)  # the square is rounded up to the FPN's stride
    assert odd.side == 64 and odd.letterbox(np.zeros((10, 20), np.uint8))[0].shape == (64, 64)


def test_checkpoint_predictor_any_size(ckpt):
    predictor = load_predictor(str(ckpt), threads=1)
    images = _images()
    masks = predictor.predict(images)
    for im, m in zip(images, masks):
        assert m.shape == im.shape[:2] and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0
    # a mixed batch gives what one image at a time gives
    for im, m in zip(images, masks):
        assert np.allclose(predictor.predict_one(im), m, atol=1e-5)
    card = predictor.card
    assert card["kind"] == "checkpoint" and card["preprocessing"]["size"] == SIZE
    # RGBA and gray are converted, not rejected: same result as their RGB version
    rgba = images[2]
    assert np.allclose(predictor.predict_one(rgba), predictor.predict_one(np.ascontiguousarray(rgba[:, :, :3])), atol=1e-6)


def test_onnx_predictor_matches_checkpoint(ckpt, tmp_path):
    from segsynth.train.export import export

    path = tmp_path / "tiny.onnx"
    export(str(ckpt), "onnx", str(path))
    onnx_pred = load_predictor(str(path), threads=1)
    assert type(onnx_pred).__name__ == "OnnxModelPredictor"
    torch_pred = load_predictor(str(ckpt), threads=1)
    images = _images()
    for a, b in zip(onnx_pred.predict(images), torch_pred.predict(images)):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-3


def test_onnx_without_card_is_a_clear_error(tmp_path):
    from segsynth.predict import OnnxModelPredictor

    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="model card"):
        OnnxModelPredictor(str(tmp_path / "x.onnx"))
