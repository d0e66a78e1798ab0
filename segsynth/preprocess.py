"""The one way an image is prepared for our models: letterbox, then normalise.

Training, validation, every predictor (checkpoint and ONNX), export, serving and evaluation use
this module, and the model card carries it (``Preprocessing.to_card``), so a model meets at
inference exactly the kind of input it was trained on.

    pre = Preprocessing(size=320, normalization="lite")
    boxed, box = pre.letterbox(rgb)          # (S, S, 3) uint8, content at the top-left, zero padding
    x = pre.normalize(boxed[None])           # (1, 3, S, S) float32
    scale, shift = pre.affine()              # the same arithmetic for torch: x * scale + shift

Letterbox: the longer side is scaled to ``size`` (aspect kept; ``INTER_AREA`` when shrinking,
``INTER_LINEAR`` when enlarging), the content is placed at ``offset`` (the top-left corner at
inference; anywhere in training augmentation) in a zero-filled ``(side, side)`` square, ``side``
being ``size`` rounded up to ``pad_to`` (the FPN's output stride). Masks go through the same
resize (linear, so soft edges stay soft).

Normalisation: ``(x / 255 - mean) / std`` per channel with the constants of a named scheme:
``imagenet`` (torchvision's mean/std) or ``lite`` (``(x - 127) / 128``, what the EfficientNet-Lite
originals were trained with).

numpy and OpenCV only: imports neither torch nor Ray.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite (TF originals): (x - 127) / 128 on 0..255 inputs, written in 0..1 units
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "lite": (LITE_MEAN, LITE_STD),
}
PAD_TO = 32  # the FPN's deepest feature map is 1/32 of the input: the square's side is a multiple of it
RESIZE_RULE = ("letterbox: longer side to size (aspect kept; area when shrinking, linear when enlarging), "
               "content at the top-left of a zero-filled square of side = size rounded up to pad_to")

__all__ = ["Preprocessing", "NORMALIZATIONS", "IMAGENET_MEAN", "IMAGENET_STD", "LITE_MEAN", "LITE_STD",
           "PAD_TO", "letterbox", "content_shape"]


def content_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """``(h, w)`` of an ``h x w`` image once its longer side is ``size`` (aspect kept, at least 1)."""
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def letterbox(arr: np.ndarray, size: int, side: int | None = None,
              offset: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Fit ``arr`` (``(H, W, 3) uint8`` image or ``(H, W) uint8`` mask) into a ``(side, side)``
    zero square: longer side to ``size``, content at ``offset = (y0, x0)``.

    Returns ``(square, (y0, x0, h, w))``, the box of the content in the square. ``side``
    defaults to ``size``; the content must fit at ``offset``.
    """
    side = size if side is None else side
    h0, w0 = arr.shape[:2]
    h, w = content_shape(h0, w0, size)
    y0, x0 = int(offset[0]), int(offset[1])
    if y0 < 0 or x0 < 0 or y0 + h > side or x0 + w > side:
        raise ValueError(f"letterbox: content {h}x{w} at offset {(y0, x0)} does not fit a {side}x{side} square")
    if (h, w) != (h0, w0):
        interp = cv2.INTER_AREA if h < h0 else cv2.INTER_LINEAR
        arr = cv2.resize(arr, (w, h), interpolation=interp)
    if (h, w) == (side, side):
        return np.ascontiguousarray(arr), (0, 0, h, w)
    out = np.zeros((side, side) + arr.shape[2:], arr.dtype)
    out[y0:y0 + h, x0:x0 + w] = arr
    return out, (y0, x0, h, w)


@dataclass(frozen=True)
class Preprocessing:
    """What happens to an image before the network; stored in the model card."""

    size: int = 512
    normalization: str = "imagenet"  # a name of NORMALIZATIONS; its constants go into the card
    pad_to: int = PAD_TO
    mean: tuple[float, float, float] | None = None  # None: the normalization's constants
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.mean is None or self.std is None:
            if self.normalization not in NORMALIZATIONS:
                raise ValueError(f"unknown normalization {self.normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
            mean, std = NORMALIZATIONS[self.normalization]
            object.__setattr__(self, "mean", tuple(self.mean or mean))
            object.__setattr__(self, "std", tuple(self.std or std))
        if self.size <= 0 or self.pad_to <= 0:
            raise ValueError(f"preprocessing: size ({self.size}) and pad_to ({self.pad_to}) must be positive")

    @property
    def side(self) -> int:
        """The side of the square the network sees: ``size`` rounded up to ``pad_to``."""
        return -(-self.size // self.pad_to) * self.pad_to

    def letterbox(self, arr: np.ndarray, offset: tuple[int, int] = (0, 0)
                  ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """:func:`letterbox` with this ``size`` and ``side``."""
        return letterbox(arr, self.size, self.side, offset)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(scale, shift)``, ``(3,) float32`` each: normalised = ``x * scale + shift``
        for ``x`` in 0..255. numpy (:meth:`normalize`) and torch (``segsynth.model.to_input``) both
        apply these, so the two cannot drift apart."""
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3) uint8`` -> ``(N, 3, H, W) float32``."""
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 images, got {batch.shape} {batch.dtype}")
        scale, shift = self.affine()
        x = batch.astype(np.float32) * scale + shift
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def to_card(self) -> dict[str, Any]:
        """The model card's ``preprocessing`` block."""
        return {"size": int(self.size), "normalization": self.normalization, "mean": list(self.mean),
                "std": list(self.std), "pad_to": int(self.pad_to), "side": self.side,
                "input": "RGB uint8 / 255, then (x - mean) / std, NCHW", "resize": RESIZE_RULE,
                "output": "logits (N, 1, side, side); sigmoid gives the mask; crop the content box, "
                          "resize to the image's size"}

    @classmethod
    def from_card(cls, block: dict[str, Any]) -> "Preprocessing":
        """From a model card's ``preprocessing`` block (cards written before the ``normalization``
        key carry ImageNet mean/std and are read as such)."""
        if "size" not in block:
            raise ValueError("model card has no preprocessing.size; re-export the model with `segsynth export`")
        return cls(size=int(block["size"]), normalization=str(block.get("normalization", "imagenet")),
                   pad_to=int(block.get("pad_to", PAD_TO)),
                   mean=tuple(block["mean"]) if "mean" in block else None,
                   std=tuple(block["std"]) if "std" in block else None)


def unletterbox(prob: np.ndarray, box: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """The content box of a ``(side, side)`` model output, resized (linear) to ``shape = (H, W)``:
    ``(H, W) float32`` in 0..1."""
    y0, x0, h, w = (int(v) for v in box)
    m = np.ascontiguousarray(prob[y0:y0 + h, x0:x0 + w], dtype=np.float32)
    if m.shape != tuple(shape):
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(m, 0.0, 1.0)


def check_aspect(mask_shape: Sequence[int], shape: tuple[int, int]) -> None:
    """A ``ValueError`` unless a mask of ``mask_shape`` can be an ``(H, W) = shape`` image's: its
    size, or its aspect at another scale (at most a pixel of rounding off, as :func:`content_shape`)."""
    mh, mw = (int(v) for v in mask_shape[:2])
    if (mh, mw) == tuple(shape):
        return
    expected = content_shape(int(shape[0]), int(shape[1]), max(mh, mw))
    if len(mask_shape) != 2 or abs(expected[0] - mh) > 1 or abs(expected[1] - mw) > 1:
        raise ValueError(f"mask {tuple(mask_shape)} and image {tuple(shape)} differ in size and aspect")


def to_size(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A mask of an image's content at any scale with its aspect (e.g. the network's, before
    :func:`unletterbox` takes it to the image) resized (linear) to ``shape = (H, W)``: ``(H, W)
    float32`` in 0..1."""
    check_aspect(mask.shape, shape)
    return unletterbox(mask, (0, 0) + mask.shape[:2], shape)
