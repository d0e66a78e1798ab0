"""The Python API, shaped like rembg's: ``from segsynth import remove, new_session``.

    from segsynth import new_session, remove
    session = new_session("outputs/cpu/train/best")       # once: a checkpoint, .onnx or .ts export
    cutout = remove(Image.open("chair.jpg"), session=session)            # PIL in -> PIL RGBA out
    png = remove(open("chair.jpg", "rb").read(), session=session)        # bytes in -> PNG bytes out
    mask = remove(rgb_array, session=session, only_mask=True)            # (H, W, 3) -> (H, W) uint8

The output follows the input's type, as rembg's ``remove`` does: bytes -> encoded bytes (PNG by
default), a PIL image -> a PIL image, a numpy array -> a numpy array. The decode path and the
cutout rendering are the endpoint's (:mod:`segsynth.serve.uploads`), so an image gives the same
pixels here, over HTTP and through ``segsynth remove``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from segsynth.serve.uploads import (DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, CutoutOptions, cutout_pixels,
                                    decode_upload, encode_output)

ENV_MODEL = "SEGSYNTH_MODEL"  # the model new_session() loads when given none


@dataclass
class Session:
    """A loaded model (a :class:`segsynth.predict.Predictor`), created once by :func:`new_session`."""

    predictor: Any
    model: str | None

    @property
    def name(self) -> str:
        return self.predictor.name

    def mask(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb (H, W, 3) uint8`` -> soft mask ``(H, W) float32 0..1``."""
        return self.predictor.predict_one(rgb)


def new_session(model: str | None = None, kind: str | None = None, **options) -> Session:
    """Load a model once (a checkpoint folder, an exported ``.onnx`` or ``.ts`` file, or a salient
    ONNX model with ``kind="onnx-isnet"``); ``options`` go to :func:`segsynth.predict.load_predictor`
    (e.g. ``threads=2``, ``device="cuda"``). Without ``model``, ``$SEGSYNTH_MODEL`` is used."""
    from segsynth.predict import load_predictor

    model = model or os.environ.get(ENV_MODEL) or None
    if model is None and kind != "white-threshold":
        raise ValueError(f"new_session: no model; pass a path (new_session('outputs/cpu/train/best')) or set ${ENV_MODEL}")
    return Session(predictor=load_predictor(model, kind=kind, **options), model=model)


def _to_rgb(data: Any) -> tuple[np.ndarray, str, Any]:
    """(rgb, input kind, the PIL image or None) from bytes, a PIL image or an array."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return decode_upload(bytes(data), "image", DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS), "bytes", None
    if isinstance(data, np.ndarray):
        arr = data
        if arr.dtype != np.uint8:
            raise ValueError(f"remove: expected a uint8 array, got {arr.dtype}; scale it to 0..255 first")
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"remove: expected an (H, W, 3) RGB or (H, W, 4) RGBA array, got shape {arr.shape}")
        return np.ascontiguousarray(arr[:, :, :3]), "array", None
    from PIL import Image

    if isinstance(data, Image.Image):
        return np.asarray(data.convert("RGB")), "pil", data
    raise TypeError(f"remove: expected bytes, a PIL image or a numpy array, got {type(data).__name__}")


def remove(data: Any, session: Session | None = None, *, only_mask: bool = False,
           bgcolor: tuple[int, ...] | None = None, threshold: float | None = None, crop: bool = False,
           refine: bool = True, shadow: bool = False, bg_image: Any = None, fmt: str = "png") -> Any:
    """The cutout of ``data`` (bytes, a PIL image or a numpy array), in the input's type.

    ``only_mask``: the 8-bit mask instead of the cutout; ``bgcolor``: ``(r, g, b)`` or
    ``(r, g, b, a)`` composites the cutout over that colour (alpha ignored, as an opaque
    background); ``threshold``: 0..1 makes the alpha hard; ``crop``: only the product's box with a
    5% margin; ``refine``: the mask's edges sharpened by the full-resolution photo (photos over
    640 px); ``shadow``: keep the product's contact shadow on a plain backdrop as partial alpha;
    ``bg_image`` (bytes, a PIL image or an array): composite over that photo (scaled to cover,
    centred); ``fmt``: the encoding when the input is bytes (png, webp, jpeg). ``session`` defaults to ``new_session()`` (``$SEGSYNTH_MODEL``), which
    loads the model on every call: create one session and pass it.
    """
    session = session or new_session()
    rgb, kind, pil = _to_rgb(data)
    output = "mask" if only_mask else ("composite" if bgcolor is not None or bg_image is not None else "rgba")
    bg = tuple(int(c) for c in bgcolor[:3]) if bgcolor is not None else (255, 255, 255)
    opts = CutoutOptions(output=output, bg=bg, threshold=threshold, crop=crop, refine=refine, shadow=shadow,
                         format=fmt if kind == "bytes" else "png")
    background = None if bg_image is None or only_mask else _to_rgb(bg_image)[0]
    pixels = cutout_pixels(rgb, session.mask(rgb), opts, background)
    if kind == "bytes":
        return encode_output(pixels, opts.format)
    if kind == "pil":
        from PIL import Image

        return Image.fromarray(pixels)
    return pixels
