"""Failure signals that need no truth, a near-duplicate key, and the combined score.

Each signal is a number in 0..1 where higher means "the model is more likely wrong here":

- :func:`boundary_entropy`: the mean binary entropy (bits) of the soft mask over the band
  around its own 0.5 contour (plus every undecided pixel), not over the whole image, where the
  background's confident zeros would drown it;
- :func:`instability`: 1 - IoU between the mask and the masks of test-time augmented passes
  (a horizontal flip and a rescale, mapped back);
- :func:`disagreement`: 1 - IoU with a teacher's mask (e.g. the DIS model).

:func:`combined_score` is their weighted mean over the signals present (a teacher not run on a
white photo leaves its signal out). :func:`perceptual_hash` keys near-duplicates: colour
variants of one product photographed alike hash within a few bits of each other.

Masks are ``(H, W) float32 0..1`` (soft) unless stated. Pure numpy/OpenCV.
"""
from __future__ import annotations

import math
from typing import Mapping

import cv2
import numpy as np

SIGNALS = ("entropy", "instability", "disagreement")  # the combined score's inputs, by config weight name
_EPS = 1e-6


def binarize(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``(H, W)`` soft mask -> bool mask (``prob >= threshold``); uint8 0..255 masks are scaled first."""
    p = prob.astype(np.float32) / 255.0 if prob.dtype == np.uint8 else prob
    return p >= threshold


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of one shape; two empty masks agree (1.0)."""
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} and {b.shape}")
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b)) / union


def band_px(shape: tuple[int, int], band: float) -> int:
    """The half-width in pixels of the boundary band: ``band`` times the image diagonal, >= 1."""
    return max(1, round(band * math.hypot(*shape)))


def boundary_band(prob: np.ndarray, width: int, undecided: tuple[float, float] = (0.1, 0.9)) -> np.ndarray:
    """Bool ``(H, W)``: pixels within ``width`` px of the mask's 0.5 contour, and every pixel
    whose probability lies strictly inside ``undecided``."""
    m = binarize(prob).astype(np.uint8)
    k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    band = (cv2.dilate(m, k) != cv2.erode(m, k))
    p = prob.astype(np.float32) / 255.0 if prob.dtype == np.uint8 else prob
    return band | ((p > undecided[0]) & (p < undecided[1]))


def binary_entropy(prob: np.ndarray) -> np.ndarray:
    """Elementwise entropy in bits (0 for 0 or 1, 1 at 0.5) of a soft mask."""
    p = np.clip(prob.astype(np.float64), _EPS, 1.0 - _EPS)
    return -(p * np.log2(p) + (1.0 - p) * np.log2(1.0 - p))


def boundary_entropy(prob: np.ndarray, band: float = 0.01) -> float:
    """Mean binary entropy over :func:`boundary_band` (``band`` x diagonal wide); 0 when the
    mask is everywhere confident and has no contour (an empty or full mask)."""
    if prob.dtype == np.uint8:
        prob = prob.astype(np.float32) / 255.0
    sel = boundary_band(prob, band_px(prob.shape, band))
    return float(binary_entropy(prob[sel]).mean()) if sel.any() else 0.0


def instability(prob: np.ndarray, passes: list[np.ndarray]) -> float:
    """1 - the mean IoU between ``prob`` and each test-time-augmented pass (already mapped back
    to ``prob``'s geometry); 0 for a model that answers the same whatever the augmentation."""
    if not passes:
        raise ValueError("instability needs at least one augmented pass")
    base = binarize(prob)
    return 1.0 - float(np.mean([iou(base, binarize(p)) for p in passes]))


def disagreement(prob: np.ndarray, teacher: np.ndarray) -> float:
    """1 - IoU between the model's mask and a teacher's (both soft, one shape)."""
    return 1.0 - iou(binarize(prob), binarize(teacher))


def combined_score(signals: Mapping[str, float | None], weights: Mapping[str, float]) -> float:
    """The weighted mean of the signals present (None or NaN ones are left out and the weights
    of the rest renormalised); NaN when no weighted signal is present."""
    total = wsum = 0.0
    for name, w in weights.items():
        v = signals.get(name)
        if w <= 0 or v is None or not math.isfinite(v):
            continue
        total, wsum = total + w * float(v), wsum + w
    return total / wsum if wsum > 0 else float("nan")


# ---------------------------------------------------------------- near duplicates
def perceptual_hash(rgb: np.ndarray, bits: int = 8) -> str:
    """A DCT perceptual hash (pHash) of ``rgb (H, W, 3) uint8`` as hex (``bits**2`` bits): the
    signs of the lowest ``bits x bits`` frequencies of the 32x32 grey image against their
    median. Colour, JPEG quality and size barely change it; another shape or view does."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:bits, :bits].flatten()
    on = low > np.median(low[1:])  # the DC term (overall brightness) does not set the median
    return f"{int(''.join('1' if b else '0' for b in on), 2):0{bits * bits // 4}x}"


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes of one length."""
    if len(a) != len(b):
        raise ValueError(f"hashes of different lengths: {a!r} and {b!r}")
    return bin(int(a, 16) ^ int(b, 16)).count("1")
