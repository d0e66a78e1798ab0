"""Predictors: anything that turns images of any size into soft masks at their own size.

    predictor = load_predictor("runs/demo/best")                    # checkpoint folder (kind inferred)
    predictor = load_predictor("isnet.onnx", kind="onnx-isnet")     # a salient-object ONNX model
    masks = predictor.predict([rgb1, rgb2])                          # list of (H, W) float32 0..1

Input images are ``(H, W, 3) uint8`` RGB (grayscale ``(H, W)`` and RGBA ``(H, W, 4)`` are
converted); each output mask is ``(H, W) float32`` in 0..1 at the input's own size.

Kinds are registered by name (``PREDICTORS``); an unknown name lists the valid ones. Heavy
objects (ONNX sessions, torch models) are created once in ``__init__`` and reused.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from segsynth.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, to_size, unletterbox

log = logging.getLogger(__name__)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Gray ``(H, W)``/``(H, W, 1)``, RGB or RGBA ``uint8`` -> ``(H, W, 3) uint8`` RGB."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}; decode with segsynth.io.decode_image")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")


@dataclass(frozen=True)
class Boxed:
    """An image letterboxed for the network: the ``(side, side, 3) uint8`` square, the content's
    box in it ``(y0, x0, h, w)``, and the image's own ``(H, W)``."""

    square: np.ndarray
    box: tuple[int, int, int, int]
    shape: tuple[int, int]


class Predictor:
    """Base class: subclasses implement ``predict``; ``name`` and ``card`` describe the model."""

    name: str = "predictor"

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        return self.predict([image])[0]

    @property
    def card(self) -> dict:
        """What the model is and how it preprocesses (shown by the serving endpoint)."""
        return {"name": self.name, "kind": type(self).__name__}


# "0": ONNX Runtime's idle worker threads sleep instead of spinning. A serving replica sets it: its
# cores are shared with decoding, encoding and Serve's proxy, which spinning threads would starve.
ORT_SPIN_ENV = "SEGSYNTH_ORT_SPIN"


def _ort_session(path: str, threads: int | None = None):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("onnxruntime is needed for ONNX models: pip install onnxruntime") from e
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist; pass the path of a .onnx file")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or int(os.environ.get("SEGSYNTH_ORT_THREADS", "0"))
    if os.environ.get(ORT_SPIN_ENV, "1") == "0":  # idle threads sleep instead of spinning for work
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(path, sess_options=opts, providers=providers)


class SalientOnnxPredictor(Predictor):
    """A salient-object ONNX model (IS-Net/DIS, U2NET) with its declared preprocessing.

    ``style="isnet"``: RGB resized to 1024x1024, ``(x - 128) / 256``; ``style="u2net"``: 320x320,
    ``x / max(x)`` then ImageNet mean/std. The first output is min-max normalised per image and
    resized back to the input's size.
    """

    STYLES = {
        "isnet": {"size": 1024, "mean": (128.0, 128.0, 128.0), "std": (256.0, 256.0, 256.0), "scale_by_max": False},
        "u2net": {"size": 320, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "scale_by_max": True},
    }

    def __init__(self, path: str, style: str = "isnet", size: int | None = None, threads: int | None = None):
        if style not in self.STYLES:
            raise ValueError(f"unknown ONNX preprocessing style {style!r}; valid: {sorted(self.STYLES)}")
        self.path, self.style = str(path), style
        pre = dict(self.STYLES[style])
        if size:
            pre["size"] = size
        self.pre = pre
        self.session = _ort_session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.name = Path(self.path).stem

    def _preprocess(self, rgb: np.ndarray) -> np.ndarray:
        s = self.pre["size"]
        x = cv2.resize(rgb, (s, s), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        if self.pre["scale_by_max"]:
            x = x / max(float(x.max()), 1e-6)
        x = (x - np.asarray(self.pre["mean"], np.float32)) / np.asarray(self.pre["std"], np.float32)
        return x.transpose(2, 0, 1)[None]

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for image in images:  # the shared graphs have a fixed batch axis of 1
            rgb = to_rgb(image)
            y = self.session.run(None, {self.input_name: self._preprocess(rgb)})[0]
            y = np.asarray(y, np.float32).reshape(y.shape[-2], y.shape[-1])
            lo, hi = float(y.min()), float(y.max())
            y = (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)
            out.append(cv2.resize(y, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR))
        return out

    @property
    def card(self) -> dict:
        return {"name": self.name, "kind": f"onnx-{self.style}", "path": self.path, "preprocessing": self.pre}


class WhiteThresholdPredictor(Predictor):
    """The white-background extractor used as a model: what catalog cut-outs were made with."""

    name = "white-threshold"

    def __init__(self, **white_options):
        from segsynth.white import WhiteBackgroundOptions

        self.options = WhiteBackgroundOptions(**white_options)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        from segsynth.white import white_background_alpha

        return [white_background_alpha(to_rgb(im), self.options).alpha for im in images]

    @property
    def card(self) -> dict:
        import dataclasses

        return {"name": self.name, "kind": "white-threshold", "options": dataclasses.asdict(self.options)}


# name -> factory(path, **options). The training issue adds "checkpoint" and "onnx" (our exports).
PREDICTORS: dict[str, Callable[..., Predictor]] = {
    "onnx-isnet": lambda path, **kw: SalientOnnxPredictor(path, style="isnet", **kw),
    "onnx-u2net": lambda path, **kw: SalientOnnxPredictor(path, style="u2net", **kw),
    "white-threshold": lambda path=None, **kw: WhiteThresholdPredictor(**kw),
}


def card_path(model_file: str | Path) -> Path:
    """Where an exported model's card sits: ``X.json`` beside ``X.onnx``, ``X.ts.json`` beside
    ``X.ts`` (so both exports of one checkpoint can share its folder)."""
    p = Path(model_file)
    return p.with_suffix(".json") if p.suffix == ".onnx" else Path(str(p) + ".json")


def card_file(model_file: str) -> str:
    """:func:`card_path` for a path that may be a URI (``s3://b/m.onnx`` -> ``s3://b/m.json``)."""
    folder, sep, name = str(model_file).rpartition("/")
    return f"{folder}{sep}{card_path(name).name}"


def infer_kind(path: str | None) -> str:
    """Guess a predictor kind from a path: a checkpoint folder, a TorchScript or an ONNX file."""
    if path is None:
        return "white-threshold"
    p = str(path)
    if p.endswith(".ts"):
        return "torchscript"
    if p.endswith(".onnx"):
        # our exports carry a model card beside them; anything else is a salient-object graph
        return "onnx" if Path(p).with_suffix(".json").is_file() and "onnx" in PREDICTORS else "onnx-isnet"
    return "checkpoint"


def load_predictor(path: str | None = None, kind: str | None = None, **options) -> Predictor:
    """Create a predictor once; pass it around (like ``rembg.new_session``)."""
    kind = kind or infer_kind(path)
    if kind not in PREDICTORS:
        raise ValueError(f"unknown predictor kind {kind!r}; valid kinds: {', '.join(sorted(PREDICTORS))}")
    if kind != "white-threshold" and path is None:
        raise ValueError(f"predictor kind {kind!r} needs a path (a checkpoint folder or .onnx file)")
    if path is not None and kind != "white-threshold":
        from segsynth import io

        io.require_input(path, "model", "file" if kind.startswith("onnx") or kind == "torchscript" else "folder")
    return PREDICTORS[kind](path, **options)


# ---------------------------------------------------------------- our own models
class PaddedModelPredictor(Predictor):
    """Shared flow of our models, the model card's :class:`segsynth.preprocess.Preprocessing`
    (the same as training): letterbox each image into one ``(side, side)`` square (content at
    the top-left, zero padding), normalise, run ``batch_size`` images per pass, crop the content
    box and resize it back to each input's size. Subclasses implement
    ``_forward((N, 3, side, side) float32) -> (N, side, side) float32 0..1``."""

    def __init__(self, card: dict, batch_size: int = 8):
        self._card, self.batch_size = card, max(1, int(batch_size))
        try:
            self.pre = Preprocessing.from_card(card.get("preprocessing") or {})
        except ValueError as e:
            raise ValueError(f"model card of {self.name}: {e}") from None
        self.size, self.pad_to = self.pre.size, self.pre.pad_to

    def _forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, image: np.ndarray) -> Boxed:
        """``image`` letterboxed for the network (any thread: no model state is touched)."""
        rgb = to_rgb(image)
        square, box = self.pre.letterbox(rgb)
        return Boxed(square, box, rgb.shape[:2])

    def forward_boxed(self, items: Sequence[Boxed]) -> list[np.ndarray]:
        """The forward passes alone (``batch_size`` items each, sizes mixed freely): each item's
        mask over its content box at the network's scale, ``(h, w) float32`` 0..1; :func:`segsynth.preprocess.to_size`
        takes it to the image's size."""
        out: list[np.ndarray] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            probs = self._forward(self.pre.normalize(np.stack([b.square for b in chunk])))
            out.extend(unletterbox(p, b.box, b.box[2:]) for p, b in zip(probs, chunk))
        return out

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Images of any sizes, ``batch_size`` per forward pass: :meth:`prepare`,
        :meth:`forward_boxed`, :func:`segsynth.preprocess.to_size`."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            items = [self.prepare(im) for im in images[start:start + self.batch_size]]
            out.extend(to_size(m, b.shape) for m, b in zip(self.forward_boxed(items), items))
        return out

    @property
    def card(self) -> dict:
        return {**self._card, "name": self.name, "kind": self.kind, "path": self.path}


def _torch_device(device: str, threads: int | None):
    """``auto`` -> cuda when available, else cpu; ``threads`` sets torch's intra-op threads."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _exported_card(path: str, hint: str = "") -> dict:
    """The model card ``segsynth export`` wrote beside ``path`` (:func:`card_path`)."""
    import json

    card_file = card_path(path)
    if not card_file.is_file():
        raise FileNotFoundError(f"{card_file} is missing: the model card written by `segsynth export` must "
                                f"sit beside {Path(path).name}{hint}")
    return json.loads(card_file.read_text())


class CheckpointPredictor(PaddedModelPredictor):
    """A training checkpoint folder (``model.pt`` + ``model_card.json``), run with torch."""

    kind = "checkpoint"

    def __init__(self, path: str, device: str = "auto", batch_size: int = 8, threads: int | None = None):
        from segsynth.model import load_model_folder

        self.path, self.device = str(path), _torch_device(device, threads)
        self.model, card = load_model_folder(self.path, self.device)
        self.name = card.get("name") or Path(self.path.rstrip("/")).name
        super().__init__(card, batch_size)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(x).to(self.device))
            return torch.sigmoid(logits.float())[:, 0].cpu().numpy()


class OnnxModelPredictor(PaddedModelPredictor):
    """An ONNX file exported by ``segsynth export`` (dynamic batch and size; ``X.json`` beside it)."""

    kind = "onnx"

    def __init__(self, path: str, batch_size: int = 8, threads: int | None = None):
        self.path = str(path)
        card = _exported_card(self.path, " (or load a salient-object graph with kind='onnx-isnet')")
        self.session = _ort_session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.outputs_probability = card.get("output", "probability") == "probability"
        self.name = card.get("name") or Path(self.path).stem
        super().__init__(card, batch_size)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(self.session.run(None, {self.input_name: x})[0], np.float32)[:, 0]
        return y if self.outputs_probability else 1.0 / (1.0 + np.exp(-y))


class TorchScriptPredictor(PaddedModelPredictor):
    """A TorchScript file exported by ``segsynth export --format torchscript`` (``X.ts``, its card
    ``X.ts.json`` beside it); it outputs probabilities. Runs without the training code or smp."""

    kind = "torchscript"

    def __init__(self, path: str, device: str = "auto", batch_size: int = 8, threads: int | None = None):
        import torch

        self.path = str(path)
        card = _exported_card(self.path)
        self.device = _torch_device(device, threads)
        self.model = torch.jit.load(self.path, map_location=self.device).eval()
        self.name = card.get("name") or Path(self.path).stem
        super().__init__(card, batch_size)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(x).to(self.device)).float()[:, 0].cpu().numpy()


PREDICTORS.update({
    "checkpoint": lambda path, **kw: CheckpointPredictor(path, **kw),
    "onnx": lambda path, **kw: OnnxModelPredictor(path, **kw),
    "torchscript": lambda path, **kw: TorchScriptPredictor(path, **kw),
})
