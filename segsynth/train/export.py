"""``segsynth export CKPT --format onnx|torchscript [--out FILE]``: a checkpoint folder -> one file.

The exported graph takes ``image (N, 3, H, W) float32`` (normalised as the card's
``preprocessing`` says, :mod:`segsynth.preprocess`; H and W multiples of 32; batch, height and
width are dynamic) and returns ``mask (N, 1, H, W)``, probabilities 0..1 (the sigmoid is inside
the graph). A model card ``FILE.json`` beside it records the preprocessing (what
:class:`segsynth.predict.OnnxModelPredictor` replays), the training config and metrics, and the
measured torch-vs-export difference. The default output names never overwrite the checkpoint's
own ``model.pt`` (TorchScript goes to ``model.ts``, its card to ``model.ts.json``). Both load
with ``segsynth.predict.load_predictor(path)``.

    segsynth export outputs/demo/train/best --format onnx --out outputs/demo/model.onnx
    segsynth export outputs/demo/train/best --quantize --out outputs/demo/model-int8.onnx   # int8 weights
    predictor = load_predictor("outputs/demo/model.onnx")     # kind "onnx", from the card
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from segsynth.predict import card_path

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".ts"}  # never model.pt: the checkpoint's weights
PARITY_TOLERANCE = 1e-3  # max |export - torch| on a random batch; above it the export is refused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", metavar="CKPT", help="checkpoint folder (model.pt + model_card.json), e.g. OUT/best")
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="export format (default onnx)")
    parser.add_argument("--out", default=None, help="output file (default CKPT/model.onnx or CKPT/model.ts)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--quantize", action="store_true",
                        help="ONNX only: int8 weights (onnxruntime dynamic quantization): a smaller file, "
                             "a measured accuracy cost (its card records the difference to torch)")


def _with_sigmoid(model):
    import torch

    class MaskModel(torch.nn.Module):
        """Logits -> probabilities, so consumers of the file need no post-processing."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image):
            return torch.sigmoid(self.net(image))

    return MaskModel(model).eval()


QUANTIZED_TOLERANCE = 0.25  # int8 weights: probabilities may move this much before the export is refused


def export(ckpt: str, fmt: str = "onnx", out: str | None = None, opset: int = 17, quantize: bool = False) -> dict:
    """Export ``ckpt`` to ``out``; returns the model card written to ``out`` with ``.json``.

    ``quantize`` (ONNX only): the fp32 graph is exported and checked first, then its weights are
    quantized to int8 (onnxruntime ``quantize_dynamic``) into ``out``; the card records
    ``quantized: int8`` and the int8 graph's own difference to torch."""
    import torch

    from segsynth.model import load_model_folder

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(sorted(FORMATS))}")
    if quantize and fmt != "onnx":
        raise ValueError("--quantize makes an int8 ONNX graph; use it with --format onnx")
    from segsynth import io

    io.require_input(ckpt, "ckpt", "folder")
    model, card = load_model_folder(ckpt, "cpu")
    net = _with_sigmoid(model)
    out_path = Path(out) if out else Path(ckpt) / f"model{FORMATS[fmt]}"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    size = int(card["preprocessing"]["size"])
    example = torch.randn(1, 3, size, size)
    with warnings.catch_warnings():  # tracer chatter about shape-derived Python values (constant for multiples of 32)
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            axes = {0: "batch", 2: "height", 3: "width"}
            # the TorchScript-based exporter: dynamic axes without the optional onnxscript package
            torch.onnx.export(net, (example,), str(out_path), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=["mask"],
                              dynamic_axes={"image": axes, "mask": axes})
        else:
            with torch.no_grad():
                torch.jit.trace(net, example).save(str(out_path))
    diff = parity(net, str(out_path), fmt, size)
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(f"exported {fmt} differs from torch by {diff:.2e} (> {PARITY_TOLERANCE}); "
                           f"try another --opset or --format")
    fp32_diff = diff
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fp32 = out_path.with_name(out_path.stem + ".fp32.onnx")
        out_path.replace(fp32)
        try:
            quantize_dynamic(str(fp32), str(out_path), weight_type=QuantType.QUInt8)
        finally:
            fp32.unlink(missing_ok=True)
        diff = parity(net, str(out_path), fmt, size)
        if diff > QUANTIZED_TOLERANCE:
            raise RuntimeError(f"the int8 graph differs from torch by {diff:.3f} (> {QUANTIZED_TOLERANCE}); "
                               "export without --quantize")
    exported = {**card, "format": fmt, "source": str(ckpt), "output": "probability",
                "quantized": "int8 (dynamic, weights QUInt8)" if quantize else None, "fp32_parity_max_abs_diff": fp32_diff,
                "input": {"name": "image", "shape": ["batch", 3, "height", "width"], "dtype": "float32"},
                "dynamic_axes": ["batch", "height", "width"], "opset": opset if fmt == "onnx" else None,
                "parity_max_abs_diff": diff}
    card_path(out_path).write_text(json.dumps(exported, indent=2, default=str))
    log.info("exported %s -> %s (max |diff| vs torch %.2e)", ckpt, out_path, diff)
    return exported


def parity(net, path: str, fmt: str, size: int, seed: int = 0) -> float:
    """Max absolute difference between torch and the exported file on a random batch of 2 at a
    size other than the traced one (checks the dynamic axes too)."""
    import torch

    from segsynth.rng import rng_for

    x = rng_for(seed, "export-parity").standard_normal((2, 3, size + 32, size)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    if fmt == "onnx":
        from segsynth.predict import _ort_session

        sess = _ort_session(path, threads=1)
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(path)
        with torch.no_grad():
            got = loaded(torch.from_numpy(x)).numpy()
    return float(np.abs(np.asarray(got) - ref).max())


@dataclass(frozen=True)
class ExportConfig:
    """The export step of a chain (``segsynth demo``): ``ckpt`` -> ``out`` in ``format``."""

    ckpt: str = "outputs/train/best"
    format: Literal["onnx", "torchscript"] = "onnx"
    out: Optional[str] = None  # default CKPT/model.onnx (or model.ts)
    opset: int = 17
    quantize: bool = False  # ONNX only: int8 weights


def run(cfg: ExportConfig, address: str | None = None) -> dict:
    """Export as :func:`export` does; ``address`` is unused (no Ray)."""
    card = export(cfg.ckpt, cfg.format, cfg.out, cfg.opset, cfg.quantize)
    out = cfg.out or str(Path(cfg.ckpt) / f"model{FORMATS[cfg.format]}")
    return {"out": out, "card": str(card_path(out)), "parity_max_abs_diff": card["parity_max_abs_diff"]}


def main(args: argparse.Namespace) -> int:
    card = export(args.ckpt, args.format, args.out, args.opset, args.quantize)
    out = args.out or str(Path(args.ckpt) / f"model{FORMATS[args.format]}")
    sys.stdout.write(json.dumps({"out": out, "card": str(card_path(out)),
                                 "parity_max_abs_diff": card["parity_max_abs_diff"]}, indent=2) + "\n")
    return 0
