"""The product's own contact shadow, kept: ``shadow=true`` on the endpoint and in ``remove``.

The model treats shadows as background (the method composites products with synthetic shadows
and labels only the product), but a catalog often wants the shadow a product casts on the studio
floor. On a plain backdrop a shadow is the backdrop darkened: a pixel of luminance ``L`` under a
black shadow of opacity ``a`` over a backdrop of luminance ``B`` reads ``L = (1 - a) B``, so
``a = 1 - L / B``. Kept as black at that opacity, the shadow darkens whatever background the
cutout is placed on, as it darkened the studio's.

Where it applies: the backdrop is estimated from the photo's border (the outer ``border`` share
of each side, the product excluded); when that border is not plain (a room, a textured table:
its luminance spread above ``max_backdrop_spread``) there is no backdrop to measure against and
nothing is kept. Pixels count as shadow only within ``reach`` of the product (a share of the
product box's longer side), outside the product, close to the backdrop's hue (a shadow darkens,
it does not recolour), and darker than ``min_opacity`` (below that it is sensor noise or JPEG).

Pure numpy/OpenCV. ``rgb (H, W, 3) uint8``, ``mask (H, W) float32 0..1`` -> ``(H, W) float32 0..1``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ShadowOptions:
    border: float = 0.03  # share of each side read as the backdrop
    max_backdrop_spread: float = 12.0  # std of the border's luminance (0..255) above which it is not a plain backdrop
    reach: float = 0.5  # shadow pixels lie within this share of the product box's longer side (a lamp casts far)
    max_hue_shift: float = 0.08  # |chromaticity - the backdrop's| (r, g, b over their sum) a shadow pixel may have
    min_opacity: float = 0.04  # fainter darkening is noise


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def backdrop(rgb: np.ndarray, product: np.ndarray, options: ShadowOptions = ShadowOptions()) -> np.ndarray | None:
    """The plain backdrop's colour ``(3,) float32`` from the border pixels outside ``product``
    (bool), or None when the border is not plain."""
    h, w = product.shape
    b = max(1, round(options.border * min(h, w)))
    frame = np.zeros((h, w), bool)
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    frame &= ~product
    if frame.sum() < 16:
        return None
    pixels = rgb[frame].astype(np.float32)
    if float((pixels @ _LUMA).std()) > options.max_backdrop_spread:
        return None
    return np.median(pixels, axis=0)


def contact_shadow(rgb: np.ndarray, mask: np.ndarray, options: ShadowOptions = ShadowOptions()) -> np.ndarray:
    """The shadow's opacity outside the product (0 on the product and where no plain backdrop is)."""
    product = mask >= 0.5
    out = np.zeros(mask.shape, np.float32)
    if not product.any():
        return out
    bg = backdrop(rgb, product, options)
    if bg is None or float(bg @ _LUMA) < 32.0:  # no backdrop, or one too dark to show a shadow
        return out
    ys, xs = np.nonzero(product)
    reach = options.reach * max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1)
    distance = cv2.distanceTransform((~product).astype(np.uint8), cv2.DIST_L2, 3)
    near = (distance > 0) & (distance <= reach)
    x = rgb[near].astype(np.float32)
    opacity = 1.0 - (x @ _LUMA) / float(bg @ _LUMA)
    chroma = x / np.maximum(x.sum(axis=1, keepdims=True), 1.0)
    hue_shift = np.abs(chroma - bg / max(float(bg.sum()), 1.0)).sum(axis=1)
    keep = (opacity >= options.min_opacity) & (hue_shift <= options.max_hue_shift)
    out[near] = np.where(keep, np.clip(opacity, 0.0, 1.0), 0.0)
    return out * (1.0 - np.clip(mask, 0.0, 1.0))  # none where the product is (its own alpha covers it)
