"""Export: ONNX and TorchScript match torch within 1e-3, with dynamic batch and size."""
from __future__ import annotations

import json

from pathlib import Path

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

    out = tmp_path / "model.ts"
    card = export(str(ckpt), "torchscript", str(out))
    assert card["parity_max_abs_diff"] < 1e-3 and (tmp_path / "model.ts.json").is_file()


def test_every_export_loads_back_beside_the_checkpoint(ckpt):
    """Both formats export into the checkpoint folder by default, side by side and without
    touching its weights, and each loads with load_predictor and gives the checkpoint's masks."""
    from segsynth.predict import load_predictor
    from segsynth.train.export import export

    weights = (Path(ckpt) / "model.pt").read_bytes()
    export(str(ckpt), "onnx")
    export(str(ckpt), "torchscript")
    names = {p.name for p in Path(ckpt).iterdir()}
    assert {"model.onnx", "model.json", "model.ts", "model.ts.json"} <= names
    assert (Path(ckpt) / "model.pt").read_bytes() == weights
    images = [np.random.default_rng(i).integers(0, 255, (37 + 11 * i, 61, 3), np.uint8) for i in range(3)]
    ref = load_predictor(str(ckpt)).predict(images)
    for path, kind in ((Path(ckpt) / "model.onnx", "onnx"), (Path(ckpt) / "model.ts", "torchscript")):
        pred = load_predictor(str(path))
        assert pred.kind == kind
        for got, want in zip(pred.predict(images), ref):
            assert got.shape == want.shape and np.abs(got - want).max() < 1e-3, kind


def test_unknown_format():
    from segsynth.train.export import export

    with pytest.raises(ValueError, match="valid: onnx, torchscript"):
        export("x", "tflite")


def test_int8_onnx_export_is_smaller_loads_and_stays_close(ckpt, tmp_path):
    from segsynth.predict import load_predictor
    from segsynth.train.export import QUANTIZED_TOLERANCE, export

    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export(str(ckpt), "onnx", str(fp32))
    card = export(str(ckpt), "onnx", str(int8), quantize=True)
    assert card["quantized"].startswith("int8") and card["fp32_parity_max_abs_diff"] < 1e-3
    assert card["parity_max_abs_diff"] <= QUANTIZED_TOLERANCE
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size and not (tmp_path / "int8.fp32.onnx").exists()
    images = [np.random.default_rng(i).integers(0, 255, (50, 70, 3), np.uint8) for i in range(2)]
    for got, want in zip(load_predictor(str(int8)).predict(images), load_predictor(str(fp32)).predict(images)):
        assert got.shape == want.shape and np.abs(got - want).mean() < 0.05
    with pytest.raises(ValueError, match="--format onnx"):
        export(str(ckpt), "torchscript", str(tmp_path / "m.ts"), quantize=True)
