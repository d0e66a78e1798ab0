"""The white-background rule: which pixels of a catalog photo are the white it was shot on.

Used by the cutouts stage (:mod:`segsynth.cutouts.extract`) and by the ``white-threshold``
predictor (:mod:`segsynth.predict`), the baseline every model should beat on catalog photos.
numpy and OpenCV only.

Near-white pixels (every channel >= ``white_threshold`` and little colour) that are *connected
to the image border* are background; everything else is the product. So white parts enclosed by
the product (a white seat inside a white frame, the inside of a white lampshade) survive, and
only white that reaches the border through white is removed. Enclosed regions as bright as the
background itself (255 on a catalog photo, where products are rendered at 240-252) are the
background seen through a gap (a chair back, between stool legs) and go too. Small specks are
dropped by area, tiny cracks closed by a morphological closing, and the edge is feathered with a
Gaussian.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


# ---------------------------------------------------------------- white-background extraction
@dataclass(frozen=True)
class WhiteBackgroundOptions:
    """Knobs of :func:`white_background_alpha` (all defaulted; tuned on the IKEA catalog)."""

    white_threshold: int = 250  # every channel >= this is near-white; catalog backgrounds are 255, JPEG noise ~250
    white_max_chroma: int = 16  # max(R,G,B) - min(R,G,B) <= this: a cream product is not background
    border_px: int = 3  # width of the image border band that decides "white background"
    min_border_white: float = 0.6  # fraction of the border band that must be near-white; rugs filling the frame fail
    see_through_tolerance: int = 1  # enclosed white within this of the background level (255 -> >= 254) ...
    see_through_fraction: float = 0.7  # ... over this share of its pixels is background seen through the product
    close_px: int = 3  # closing kernel on the product mask: seals 1-2 px white cracks, keeps gaps wider than that
    min_speck_fraction: float = 0.0005  # product components smaller than this fraction of the image are specks
    min_speck_px: int = 16  # ... and never smaller than this many pixels
    feather_sigma: float = 0.8  # Gaussian sigma (px) of the soft edge; 0 gives a hard 0/1 alpha

    def check_inputs(self) -> None:
        from segsynth.config import ConfigError

        if not 0 <= self.white_threshold <= 255:
            raise ConfigError(f"white.white_threshold must be in 0..255, got {self.white_threshold}")
        if not 0.0 <= self.min_border_white <= 1.0:
            raise ConfigError(f"white.min_border_white must be in 0..1, got {self.min_border_white}")
        if self.border_px < 1 or self.close_px < 0 or self.feather_sigma < 0:
            raise ConfigError("white.border_px must be >= 1, white.close_px and white.feather_sigma >= 0")


@dataclass(frozen=True)
class WhiteCut:
    """Result of :func:`white_background_alpha`."""

    alpha: np.ndarray  # (H, W) float32 0..1, 1 = product
    quality: float  # 0..1, see mask_quality
    border_white: float  # fraction of border-band pixels that are near-white
    is_white_background: bool  # border_white >= options.min_border_white
    details: MaskQuality | None = None


def near_white(rgb: np.ndarray, options: WhiteBackgroundOptions = WhiteBackgroundOptions()) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(H, W) bool``: every channel bright and the colour nearly grey."""
    lo = rgb.min(axis=2)
    hi = rgb.max(axis=2)
    return (lo >= options.white_threshold) & ((hi - lo) <= options.white_max_chroma)


def border_band(shape: tuple[int, int], px: int) -> np.ndarray:
    band = np.zeros(shape, bool)
    px = max(1, min(px, shape[0] // 2, shape[1] // 2))
    band[:px], band[-px:], band[:, :px], band[:, -px:] = True, True, True, True
    return band


def remove_specks(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``(H, W) bool`` without the 8-connected components smaller than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    keep[0] = False
    return keep[labels]


def _see_through(lo: np.ndarray, labels: np.ndarray, n: int, border_white: np.ndarray,
                 options: WhiteBackgroundOptions) -> np.ndarray:
    """``(n,) bool``: enclosed white components as bright as the background (gaps in a frame).

    A white product's own surfaces are shaded (IKEA renders them at 240-252); background seen
    through a chair back or between stool legs is flat at the background level (255).
    """
    level = float(np.median(lo[border_white])) - options.see_through_tolerance
    total = np.bincount(labels.ravel(), minlength=n)
    bright = np.bincount(labels.ravel(), weights=(lo >= level).ravel(), minlength=n)
    return bright >= options.see_through_fraction * np.maximum(total, 1)


def border_white_fraction(rgb: np.ndarray, options: WhiteBackgroundOptions = WhiteBackgroundOptions()) -> float:
    """The share (0..1) of the image's border band that is near-white; a photo is on a white
    background when it is at least ``options.min_border_white`` (the rule of
    :func:`white_background_alpha`, without computing the alpha). ``rgb``: ``(H, W, 3) uint8``."""
    return float(near_white(rgb, options)[border_band(rgb.shape[:2], options.border_px)].mean())


def is_white_background(rgb: np.ndarray, options: WhiteBackgroundOptions = WhiteBackgroundOptions()) -> bool:
    """Whether ``rgb`` is a photo on a white background (catalog style), by the border rule."""
    return border_white_fraction(rgb, options) >= options.min_border_white


def white_background_alpha(rgb: np.ndarray, options: WhiteBackgroundOptions = WhiteBackgroundOptions()) -> WhiteCut:
    """Soft product alpha of a photo on a white background.

    ``rgb``: ``(H, W, 3) uint8``. Returns a :class:`WhiteCut` whose ``alpha`` is ``(H, W)
    float32`` in 0..1. Near-white regions 4-connected to the image border are background;
    enclosed white regions stay product, unless they are as bright as the background itself
    (``see_through_*``: the background seen through a gap in the product; set
    ``see_through_fraction`` above 1 to keep every enclosed region). ``is_white_background`` is False when less than
    ``options.min_border_white`` of the border band is near-white (then the alpha is still
    computed, but it is not trustworthy).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    white = near_white(rgb, options)
    band = border_band((h, w), options.border_px)
    border_white = float(white[band].mean())  # = border_white_fraction(rgb, options)

    # background = near-white components that touch the border (4-connectivity: a diagonal
    # step between two product pixels does not let the background leak through)
    n, labels = cv2.connectedComponents(white.astype(np.uint8), connectivity=4)
    touching = np.unique(labels[band & white])
    is_bg = np.zeros(n, bool)
    is_bg[touching] = True
    is_bg[0] = False  # label 0 is the non-white pixels
    if options.see_through_fraction <= 1.0 and n > 1 and touching.size:
        is_bg |= _see_through(rgb.min(axis=2), labels, n, band & white, options)
        is_bg[0] = False
    product = ~is_bg[labels]

    if options.close_px > 1 and product.any():
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (options.close_px, options.close_px))
        closed = cv2.morphologyEx(product.astype(np.uint8), cv2.MORPH_CLOSE, k).astype(bool)
        product = closed
    min_px = max(options.min_speck_px, int(options.min_speck_fraction * h * w))
    product = remove_specks(product, min_px)

    alpha = product.astype(np.float32)
    if options.feather_sigma > 0 and product.any():
        alpha = cv2.GaussianBlur(alpha, (0, 0), options.feather_sigma)
        # keep thin parts (cords, chair legs 1-2 px wide) from fading: never below half the hard mask
        alpha = np.maximum(alpha, np.float32(0.5) * product, dtype=np.float32)
        # Gaussian tails below half an 8-bit step are noise: snap them to exact 0 and 1
        alpha[alpha < 0.5 / 255] = 0.0
        alpha[alpha > 1.0 - 0.5 / 255] = 1.0
    q = mask_quality(alpha, rgb)
    return WhiteCut(alpha=alpha, quality=q.score, border_white=border_white,
                    is_white_background=border_white >= options.min_border_white, details=q)


@dataclass(frozen=True)
class MaskQuality:
    """How plausible a cutout mask is; ``score`` in 0..1 is the product of the terms."""

    score: float
    area_fraction: float  # product pixels / image pixels
    largest_component: float  # share of the product area in its largest connected piece
    border_touch: float  # share of the image border covered by the product (cut-off objects)
    edge_contrast: float  # mean colour difference across the mask edge, 0..255 (nan without rgb)


# ---------------------------------------------------------------- quality
def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``lo``, 1 at ``hi`` (either order), linear between."""
    if hi == lo:
        return float(x >= hi)
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def mask_quality(alpha: np.ndarray, rgb: np.ndarray | None = None, cropped: bool = False) -> MaskQuality:
    """A 0..1 plausibility score of a cutout mask (product of the terms below).

    ``alpha``: ``(H, W) float32 0..1`` (or uint8 0..255); ``rgb``: the ``(H, W, 3) uint8`` photo.
    ``cropped=True`` for masks that are already tight cutouts (RGBA files): area and border
    terms are then meaningless and left out.

    - area: 0 below 0.2 % or above 98 % of the image, 1 between 2 % and 90 %;
    - fragments: the largest connected piece should hold most of the product (sqrt of its share);
    - border: an object touching much of the image border is cut off (1 - 2 x border share);
    - edge: a faint edge (white product on white) is less certain: 0.6 + 0.4 x contrast/24.
    """
    a = alpha.astype(np.float32) / 255.0 if alpha.dtype == np.uint8 else alpha.astype(np.float32)
    fg = a >= 0.5
    h, w = fg.shape
    area = float(fg.mean())
    if area == 0.0:
        return MaskQuality(0.0, 0.0, 0.0, 0.0, float("nan"))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    largest = float(stats[1:, cv2.CC_STAT_AREA].max() / stats[1:, cv2.CC_STAT_AREA].sum())
    band = border_band((h, w), 1)
    border_touch = float(fg[band].mean())

    contrast = float("nan")
    if rgb is not None:
        k = np.ones((3, 3), np.uint8)
        fg8 = fg.astype(np.uint8)
        inner = fg & ~cv2.erode(fg8, k, iterations=2).astype(bool)
        outer = cv2.dilate(fg8, k, iterations=2).astype(bool) & ~fg
        if inner.any() and outer.any():
            # per boundary pixel: its colour against the mean colour just outside, averaged
            out_mean = rgb[outer].astype(np.float32).mean(axis=0)
            contrast = float(np.abs(rgb[inner].astype(np.float32) - out_mean).max(axis=1).mean())

    score = np.sqrt(largest)
    if not cropped:
        area_score = _ramp(area, 0.002, 0.02) * _ramp(area, 0.98, 0.90)
        score *= area_score * max(0.0, 1.0 - 2.0 * border_touch)
    if not np.isnan(contrast):
        score *= 0.6 + 0.4 * _ramp(contrast, 0.0, 24.0)
    return MaskQuality(float(score), area, largest, border_touch, contrast)
