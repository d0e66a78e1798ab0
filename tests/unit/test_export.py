"""Export: ONNX and TorchScript match torch within 1e-3, with dynamic batch and size."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segsynth.model import ModelSpec, build_model, load_model_folder, preprocessing, save_model_folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("best")
    torch.manual_seed(1)
    spec = ModelSpec(encoder_name="tu-mobilenetv3_small_050", decoder_pyramid_channels=64, decoder_segmentation_channels=32)
    card = {"name": "tiny", "encoder_name": spec.encoder_name, "model": spec.__dict__,
            "preprocessing": preprocessing(64), "metrics": {"val_iou": 0.7}, "config": {"size": 64}}
    save_model_folder(str(folder), build_model(spec), card, "size: 64\n")
    return folder


def test_onnx_parity_dynamic_batch(ckpt, tmp_path):
    import onnxruntime as ort

    from segsynth.cli import main

    out = tmp_path / "model.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["format"] == "onnx" and card["output"] == "probability"
    assert card["preprocessing"]["size"] == 64 and card["metrics"]["val_iou"] == 0.7 and card["config"]["size"] == 64
    assert card["parity_max_abs_diff"] < 1e-3
    model, _ = load_model_folder(str(ckpt))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 64), (3, 3, 96, 128)]:  # batch and size are dynamic
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        got = sess.run(None, {"image": x})[0]
        with torch.no_grad():
            ref = torch.sigmoid(model(torch.from_numpy(x))).numpy()
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-3


def test_torchscript_parity(ckpt, tmp_path):
    from segsynth.train.export import export

    out = tmp_path / "model.pt"
    card = export(str(ckpt), "torchscript", str(out))
    assert card["parity_max_abs_diff"] < 1e-3 and out.with_suffix(".json").is_file()


def test_unknown_format():
    from segsynth.train.export import export

    with pytest.raises(ValueError, match="valid: onnx, torchscript"):
        export("x", "tflite")
