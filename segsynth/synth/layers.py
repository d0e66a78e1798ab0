"""Premultiplied RGBA layers: resize a cutout once, blend its edges, paste it (clipped) into a frame.

Colours are premultiplied by alpha *before* resizing, so the arbitrary colour a cutout keeps
under alpha = 0 (often the old white backdrop) never bleeds into its edge.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Layer:
    """``rgba`` ``(h, w, 4) uint8``: RGB premultiplied by alpha, alpha 0..255 (8-bit all the way:
    the compositing is a few saturating integer passes)."""

    rgba: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgba.shape[:2]

    @property
    def alpha(self) -> np.ndarray:
        """``(h, w) uint8``, a contiguous copy."""
        return cv2.extractChannel(self.rgba, 3)


_PREMULT_CACHE: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_PREMULT_CACHE_SIZE = 32  # a worker makes the k samples of one cutout in a row: keep the last few
_PREMULT_LOCK = threading.Lock()


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """``(h, w, 4) uint8`` straight RGBA -> the same with RGB multiplied by alpha / 255.

    Cached by array identity (least recently used first out); the cache holds a reference to
    ``rgba``, so its id cannot be reused while the entry lives. Never modify the result.
    """
    key = id(rgba)
    with _PREMULT_LOCK:
        hit = _PREMULT_CACHE.get(key)
        if hit is not None and hit[0] is rgba:
            _PREMULT_CACHE.move_to_end(key)
            return hit[1]
    a = rgba[:, :, 3]
    out = cv2.multiply(rgba, cv2.merge([a, a, a, np.full_like(a, 255)]), scale=1.0 / 255.0)
    with _PREMULT_LOCK:
        _PREMULT_CACHE[key] = (rgba, out)
        while len(_PREMULT_CACHE) > _PREMULT_CACHE_SIZE:
            _PREMULT_CACHE.popitem(last=False)
    return out


def fit_size(h: int, w: int, long_side: float) -> tuple[int, int]:
    """(height, width) with the longer side ``long_side`` pixels and the aspect of ``h x w``."""
    f = long_side / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def resize(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Resize for speed without aliasing: exact-integer area reduction first, then bilinear.

    OpenCV's area filter is fast only for integer factors; a non-integer shrink by 2x or more
    first averages ``f x f`` blocks (dropping the last ``< f`` rows/columns), then finishes with
    a bilinear step of less than 2x, which does not alias.
    """
    h, w = img.shape[:2]
    if (w, h) == (out_w, out_h):
        return img
    f = int(min(w / out_w, h / out_h))
    if f >= 2:
        img = img[: h - h % f, : w - w % f]
        img = cv2.resize(img, (img.shape[1] // f, img.shape[0] // f), interpolation=cv2.INTER_AREA)
        if img.shape[:2] == (out_h, out_w):
            return img
    return cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)


def make_layer(rgba: np.ndarray, out_h: int, out_w: int, flip: bool = False) -> Layer:
    """A straight-alpha cutout ``(h, w, 4) uint8`` as a premultiplied layer of ``(out_h, out_w)``."""
    p = resize(premultiply(rgba), out_w, out_h)
    return Layer(cv2.flip(p, 1) if flip else np.ascontiguousarray(p))


def pad_layer(layer: Layer, pad: int) -> Layer:
    """Transparent border of ``pad`` pixels (room for a blur to spread)."""
    if pad <= 0:
        return layer
    return Layer(cv2.copyMakeBorder(layer.rgba, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0))


def _times_alpha(img: np.ndarray, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``img * a / 255`` per pixel (``img`` 1, 3 or 4 channels uint8, ``a`` ``(h, w) uint8``).

    ``out`` may be ``img`` itself, also a view into a bigger frame (OpenCV writes through it).
    """
    n = 1 if img.ndim == 2 else img.shape[2]
    return cv2.multiply(img, a if n == 1 else cv2.merge([a] * n), dst=out, scale=1.0 / 255.0)


def feather(layer: Layer, sigma: float) -> Layer:
    """Soften the edge inwards: the layer times blur(alpha), so nothing grows outwards."""
    if sigma < 0.3:
        return layer
    b = cv2.GaussianBlur(layer.alpha, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return Layer(_times_alpha(layer.rgba, b))


def blur_pad(sigma: float) -> int:
    """The transparent border a Gaussian blur of ``sigma`` px needs to spread into (3 sigma)."""
    return math.ceil(3 * sigma) if sigma >= 0.3 else 0


def gaussian_blur(layer: Layer, sigma: float) -> Layer:
    """Blur colour and alpha together (premultiplied: no dark or light fringe); pad the layer by
    :func:`blur_pad` first so the edge can spread outwards. Below 0.3 px it is left as it is."""
    if sigma < 0.3:
        return layer
    return Layer(cv2.GaussianBlur(layer.rgba, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT))


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line kernel ``(n, n) float32`` of ``length`` pixels at ``angle`` radians."""
    n = 2 * math.ceil(length / 2) + 1
    k = np.zeros((n, n), np.uint8)  # anti-aliasing is drawn on 8-bit images only
    c = n // 2
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    p0 = (round((c - dx) * 16), round((c - dy) * 16))  # shift=4: end points in 1/16 pixel
    p1 = (round((c + dx) * 16), round((c + dy) * 16))
    cv2.line(k, p0, p1, 255, 1, cv2.LINE_AA, 4)
    k = k.astype(np.float32)
    return k / k.sum()


def motion_blur(layer: Layer, length: float, angle: float) -> Layer:
    """Blur colour and alpha together along a line (a camera or object moving)."""
    if length < 1.5:
        return layer
    return Layer(cv2.filter2D(layer.rgba, -1, motion_kernel(length, angle), borderType=cv2.BORDER_CONSTANT))


def clip_box(x0: int, y0: int, h: int, w: int, size: int
             ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """Frame box and layer box ``(x0, y0, x1, y1)`` of a ``h x w`` layer at ``(x0, y0)``; None if outside."""
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(size, x0 + w), min(size, y0 + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return None
    return (fx0, fy0, fx1, fy1), (fx0 - x0, fy0 - y0, fx1 - x0, fy1 - y0)


def paste(frame: np.ndarray, layer: Layer, x0: int, y0: int) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Alpha-composite ``layer`` over ``frame`` (``(S, S, 3) uint8``, in place) at ``(x0, y0)``.

    The part outside the frame is cut off. Returns the frame box and the layer's alpha inside it
    (``uint8`` 0..255), or None when nothing of the layer is inside the frame.
    """
    boxes = clip_box(x0, y0, *layer.shape, frame.shape[0])
    if boxes is None:
        return None
    (fx0, fy0, fx1, fy1), (lx0, ly0, lx1, ly1) = boxes
    part = layer.rgba[ly0:ly1, lx0:lx1]
    a = cv2.extractChannel(part, 3)
    roi = frame[fy0:fy1, fx0:fx1]
    # over operator, premultiplied: frame * (1 - a) + rgb (saturating 8-bit); cvtColor drops
    # the alpha channel far faster than a numpy channel slice copy
    _times_alpha(roi, 255 - a, out=roi)
    cv2.add(roi, cv2.cvtColor(part, cv2.COLOR_RGBA2RGB), dst=roi)
    return (fx0, fy0, fx1, fy1), a


def cut(mask: np.ndarray, box: tuple[int, int, int, int], cover: np.ndarray) -> None:
    """Take ``cover`` (``uint8`` 0..255, the shape of ``box``) out of ``mask`` (in place)."""
    x0, y0, x1, y1 = box
    roi = mask[y0:y1, x0:x1]
    _times_alpha(roi, 255 - cover, out=roi)
