"""The model builder: names, weights, preprocessing constants, checkpoint folders."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segsynth.model import (CARD_FILE, IMAGENET_MEAN, IMAGENET_STD, MODEL_FILE, ModelSpec, build_model,
                            load_model_folder, load_weights, preprocessing, save_model_folder, to_input)

TINY = ModelSpec(encoder_name="tu-mobilenetv3_small_050", decoder_pyramid_channels=64, decoder_segmentation_channels=32)


def test_fpn_one_channel_any_multiple_of_32():
    model = build_model(TINY).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 96)).shape == (2, 1, 64, 96)


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ValueError, match="valid smp encoders: .*efficientnet-b5"):
        build_model(ModelSpec(encoder_name="efficientnet-b99"))
    with pytest.raises(ValueError, match="timm has no model"):
        build_model(ModelSpec(encoder_name="tu-not_a_model"))


def test_decoder_channels_must_fit_groupnorm():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model(ModelSpec(encoder_name="tu-mobilenetv3_small_050", decoder_segmentation_channels=48))


def test_imagenet_weights_offline_fail_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="encoder_weights: null"):
        build_model(ModelSpec(encoder_name="mobilenet_v2", decoder_pyramid_channels=64, decoder_segmentation_channels=32),
                    encoder_weights="imagenet")


def test_local_weights_file_and_folder(tmp_path):
    src = build_model(TINY)
    torch.save(src.encoder.state_dict(), tmp_path / "encoder.pth")
    dst = build_model(TINY, encoder_weights=str(tmp_path / "encoder.pth"))
    key = next(iter(src.encoder.state_dict()))
    assert torch.equal(dst.encoder.state_dict()[key], src.encoder.state_dict()[key])
    save_model_folder(str(tmp_path / "ckpt"), src, {"model": {}, "preprocessing": preprocessing(64)})
    whole = build_model(TINY, encoder_weights=str(tmp_path / "ckpt"))  # fine-tune from a checkpoint folder
    head = "segmentation_head.0.weight"
    assert torch.equal(whole.state_dict()[head], src.state_dict()[head])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(dst, str(tmp_path / "missing.pth"))


def test_to_input_normalises_with_imagenet_constants():
    img = np.full((1, 4, 4, 3), 255, np.uint8)
    x = to_input(img)
    assert x.shape == (1, 3, 4, 4) and x.dtype == torch.float32
    expect = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x[0, :, 0, 0].numpy(), expect, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        to_input(np.zeros((1, 4, 4, 3), np.float32))


def test_checkpoint_folder_round_trip(tmp_path):
    model = build_model(TINY).eval()
    card = {"model": {"encoder_name": TINY.encoder_name, "decoder_pyramid_channels": 64,
                      "decoder_segmentation_channels": 32}, "preprocessing": preprocessing(64), "metrics": {"val_iou": 0.5}}
    save_model_folder(str(tmp_path), model, card, "size: 64\n")
    assert {p.name for p in tmp_path.iterdir()} >= {MODEL_FILE, CARD_FILE, "config.yaml"}
    assert json.loads((tmp_path / CARD_FILE).read_text())["preprocessing"]["pad_to"] == 32
    loaded, card2 = load_model_folder(str(tmp_path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert card2["metrics"]["val_iou"] == 0.5
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_model_folder(str(tmp_path / "nope"))
