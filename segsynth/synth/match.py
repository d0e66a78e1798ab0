"""One camera for product and background: the same sharpness and the same sensor noise.

A product cut from a catalog photo and scaled down is as sharp as pixels allow; a background
crop that was enlarged, or a photo that was soft to begin with, is not. A model learns that
shortcut ("the sharp thing is the product"), so :func:`edge_blur_px` measures how blurred each
one is and the engine blurs the product layer (colour and alpha together: the mask follows)
until they agree; then :func:`add_noise` puts one sensor noise over the whole frame.

The measure re-blurs the image: for an edge blurred by a Gaussian of sigma ``s``, the gradient
energy is proportional to ``1 / s``, so after a further blur of sigma ``r`` it falls by
``R = s / sqrt(s^2 + r^2)``, which gives ``s = r R / sqrt(1 - R^2)`` whatever the edge's contrast.
A pixel-sharp edge measures about 0.3 px.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import cv2
import numpy as np

from segsynth.synth.backgrounds import noise_field

REBLUR_PX = 1.5          # the probe blur; near the blurs we want to tell apart (0.3..3 px)
MIN_EDGE_ENERGY = 4.0    # mean squared gradient (0..255 units per px) below which an image is flat:
                         # a white or solid backdrop has no edges to measure, so nothing to match

# a standard normal from one uniform byte: its 256 quantiles, scaled to a std of exactly 1
# (truncated at about 2.9 sigma, which sensor noise never misses)
_NORMAL_LUT = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)])
_NORMAL_LUT = (_NORMAL_LUT / _NORMAL_LUT.std()).astype(np.float32)


def _edge_energy(grey: np.ndarray) -> float:
    """Sum of squared forward differences of a ``(H, W) float32`` image."""
    dx = grey[:, 1:] - grey[:, :-1]
    dy = grey[1:] - grey[:-1]
    return float(np.vdot(dx, dx) + np.vdot(dy, dy))


def edge_blur_px(grey: np.ndarray) -> float | None:
    """How blurred the edges of ``grey`` (``(H, W) float32`` 0..255) are: a Gaussian sigma in px.

    None when the image is too flat to tell (mean squared gradient below ``MIN_EDGE_ENERGY``).
    """
    energy = _edge_energy(grey)
    if energy < MIN_EDGE_ENERGY * grey.size:
        return None
    reblurred = cv2.GaussianBlur(grey, (0, 0), REBLUR_PX, borderType=cv2.BORDER_REFLECT)
    ratio = min(_edge_energy(reblurred) / energy, 0.999)  # 1 would be an infinitely wide blur
    return REBLUR_PX * ratio / math.sqrt(1.0 - ratio * ratio)


def frame_blur_px(frame: np.ndarray) -> float | None:
    """:func:`edge_blur_px` of an RGB frame ``(H, W, 3) uint8`` (on its luminance)."""
    return edge_blur_px(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32))


def layer_blur_px(rgba: np.ndarray) -> float | None:
    """:func:`edge_blur_px` of a premultiplied layer ``(h, w, 4) uint8`` seen over mid-grey.

    Over grey, both the product's inner detail and its silhouette count; a transparent border
    of 2 px keeps the silhouette where it touches the layer's edge.
    """
    grey = cv2.cvtColor(np.ascontiguousarray(rgba[:, :, :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey += (255.0 - rgba[:, :, 3].astype(np.float32)) * np.float32(0.5)
    grey = cv2.copyMakeBorder(grey, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=127.5)
    return edge_blur_px(grey)


def matching_blur_px(background_px: float | None, product_px: float | None) -> float:
    """The blur that takes the product to the background's sharpness (Gaussian blurs add in
    quadrature); 0 when the background is flat or no blurrier than the product. An unmeasurable
    product (flat, e.g. grey on grey) counts as pixel-sharp."""
    if background_px is None:
        return 0.0
    product_px = product_px or 0.0
    return math.sqrt(max(0.0, background_px ** 2 - product_px ** 2))


def add_noise(rng: np.random.Generator, frame: np.ndarray, std: float) -> np.ndarray:
    """``frame`` ``(H, W, 3) uint8`` plus Gaussian noise of ``std`` (0..255 units), independent per
    pixel and channel, rounded and saturated: a new ``uint8`` array of the same shape."""
    if std <= 0:
        return frame
    noise = cv2.LUT(noise_field(rng, frame.shape), _NORMAL_LUT * np.float32(std))
    return cv2.add(frame, noise, dtype=cv2.CV_8U)


def harmonize(rgba: np.ndarray, frame: np.ndarray, strength: float) -> np.ndarray:
    """A premultiplied product layer ``rgba`` (``(h, w, 4) uint8``) moved ``strength`` (0..1) of
    the way to the colour statistics of ``frame`` (``(S, S, 3) uint8``): per channel, its mean
    towards the background's mean (white balance, brightness) and its spread scaled towards the
    background's spread (contrast, the ratio kept within 0.5..2). The studio light of a catalog
    photo then no longer tells the product from the room. Alpha is unchanged; a new array."""
    a = rgba[:, :, 3].astype(np.float32) / 255.0
    opaque = a > 0.5
    if strength <= 0 or opaque.sum() < 16:
        return rgba
    prem = rgba[:, :, :3].astype(np.float32)
    colour = prem[opaque] / a[opaque, None]  # straight colour of the solid part
    mu_p, sd_p = colour.mean(0), colour.std(0) + 1.0
    bg = frame[::4, ::4].reshape(-1, 3).astype(np.float32)
    mu_b, sd_b = bg.mean(0), bg.std(0) + 1.0
    gain = 1.0 + strength * (np.clip(sd_b / sd_p, 0.5, 2.0) - 1.0)
    mean = mu_p + strength * (mu_b - mu_p)
    # straight colour c -> (c - mu_p) * gain + mean, premultiplied: prem * gain + (mean - mu_p * gain) * a
    out = prem * gain + (mean - mu_p * gain) * a[:, :, None]
    out = np.clip(out, 0.0, (a * 255.0)[:, :, None])  # premultiplied colour never exceeds alpha
    return np.dstack([np.rint(out).astype(np.uint8), rgba[:, :, 3]])
