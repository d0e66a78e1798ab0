"""Sharp edges at full resolution: a soft mask refined by its own photo (fast guided filter).

A model answers at its input size (320 or 512 px); its mask, resized to a 4000 px photo, has
edges as soft as the model's pixels are large. The guided filter (He et al., 2010) fits, in every
small window, the mask as a linear function of the photo's colour, ``q = a . I + b``; the fit is
done at a working resolution (``work_px``, the "fast" variant of He & Sun, 2015) and its
coefficients are upsampled and applied to the full-resolution photo, so the mask's edges follow
the photo's edges at every pixel, at a cost that grows with the photo's pixels only through one
multiply-add.

Pure numpy/OpenCV. ``rgb (H, W, 3) uint8``, masks ``(H, W) float32 0..1``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segsynth.preprocess import check_aspect, to_size


@dataclass(frozen=True)
class RefineOptions:
    radius: int = 4  # window radius in working-resolution pixels (the model's pixel scale)
    eps: float = 1e-3  # regularisation: larger keeps the mask smoother, smaller follows colour more
    work_px: int = 512  # longer side of the working resolution (the coefficients are fitted there): a model's input size
    min_upscale: float = 1.25  # refine only photos more than this much larger than the working size (640 px by default)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_coefficients(guide: np.ndarray, p: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Colour guided filter coefficients: ``guide (h, w, 3) float32 0..1``, ``p (h, w) float32``
    -> ``a (h, w, 3)``, ``b (h, w)`` (already box-averaged), so that ``q = sum(a * guide) + b``."""
    mean_i = _box(guide, radius)
    mean_p = _box(p, radius)
    cov_ip = _box(guide * p[:, :, None], radius) - mean_i * mean_p[:, :, None]
    # the 3x3 covariance of the guide per pixel, plus eps on the diagonal
    var = np.empty(guide.shape[:2] + (3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            v = _box(guide[:, :, i] * guide[:, :, j], radius) - mean_i[:, :, i] * mean_i[:, :, j]
            var[:, :, i, j] = var[:, :, j, i] = v
    var += eps * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(var, cov_ip[:, :, :, None])[:, :, :, 0]
    b = mean_p - np.einsum("hwc,hwc->hw", a, mean_i)
    return _box(a, radius), _box(b, radius)


def refine_mask(rgb: np.ndarray, mask: np.ndarray, options: RefineOptions = RefineOptions()) -> np.ndarray:
    """``mask`` refined by the photo ``rgb``, at the photo's size. ``mask`` is at the photo's size
    or at any smaller scale with its aspect (a model's output before resizing: it goes straight to
    the working resolution, never through a full-size float mask). Photos not more than
    ``options.min_upscale`` times ``options.work_px`` (640 px) get the mask unchanged, resized to their size (the model's edges are
    already at their scale)."""
    h, w = rgb.shape[:2]
    check_aspect(mask.shape, (h, w))
    if max(h, w) <= options.work_px * options.min_upscale:
        return mask if mask.shape == (h, w) else to_size(mask, (h, w))
    scale = options.work_px / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    guide_lo = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    shrink = mask.shape[1] > size[0]
    p_lo = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    a, b = guided_coefficients(guide_lo, p_lo, options.radius, options.eps)
    # one channel at a time: three full-resolution float planes at most (about 12 bytes per pixel)
    q = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    for c in range(3):
        a_c = cv2.resize(np.ascontiguousarray(a[:, :, c]), (w, h), interpolation=cv2.INTER_LINEAR)
        q += a_c * (rgb[:, :, c].astype(np.float32) * (1.0 / 255.0))
    return np.clip(q, 0.0, 1.0, out=q)
