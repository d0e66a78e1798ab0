"""``segsynth export CKPT --format onnx|torchscript [--out FILE]``: a checkpoint folder -> one file.

The exported graph takes ``image (N, 3, H, W) float32`` (normalised as the card's
``preprocessing`` says, :mod:`segsynth.preprocess`; H and W multiples of 32; batch, height and
width are dynamic) and returns ``mask (N, 1, H, W)``, probabilities 0..1 (the sigmoid is inside
the graph). An ONNX graph always takes ImageNet mean/std input, whatever the model was trained
on: a per-channel affine inside the graph turns it into the model's own normalisation (e.g.
``lite``), so the file also runs unchanged as rembg's ``u2net_custom`` model (the card's
``rembg`` block says how, and how rembg's mask differs from ours: :func:`rembg_card`). A model
card ``FILE.json`` beside it records the preprocessing (what
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
import contextlib
import json
import logging
import posixpath
import shlex
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from segsynth import io
from segsynth.predict import card_file
from segsynth.preprocess import Preprocessing

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


def _with_sigmoid(model, input_affine: tuple[np.ndarray, np.ndarray] | None = None):
    """``model`` with the sigmoid after it and, when given, ``x * scale + shift`` (per channel)
    before it: the graph's input normalisation -> the model's own."""
    import torch

    class MaskModel(torch.nn.Module):
        """Logits -> probabilities, so consumers of the file need no post-processing."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.renormalize = input_affine is not None
            if self.renormalize:
                scale, shift = (torch.as_tensor(np.asarray(v, np.float32)).view(1, 3, 1, 1) for v in input_affine)
                self.register_buffer("input_scale", scale)
                self.register_buffer("input_shift", shift)

        def forward(self, image):
            if self.renormalize:
                image = image * self.input_scale + self.input_shift
            return torch.sigmoid(self.net(image))

    return MaskModel(model).eval()


def imagenet_input(pre: Preprocessing) -> tuple[Preprocessing, tuple[np.ndarray, np.ndarray] | None]:
    """The ImageNet-normalised input contract of an ONNX graph for a model trained with ``pre``,
    and the per-channel ``(scale, shift)`` that maps that input to ``pre``'s normalisation
    (``None`` when they already agree): ``x_model = x_imagenet * scale + shift``, exact since
    both are affine in the pixel value (``x / 255 = x_imagenet * std_in + mean_in``)."""
    graph = Preprocessing(size=pre.size, normalization="imagenet", pad_to=pre.pad_to)
    mean_in, std_in = np.asarray(graph.mean, np.float64), np.asarray(graph.std, np.float64)
    mean, std = np.asarray(pre.mean, np.float64), np.asarray(pre.std, np.float64)
    if np.allclose(mean, mean_in, rtol=0, atol=1e-9) and np.allclose(std, std_in, rtol=0, atol=1e-9):
        return graph, None
    return graph, ((std_in / std).astype(np.float32), ((mean_in - mean) / std).astype(np.float32))


REMBG_SIZE = 320  # rembg's u2net_custom session resizes every image to 320 x 320 (rembg 2.0.86)


def rembg_card(model_path: str | Path, pre: Preprocessing, quantized: bool = False) -> dict:
    """The model card's ``rembg`` block: how to run ``model_path`` as rembg's ``u2net_custom``
    model, and exactly how rembg's mask differs from ours (``pre`` is the graph's input contract).

    rembg's session (``rembg/sessions/u2net_custom.py`` and ``base.py``) resizes the RGB image to
    320 x 320 with LANCZOS, divides by the image's own maximum, normalises with ImageNet mean/std,
    feeds input 0, takes output 0 ``[:, 0]``, min-max normalises it and resizes it back with
    LANCZOS; since rembg 2.0.86 it only loads a ``model_path`` under its models directory
    (``U2NET_HOME``, which wins over ``REMBG_HOME``, else ``~/.rembg``)."""
    model_path = str(model_path)
    folder = posixpath.dirname(model_path) if io.is_uri(model_path) else str(Path(model_path).parent)
    extras = json.dumps({"model_path": model_path})
    command = (f"U2NET_HOME={shlex.quote(folder)} rembg i -m u2net_custom "
               f"-x {shlex.quote(extras)} in.jpg out.png")
    same = ["normalisation: the graph takes the ImageNet mean/std input rembg feeds (a model trained with "
            "another normalisation converts it inside the graph)",
            "graph: rembg feeds input 0 and reads output 0 [:, 0], our (N, 3, H, W) image and (N, 1, H, W) "
            "mask; 320 x 320 fits the dynamic height and width (multiples of 32)"]
    differences = [
        "geometry: rembg stretches the image to 320 x 320 (LANCZOS, aspect ratio not kept); ours letterboxes it "
        f"(longer side to {pre.size}, aspect kept, zero padding to {pre.side}), as the model was trained",
        "intensity: rembg divides by the image's own maximum, not 255: the same input as ours only when the "
        "image's brightest channel value is 255 (a dark image is brightened)",
        "output: rembg min-max normalises the probabilities per image (an almost empty mask is stretched to "
        "0..1, so its noise becomes foreground) and resizes with LANCZOS; ours keeps the probabilities and "
        "resizes linearly",
        f"model_path must lie under rembg's models directory (U2NET_HOME={folder} in the command; rembg 2.0.86 "
        "refuses other paths)",
    ]
    if pre.size == REMBG_SIZE:
        same.append(f"scale: the model was trained at size {pre.size}, rembg's 320")
    else:
        differences.insert(1, f"scale: the model was trained at size {pre.size} but rembg always feeds 320 x 320, "
                              f"so it sees objects at about {REMBG_SIZE / pre.size:.2g}x its training scale; export a "
                              "size-320 model for rembg")
    if quantized:
        same.append("int8 weights: rembg runs the same int8 graph as ours")
    return {"compatible": True, "session": "u2net_custom", "rembg_version": "2.0.86",
            "command": command, "python": (f"new_session('u2net_custom', model_path={model_path!r}) "
                                          f"with U2NET_HOME={folder!r} in the environment"),
            "differences": differences, "same": same}


QUANTIZED_TOLERANCE = 0.25  # int8 weights: probabilities may move this much before the export is refused


def export(ckpt: str, fmt: str = "onnx", out: str | None = None, opset: int = 17, quantize: bool = False) -> dict:
    """Export ``ckpt`` to ``out``; returns the model card written to ``out`` with ``.json``.

    ``quantize`` (ONNX only): the fp32 graph is exported and checked first, then its weights are
    quantized to int8 (onnxruntime ``quantize_dynamic``) into ``out``; the card records
    ``quantized: int8`` and the int8 graph's own difference to torch."""

    from segsynth.model import load_model_folder

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(sorted(FORMATS))}")
    if quantize and fmt != "onnx":
        raise ValueError("--quantize makes an int8 ONNX graph; use it with --format onnx")
    io.require_input(ckpt, "ckpt", "folder")
    model, card = load_model_folder(ckpt, "cpu")
    trained = Preprocessing.from_card(card["preprocessing"])
    # ONNX: ImageNet input whatever the training normalisation (what rembg and most ONNX
    # consumers feed); TorchScript keeps the checkpoint's own
    graph_pre, affine = imagenet_input(trained) if fmt == "onnx" else (trained, None)
    net = _with_sigmoid(model, affine)
    out = str(out) if out else io.join(ckpt, f"model{FORMATS[fmt]}")
    # onnx and torch write local files only: an object-store `out` is exported to a temp folder
    # first and uploaded, the file, then its card (the card marks a complete export)
    with tempfile.TemporaryDirectory(prefix="segsynth-export-") if io.is_uri(out) else contextlib.nullcontext() as staging:
        out_path = Path(staging, posixpath.basename(out)) if staging else Path(out)
        exported = _export_file(net, card, trained, graph_pre, affine, ckpt, fmt, out, out_path, opset, quantize)
    log.info("exported %s -> %s (max |diff| vs torch %.2e)", ckpt, out, exported["parity_max_abs_diff"])
    return exported


def _export_file(net, card: dict, trained: Preprocessing, graph_pre: Preprocessing, affine, ckpt: str, fmt: str,
                 out: str, out_path: Path, opset: int, quantize: bool) -> dict:
    """:func:`export`'s work: ``net`` to the local ``out_path``, checked, then copied to ``out``
    (when that is elsewhere) and its card written beside ``out``; returns the card."""
    import torch

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
    preprocessing = card["preprocessing"] if affine is None else graph_pre.to_card()
    if affine is not None:
        preprocessing["trained_normalization"] = {"normalization": trained.normalization, "mean": list(trained.mean),
                                                  "std": list(trained.std), "converted": "inside the graph"}
    exported = {**card, "preprocessing": preprocessing, "format": fmt, "source": str(ckpt), "output": "probability",
                "quantized": "int8 (dynamic, weights QUInt8)" if quantize else None, "fp32_parity_max_abs_diff": fp32_diff,
                "input": {"name": "image", "shape": ["batch", 3, "height", "width"], "dtype": "float32"},
                "dynamic_axes": ["batch", "height", "width"], "opset": opset if fmt == "onnx" else None,
                "parity_max_abs_diff": diff}
    if fmt == "onnx":
        exported["rembg"] = rembg_card(out if io.is_uri(out) else out_path, graph_pre, quantized=quantize)
    if io.is_uri(out):
        io.write_bytes(out, out_path.read_bytes())
    io.write_bytes(card_file(out), json.dumps(exported, indent=2, default=str).encode())
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
    out = cfg.out or io.join(cfg.ckpt, f"model{FORMATS[cfg.format]}")
    return {"out": out, "card": card_file(out), "parity_max_abs_diff": card["parity_max_abs_diff"]}


def main(args: argparse.Namespace) -> int:
    card = export(args.ckpt, args.format, args.out, args.opset, args.quantize)
    out = args.out or io.join(args.ckpt, f"model{FORMATS[args.format]}")
    sys.stdout.write(json.dumps({"out": out, "card": card_file(out),
                                 "parity_max_abs_diff": card["parity_max_abs_diff"]}, indent=2) + "\n")
    return 0
