"""Shadows under the product: its own silhouette projected on the floor, or a soft ellipse.

A shadow only darkens the background; it never enters the mask. Shadows are smooth, so they are
drawn and blurred on a canvas reduced by up to ``sigma / 2`` and enlarged to the frame: the same
look as a full-size blur at a fraction of the cost for wide blurs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from segsynth.synth.config import CompositeConfig
from segsynth.synth.layers import _times_alpha


@dataclass
class Shadow:
    """``alpha`` is ``(y1-y0, x1-x0) uint8`` 0..255*opacity, to darken ``frame[y0:y1, x0:x1]``."""

    alpha: np.ndarray
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels
    opacity: float
    blur_px: float


def render(rng: np.random.Generator, kind: str, alpha: np.ndarray, origin: tuple[int, int],
           size: int, cfg: CompositeConfig) -> Shadow | None:
    """The shadow of a product whose ``alpha`` (``(h, w) uint8``) sits at ``origin`` (x, y).

    ``kind`` is ``"shape"`` or ``"ellipse"``. Returns None when the shadow falls outside the frame.
    """
    h, w = alpha.shape
    long_side = max(h, w)
    opacity = rng.uniform(cfg.shadow_opacity_min, cfg.shadow_opacity_max)
    sigma = rng.uniform(cfg.shadow_blur_min, cfg.shadow_blur_max) * long_side
    off_x, off_y = rng.uniform(-cfg.shadow_offset_max, cfg.shadow_offset_max, 2) * long_side
    ox, oy = origin
    if kind == "shape":
        squash = rng.uniform(cfg.shadow_squash_min, cfg.shadow_squash_max)
        shear = rng.uniform(cfg.shadow_shear_min, cfg.shadow_shear_max) * (1 if rng.uniform() < 0.5 else -1)
        # cast behind the product (light in front) most of the time, else towards the viewer
        sy = squash if rng.uniform() < 0.7 else -squash
        # product point (x, y), d = h - y above the floor line -> (x + shear*d, h - sy*d), then offset
        m = np.array([[1.0, -shear, shear * h + ox + off_x],
                      [0.0, sy, h - sy * h + oy + off_y]])
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ m.T
        bx0, by0 = corners.min(0)
        bx1, by1 = corners.max(0)
    elif kind == "ellipse":
        ew = w * rng.uniform(cfg.shadow_ellipse_width_min, cfg.shadow_ellipse_width_max) / 2
        eh = max(1.0, ew * rng.uniform(0.08, 0.25))
        cx, cy = ox + w / 2 + off_x, oy + h - 0.3 * eh + off_y
        bx0, by0, bx1, by1 = cx - ew, cy - eh, cx + ew, cy + eh
    else:
        raise ValueError(f"unknown shadow type {kind!r}; valid: shape, ellipse")
    pad = 3 * sigma + 2
    x0, y0 = max(0, math.floor(bx0 - pad)), max(0, math.floor(by0 - pad))
    x1, y1 = min(size, math.ceil(bx1 + pad)), min(size, math.ceil(by1 + pad))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    f = max(1.0, sigma / 2.0)  # work at 1/f resolution: the blur hides it
    cw, ch = max(2, round((x1 - x0) / f)), max(2, round((y1 - y0) / f))
    fx, fy = cw / (x1 - x0), ch / (y1 - y0)
    if kind == "shape":
        # frame -> canvas: subtract (x0, y0), scale by (fx, fy)
        mc = np.array([[m[0, 0] * fx, m[0, 1] * fx, (m[0, 2] - x0) * fx],
                       [m[1, 0] * fy, m[1, 1] * fy, (m[1, 2] - y0) * fy]], np.float32)
        canvas = cv2.warpAffine(alpha, mc, (cw, ch), flags=cv2.INTER_LINEAR, borderValue=0)
    else:
        canvas = np.zeros((ch, cw), np.uint8)
        center = ((cx - x0) * fx, (cy - y0) * fy)
        cv2.ellipse(canvas, (center, (2 * ew * fx, 2 * eh * fy), 0.0), 255, -1, cv2.LINE_AA)
    canvas = cv2.convertScaleAbs(canvas, alpha=opacity)  # 0..255 * opacity, 8-bit
    if sigma / f >= 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma / f)
    if (cw, ch) != (x1 - x0, y1 - y0):
        canvas = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return Shadow(alpha=canvas, box=(x0, y0, x1, y1), opacity=float(opacity), blur_px=float(sigma))


def apply(frame: np.ndarray, shadow: Shadow) -> None:
    """Darken ``frame`` (``(S, S, 3) uint8``, in place) under the shadow."""
    x0, y0, x1, y1 = shadow.box
    roi = frame[y0:y1, x0:x1]
    _times_alpha(roi, 255 - shadow.alpha, out=roi)
