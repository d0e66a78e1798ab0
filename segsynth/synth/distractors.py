"""What surrounds the product: distractor products behind it, occluders and labels in front of it.

Distractors are background (they stay out of the mask) and may be cut by the frame border.
Occluders and text are in front of the product: the pixels they cover are taken out of the mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from segsynth.synth.backgrounds import random_color
from segsynth.synth import shadows
from segsynth.synth.config import SHADOW_TYPES, CompositeConfig
from segsynth.synth.layers import Layer, blur_pad, cut, fit_size, gaussian_blur, make_layer, pad_layer, paste
from segsynth.synth.library import Cutout


@dataclass
class Pasted:
    """What :func:`add_distractors` or :func:`add_occluder` put into the frame."""

    cutout_ids: list[str] = field(default_factory=list)  # the cutouts pasted, in order
    cut: int = 0          # how many of them the frame border cuts
    kind: str = ""        # an occluder's kind: "cutout" or "shape"


def pick(rng: np.random.Generator, pool: Sequence[Cutout], exclude_id: str) -> Cutout | None:
    """A random cutout of ``pool`` other than ``exclude_id`` (None when there is none)."""
    n = len(pool)
    if n == 0:
        return None
    i = int(rng.integers(n))
    if pool[i].cutout_id == exclude_id:
        if n == 1:
            return None
        i = (i + 1 + int(rng.integers(n - 1))) % n  # any other index, uniformly
        if pool[i].cutout_id == exclude_id:  # the same product listed twice: give up, stay deterministic
            return None
    return pool[i]


def add_distractors(rng: np.random.Generator, frame: np.ndarray, pool: Sequence[Cutout], exclude_id: str,
                    cfg: CompositeConfig, blur_px: float = 0.0, product_area: float | None = None) -> Pasted:
    """Paste a random number of distractor products anywhere in ``frame`` (in place).

    Their centres fall anywhere in the frame, so some are cut by its border. ``blur_px`` blurs
    each one as the product is blurred to match a soft background (same photo, same lens); with
    ``distractor_defocus_max_px`` each gets up to that much more (out of focus, behind). With
    ``distractor_max_product_area`` and the product's box area ``product_area`` (px²), a
    distractor's box is scaled down to at most that share of it. With ``distractor_shadow_prob``
    a distractor casts a shadow like the product's. The draws of those options are made only
    when they are on, so the default's samples do not change. Returns the ids of the cutouts
    pasted and how many of them the border cuts.
    """
    size = frame.shape[0]
    count = int(rng.integers(cfg.distractor_count_min, cfg.distractor_count_max + 1))
    out = Pasted()
    limit = cfg.distractor_max_product_area
    for _ in range(count):
        c = pick(rng, pool, exclude_id)
        if c is None:
            break
        h, w = fit_size(*c.rgba.shape[:2], rng.uniform(cfg.distractor_scale_min, cfg.distractor_scale_max) * size)
        if limit is not None and product_area and h * w > limit * product_area:
            h, w = fit_size(*c.rgba.shape[:2], max(h, w) * math.sqrt(limit * product_area / (h * w)))
        layer = make_layer(c.rgba, h, w, flip=bool(rng.uniform() < 0.5))
        blur = blur_px + (rng.uniform(0.0, cfg.distractor_defocus_max_px) if cfg.distractor_defocus_max_px > 0 else 0.0)
        pad = blur_pad(blur)
        if pad:
            layer = gaussian_blur(pad_layer(layer, pad), blur)
        cx, cy = rng.uniform(0, size, 2)
        x0, y0 = round(cx - w / 2), round(cy - h / 2)
        if cfg.distractor_shadow_prob > 0 and rng.uniform() < cfg.distractor_shadow_prob:
            kind = SHADOW_TYPES[int(rng.integers(len(SHADOW_TYPES)))]
            sh = shadows.render(rng, kind, layer.alpha[pad:pad + h, pad:pad + w], (x0, y0), size, cfg)
            if sh is not None:
                shadows.apply(frame, sh)
        if paste(frame, layer, x0 - pad, y0 - pad) is None:
            continue
        out.cutout_ids.append(c.cutout_id)
        out.cut += int(x0 < 0 or y0 < 0 or x0 + w > size or y0 + h > size)
    return out


def _shape_layer(rng: np.random.Generator, h: int, w: int) -> Layer:
    """A flat-coloured bar, box or round object (a pole, a vase, a lamp) as an opaque layer."""
    canvas = np.zeros((h, w), np.uint8)
    kind = rng.integers(3)
    if kind == 0:
        cv2.rectangle(canvas, (0, 0), (w - 1, h - 1), 255, -1)
    elif kind == 1:
        cv2.ellipse(canvas, ((w / 2, h / 2), (w - 1, h - 1), 0.0), 255, -1, cv2.LINE_AA)
    elif h >= w:  # a standing bar with a rounded top (a post, a lamp stand)
        r = w // 2
        cv2.rectangle(canvas, (0, r), (w - 1, h - 1), 255, -1)
        cv2.circle(canvas, (w // 2, r), max(1, r), 255, -1, cv2.LINE_AA)
    else:  # a lying bar with rounded ends (a rail, a table edge)
        r = h // 2
        cv2.rectangle(canvas, (r, 0), (w - 1 - r, h - 1), 255, -1)
        cv2.circle(canvas, (r, h // 2), max(1, r), 255, -1, cv2.LINE_AA)
        cv2.circle(canvas, (w - 1 - r, h // 2), max(1, r), 255, -1, cv2.LINE_AA)
    color = random_color(rng)
    # a soft vertical shading so the occluder is not a flat sticker; premultiplied by the shape
    shade = np.linspace(1.08, 0.85, h, dtype=np.float32)[:, None]
    planes = [cv2.multiply(canvas, np.clip(c * shade, 0, 255).astype(np.uint8).repeat(w, 1), scale=1 / 255)
              for c in color]
    return Layer(cv2.merge([*planes, canvas]))


def add_occluder(rng: np.random.Generator, frame: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
                 pool: Sequence[Cutout], exclude_id: str, cfg: CompositeConfig) -> Pasted:
    """Put an object in front of part of the product at ``box`` and cut it out of ``mask`` (in place).

    The object is another cutout from ``pool`` (half of the time when there is one) or a plain
    shape; its longer side is ``occluder_scale_*`` of the product's, so the product stays
    mostly visible. Returns the occluder's kind ("cutout" or "shape") and the cutout's id.
    """
    x0, y0, x1, y1 = box
    long_side = max(x1 - x0, y1 - y0) * rng.uniform(cfg.occluder_scale_min, cfg.occluder_scale_max)
    use_cutout = rng.uniform() < 0.5
    c = pick(rng, pool, exclude_id) if use_cutout else None
    if c is not None:
        h, w = fit_size(*c.rgba.shape[:2], long_side)
        layer = make_layer(c.rgba, h, w, flip=bool(rng.uniform() < 0.5))
        kind = "cutout"
    else:
        aspect = rng.uniform(0.15, 1.0)  # tall and thin (poles, legs) to round
        h, w = max(2, round(long_side)), max(2, round(long_side * aspect))
        if rng.uniform() < 0.3:
            h, w = w, h  # lying bars (a table edge, a shelf)
        layer = _shape_layer(rng, h, w)
        kind = "shape"
    # centre somewhere over the product's box: in front of it, partly covering it
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    ox, oy = round(cx - w / 2), round(cy - h / 2)
    pasted = paste(frame, layer, ox, oy)
    if pasted is not None:
        cut(mask, *pasted)
    return Pasted(cutout_ids=[c.cutout_id] if c is not None and pasted is not None else [], kind=kind)


FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def dimension_label(rng: np.random.Generator) -> str:
    """A catalog-style dimension label: ``"120 cm"``, ``"H 75 cm"``, ``"80 x 45 cm"``, ``"32 in"``."""
    a, b = int(rng.integers(20, 241)), int(rng.integers(20, 121))
    style = int(rng.integers(5))
    if style == 0:
        return f"{a} cm"
    if style == 1:
        return f"{'WHD'[int(rng.integers(3))]} {a} cm"
    if style == 2:
        return f"{a} x {b} cm"
    if style == 3:
        return f"{a / 100:.2f} m"
    return f"{round(a / 2.54)} in"


def add_text(rng: np.random.Generator, frame: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
             cfg: CompositeConfig) -> str:
    """Draw a dimension label (and sometimes a dimension line) over the product at ``box``.

    Text pixels (anti-aliased coverage) are cut out of ``mask`` (in place). Returns the label.
    """
    size = frame.shape[0]
    x0, y0, x1, y1 = box
    label = dimension_label(rng)
    font = FONTS[int(rng.integers(len(FONTS)))]
    text_h = rng.uniform(cfg.text_height_min, cfg.text_height_max) * size
    (_, unit_h), _ = cv2.getTextSize(label, font, 1.0, 1)
    scale = text_h / max(unit_h, 1)
    thickness = max(1, round(text_h / 12 * rng.uniform(0.7, 1.5)))
    (tw, th), base = cv2.getTextSize(label, font, scale, thickness)
    cx = (x0 + x1) / 2 + rng.uniform(-0.3, 0.3) * (x1 - x0)
    cy = rng.uniform(y0 + th, max(y0 + th + 1, y1))
    org = (round(cx - tw / 2), round(cy))
    # draw the coverage only where it can be, then composite one colour through it
    bx0, by0 = max(0, org[0] - thickness - 2), max(0, org[1] - th - thickness - 2)
    bx1, by1 = min(size, org[0] + tw + thickness + 2), min(size, org[1] + base + thickness + 2)
    line = rng.uniform() < 0.5
    ly = 0
    if line:  # a dimension line with arrows across the product, just below the text
        ly = min(size - 1, org[1] + base + thickness + 2)
        by0, by1 = min(by0, max(0, ly - 3 * thickness - 6)), max(by1, min(size, ly + 3 * thickness + 7))
        bx0, bx1 = min(bx0, x0), max(bx1, x1)
    if bx1 <= bx0 or by1 <= by0:
        return label
    cover = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    cv2.putText(cover, label, (org[0] - bx0, org[1] - by0), font, scale, 255, thickness, cv2.LINE_AA)
    if line:
        tip = max(0.02, min(0.3, 6 * thickness / max(1, x1 - x0)))
        cv2.arrowedLine(cover, (x0 - bx0, ly - by0), (x1 - 1 - bx0, ly - by0), 255, thickness, cv2.LINE_AA, 0, tip)
        cv2.arrowedLine(cover, (x1 - 1 - bx0, ly - by0), (x0 - bx0, ly - by0), 255, thickness, cv2.LINE_AA, 0, tip)
    if rng.uniform() < 0.7:
        color = np.full(3, rng.uniform(0, 70), np.float32)  # dark grey print
    else:
        color = random_color(rng)
    planes = [cv2.convertScaleAbs(cover, alpha=float(c) / 255) for c in color]  # premultiplied
    pasted = paste(frame, Layer(cv2.merge([*planes, cover])), bx0, by0)
    if pasted is not None:
        cut(mask, *pasted)
    return label
