"""One (cutout, k) -> one composite image and its mask, reproducible from ``(seed, cutout_id, k)``.

Layers, back to front: background (white, solid, noise, a procedural floor and wall, a room
photo, or a scene: a furnished room photo, or a room, with distractor products), the product's
shadow, the product (blurred to the background's sharpness, edges blended), an optional occluder
and an optional dimension label in front, and one sensor noise over it all. The mask is the
product's alpha after blurring and edge blending, minus what the occluder and the label cover;
shadows and distractors are background.

Every random choice comes from generators keyed by ``(seed, cutout_id, k, part)``, one per part
(background, placement, shadow, ...), so a sample does not depend on which worker makes it, in
which order, or what was made before; and a change in one part leaves the draws of the others as
they were.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from segsynth.rng import rng_for
from segsynth.split import product_key
from segsynth.synth import backgrounds as bgs
from segsynth.synth import distractors as dis
from segsynth.synth import floor_wall as fw
from segsynth.synth import match
from segsynth.synth import shadows
from segsynth.synth.config import (BG_KINDS, BLEND_MODES, FLOORS, LIBRARY_KINDS, PLACEMENTS, SHADOW_TYPES,
                                   CompositeConfig)
from segsynth.synth.layers import (Layer, blur_pad, feather, fit_size, gaussian_blur, make_layer, motion_blur,
                                   pad_layer, paste)
from segsynth.synth.library import Background, Cutout

log = logging.getLogger(__name__)

GOLDEN = (0.382, 0.618)  # golden-ratio points of the frame, per axis
_warned: set[str] = set()


@dataclass
class Sample:
    """``image`` ``(size, size, 3) uint8`` RGB; ``mask`` ``(size, size) uint8`` 0..255; ``meta``
    the sampled parameters, all scalars, the same keys for every sample (:data:`META_KEYS`)."""

    image: np.ndarray
    mask: np.ndarray
    meta: dict


META_KEYS = (
    "bg_kind", "bg_id", "bg_fallback", "bg_noise_sigma", "bg_variant", "bg_crop_px",
    "placement", "scale", "pos_x", "pos_y", "flip",
    "shadow_type", "shadow_opacity", "shadow_blur",
    "distractor_count", "distractor_cut", "distractor_ids",
    "occluder", "occluder_kind", "text", "text_label",
    "blend", "blend_px", "visible_fraction",
    "match", "match_bg_blur_px", "match_blur_px", "match_noise_std",
    "product_cut", "harmonize",
)
CUT_SIDES = ("left", "right", "bottom")  # where listing photos crop a product (rarely at the top)


def _warn_once(key: str, msg: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg, *args)


def _choose(rng: np.random.Generator, weights: dict[str, float], order: Sequence[str]) -> str:
    """A name drawn with probability proportional to its weight (names in a fixed ``order``)."""
    names = [n for n in order if weights.get(n, 0.0) > 0]
    u = rng.uniform() * sum(weights[n] for n in names)
    for name in names:  # a handful of options: a plain loop beats numpy here
        u -= weights[name]
        if u < 0:
            return name
    return names[-1]


def _background_kind(rng: np.random.Generator, cfg: CompositeConfig, have_rooms: bool, have_scenes: bool,
                     have_distractors: bool) -> tuple[str, bool]:
    """The background kind, and whether it is a fallback from a kind that could not be made.

    "room" needs room photos; "scene" needs furnished room photos, or room photos and
    distractors to furnish them.
    """
    kind = _choose(rng, cfg.bg_weights, BG_KINDS)
    fallback = False
    if (kind == "room" and not have_rooms) or (kind == "scene" and not (have_rooms or have_scenes)):
        _warn_once("no-rooms", "background kind %r drawn but no backgrounds were given; falling back to the "
                   "kinds made without photos (pass backgrounds= or scenes= to make_sample)", kind)
        rest = {k: w for k, w in cfg.bg_weights.items() if k not in LIBRARY_KINDS}
        kind = _choose(rng, rest, BG_KINDS) if sum(rest.values()) > 0 else "white"
        fallback = True
    elif kind == "scene" and not have_scenes and not have_distractors:
        _warn_once("no-distractors", "background kind 'scene' drawn but no distractor cutouts were given; "
                   "falling back to 'room' (pass distractors= to make_sample)")
        kind, fallback = "room", True
    return kind, fallback


@dataclass
class _Backdrop:
    """The background frame ``(size, size, 3) uint8`` and how it was made (the ``bg_*`` meta)."""

    frame: np.ndarray
    kind: str
    fallback: bool
    bg_id: str = ""
    variant: str = ""
    noise_sigma: float = 0.0
    crop_px: int = 0


@dataclass
class _Camera:
    """One camera for the whole sample: whether the product is matched to the background, the
    background's measured blur (None when not matched or not measurable), the largest blur the
    product may get, and the sensor noise's std, drawn from ``rng`` last, over everything."""

    rng: np.random.Generator
    matched: bool
    noise_std: float
    bg_blur: float | None
    max_blur: float


@dataclass
class _Blend:
    """How the product's edges meet the background: ``mode`` (a :data:`BLEND_MODES` name), its
    width ``px``, a motion blur's ``angle`` and the room ``motion_pad`` it needs around the product."""

    mode: str
    px: float = 0.0
    angle: float = 0.0
    motion_pad: int = 0


@dataclass
class _Placement:
    """The product ``(h, w)`` in pixels inside a layer with ``pad`` pixels around it (room for its
    blurs), the layer's top-left ``(x0, y0)`` in the frame, ``name`` (a :data:`PLACEMENTS` name),
    the mirror flip, and the frame side that cuts the product ("" when none)."""

    name: str
    h: int
    w: int
    x0: int
    y0: int
    pad: int
    flip: bool
    cut: str = ""

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The product's ``(x0, y0, x1, y1)`` in the frame."""
        x, y = self.x0 + self.pad, self.y0 + self.pad
        return x, y, x + self.w, y + self.h


@dataclass
class _Shadow:
    """The product's shadow (the ``shadow_*`` meta): its :data:`SHADOW_TYPES` name or "none"."""

    type: str = "none"
    opacity: float = 0.0
    blur: float = 0.0


def make_sample(cutout: Cutout, k: int, *, seed: int, size: int, cfg: CompositeConfig,
                backgrounds: Sequence[Background] = (), distractors: Sequence[Cutout] = (),
                scenes: Sequence[Background] = ()) -> Sample:
    """The ``k``-th composite of ``cutout``: an image ``(size, size, 3) uint8`` and its mask.

    ``backgrounds`` are the (empty) room photos of the "room" kind, ``scenes`` the furnished
    room photos of the "scene" kind (without them, scenes are rooms furnished with distractors
    only); both sorted by bg_id, as :func:`load_backgrounds` returns them. ``distractors`` are
    the cutouts that may appear around or in front of the product (already filtered by the
    caller: ``cfg.distractor_categories``, and no validation products around a training
    product; the product itself is never drawn from it). The same ``(seed, cutout.cutout_id,
    k)`` and the same inputs give bit-identical results.
    """
    _check_sample_inputs(cutout, size)
    if cutout.mask is not None:
        return make_context_sample(cutout, k, seed=seed, size=size, cfg=cfg, backgrounds=backgrounds)
    key, cid = (seed, cutout.cutout_id, k), cutout.cutout_id
    have_distractors = any(d.cutout_id != cid for d in distractors[:2])
    bg = _background(rng_for(*key, "bg"), size, cfg, backgrounds, scenes, have_distractors)
    frame = bg.frame
    camera = _camera(rng_for(*key, "match"), cfg, frame)  # measured before anything sharp is pasted on it
    blend = _blend(rng_for(*key, "blend"), cfg)  # decided before placement: a motion blur needs room around the product
    match_pad = blur_pad(camera.max_blur)  # room for the largest blur the product may get
    place = _place(rng_for(*key, "place"), cutout.rgba.shape[:2], size, cfg, pad=blend.motion_pad + match_pad)
    if cfg.product_cut_prob > 0:
        place.cut, place.x0, place.y0 = _cut_by_frame(rng_for(*key, "cut"), cfg, place.x0, place.y0, place.h,
                                                      place.w, place.pad, size)
    layer, harmonized = _product_layer(key, cutout.rgba, place, frame, cfg)
    match_blur = _matching_blur(camera, layer)
    pasted = _add_distractors(key, frame, bg.kind, distractors, cid, cfg, match_blur, place)
    shadow = _add_shadow(rng_for(*key, "shadow"), frame, layer, place, size, cfg)  # from the unblended silhouette
    layer = _blur_and_blend(layer, match_pad, match_blur, blend)
    mask, (fx0, fy0, fx1, fy1) = _paste_product(frame, layer, place, size)
    full = float(mask[fy0:fy1, fx0:fx1].sum(dtype=np.int64))
    occluder, text_label = _add_in_front(key, frame, mask, place.box, distractors, cid, cfg)  # removed from the mask
    covered = bool(occluder.kind or text_label)
    visible = float(mask[fy0:fy1, fx0:fx1].sum(dtype=np.int64)) / full if covered and full else 1.0
    if camera.matched:  # one sensor noise over everything (the mask is unchanged)
        frame = match.add_noise(camera.rng, frame, camera.noise_std)
    meta = _meta(bg, place, size, shadow, pasted, occluder, text_label, blend, visible, camera, match_blur, harmonized)
    return Sample(image=frame, mask=mask, meta=meta)


def _check_sample_inputs(cutout: Cutout, size: int) -> None:
    rgba = cutout.rgba
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"cutout {cutout.cutout_id}: rgba must be (h, w, 4) uint8, got {rgba.shape} {rgba.dtype}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")


def _background(r: np.random.Generator, size: int, cfg: CompositeConfig, backgrounds: Sequence[Background],
                scenes: Sequence[Background], have_distractors: bool) -> _Backdrop:
    """The background: its kind drawn by :func:`_background_kind`, then its frame."""
    kind, fallback = _background_kind(r, cfg, bool(backgrounds), bool(scenes), have_distractors)
    if kind == "white":
        return _Backdrop(bgs.white(r, size, cfg), kind, fallback)
    if kind == "solid":
        return _Backdrop(bgs.solid(r, size, cfg), kind, fallback)
    if kind == "noise":
        frame, noise_sigma = bgs.noise(r, size, cfg)
        return _Backdrop(frame, kind, fallback, noise_sigma=noise_sigma)
    if kind == "floor_wall":
        variant = _choose(r, cfg.bg_floor_weights, FLOORS)
        return _Backdrop(fw.floor_wall(r, size, cfg, variant), kind, fallback, variant=variant)
    photos = scenes if kind == "scene" and scenes else backgrounds
    photo = photos[int(r.integers(len(photos)))]
    frame, crop_px = bgs.room(r, size, cfg, photo)
    return _Backdrop(frame, kind, fallback, bg_id=photo.bg_id, crop_px=crop_px)


def _camera(r: np.random.Generator, cfg: CompositeConfig, frame: np.ndarray) -> _Camera:
    """Whether this sample is matched (``match_prob``), its noise std and the background's blur."""
    matched = bool(r.uniform() < cfg.match_prob)
    noise_std = r.uniform(cfg.match_noise_std_min, cfg.match_noise_std_max) if matched else 0.0
    bg_blur = match.frame_blur_px(frame) if matched else None
    return _Camera(r, matched, noise_std, bg_blur, max_blur=min(bg_blur or 0.0, cfg.match_blur_max_px))


def _blend(r: np.random.Generator, cfg: CompositeConfig) -> _Blend:
    mode = _choose(r, cfg.blend_weights, BLEND_MODES)
    if mode == "feathered":
        return _Blend(mode, px=r.uniform(0.5, max(0.5, cfg.blend_feather_max_px)))
    if mode == "motion":
        px = r.uniform(min(2.0, cfg.blend_motion_max_px), cfg.blend_motion_max_px)
        return _Blend(mode, px=px, angle=r.uniform(0, math.pi), motion_pad=math.ceil(px / 2) + 1)
    return _Blend(mode)


def _place(r: np.random.Generator, shape: tuple[int, int], size: int, cfg: CompositeConfig, pad: int) -> _Placement:
    """Size and position of a product of ``shape (h, w)``: the product (and its blur, ``pad``
    pixels around it) always entirely inside the frame."""
    margin = round(cfg.placement_margin * size)
    room = size - 2 * margin - 2 * pad
    if room < 1:
        raise ValueError(f"size {size} is too small for placement_margin {cfg.placement_margin} and "
                         f"a blur of {pad} px around the product; use a larger size")
    h0, w0 = shape
    h, w = fit_size(h0, w0, r.uniform(cfg.scale_min, cfg.scale_max) * size)
    if h > room or w > room:  # a long side near 1.0 plus margin and blur: scale down to fit
        h, w = fit_size(h0, w0, max(h, w) * min(room / h, room / w))
        h, w = min(h, room), min(w, room)
    flip = bool(r.uniform() < cfg.product_flip_prob)
    name = _choose(r, cfg.placement_weights, PLACEMENTS)
    lw, lh = w + 2 * pad, h + 2 * pad
    lo_x, hi_x = margin, size - margin - lw  # top-left range that keeps the layer inside
    lo_y, hi_y = margin, size - margin - lh
    if name == "random":
        x0, y0 = int(r.integers(lo_x, hi_x + 1)), int(r.integers(lo_y, hi_y + 1))
    else:
        cx, cy = (0.5, 0.5) if name == "center" else (GOLDEN[int(r.integers(2))], GOLDEN[int(r.integers(2))])
        cx, cy = np.array([cx, cy]) + r.normal(0.0, cfg.placement_jitter, 2)
        x0 = int(np.clip(round(cx * size - lw / 2), lo_x, hi_x))
        y0 = int(np.clip(round(cy * size - lh / 2), lo_y, hi_y))
    return _Placement(name, h, w, x0, y0, pad, flip)


def _product_layer(key: tuple, rgba: np.ndarray, place: _Placement, frame: np.ndarray,
                   cfg: CompositeConfig) -> tuple[Layer, float]:
    """The product resized and flipped as placed, harmonized to the background with
    ``harmonize_prob``; and the harmonization's strength (0 when not)."""
    layer = make_layer(rgba, place.h, place.w, flip=place.flip)
    if cfg.harmonize_prob > 0:
        r = rng_for(*key, "harmonize")
        if r.uniform() < cfg.harmonize_prob:
            strength = float(r.uniform(0.0, cfg.harmonize_strength_max))
            return Layer(match.harmonize(layer.rgba, frame, strength)), strength
    return layer, 0.0


def _matching_blur(camera: _Camera, layer: Layer) -> float:
    """The blur (px) that gives the product the background's sharpness; 0 when it would not show."""
    if not camera.max_blur >= 0.3:  # only from 0.3 on can the product need a visible blur
        return 0.0
    blur = min(match.matching_blur_px(camera.bg_blur, match.layer_blur_px(layer.rgba)), camera.max_blur)
    return blur if blur >= 0.3 else 0.0


def _add_distractors(key: tuple, frame: np.ndarray, bg_kind: str, distractors: Sequence[Cutout], cid: str,
                     cfg: CompositeConfig, blur_px: float, place: _Placement) -> dis.Pasted:
    """Distractors around the product, on a share ``distractor_kinds[bg_kind]`` of the samples,
    with the same lens blur as the product."""
    p_clutter = cfg.distractor_kinds.get(bg_kind, 0.0)
    if p_clutter >= 1.0 or (p_clutter > 0 and rng_for(*key, "clutter").uniform() < p_clutter):
        return dis.add_distractors(rng_for(*key, "distractors"), frame, distractors, cid, cfg, blur_px=blur_px,
                                   product_area=float(place.h * place.w))
    return dis.Pasted()


def _add_shadow(r: np.random.Generator, frame: np.ndarray, layer: Layer, place: _Placement, size: int,
                cfg: CompositeConfig) -> _Shadow:
    """The product's shadow on the background (``shadow_prob``), from ``layer``'s silhouette at its final position."""
    if not r.uniform() < cfg.shadow_prob:
        return _Shadow()
    shadow_type = _choose(r, cfg.shadow_weights, SHADOW_TYPES)
    sh = shadows.render(r, shadow_type, layer.alpha, place.box[:2], size, cfg)
    if sh is None:
        return _Shadow(shadow_type)
    shadows.apply(frame, sh)
    return _Shadow(shadow_type, sh.opacity, sh.blur_px)


def _blur_and_blend(layer: Layer, match_pad: int, match_blur: float, blend: _Blend) -> Layer:
    """The product blurred like the background, then its edges blended."""
    if match_pad:
        layer = gaussian_blur(pad_layer(layer, match_pad), match_blur)
    if blend.mode == "feathered":
        layer = feather(layer, blend.px)
    elif blend.mode == "motion":
        layer = motion_blur(pad_layer(layer, blend.motion_pad), blend.px, blend.angle)
    return layer


def _paste_product(frame: np.ndarray, layer: Layer, place: _Placement,
                   size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The product pasted into ``frame``; its mask ``(size, size) uint8`` and the pasted box ``(x0, y0, x1, y1)``."""
    mask = np.zeros((size, size), np.uint8)
    (fx0, fy0, fx1, fy1), a = paste(frame, layer, place.x0, place.y0)
    mask[fy0:fy1, fx0:fx1] = a
    return mask, (fx0, fy0, fx1, fy1)


def _add_in_front(key: tuple, frame: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
                  distractors: Sequence[Cutout], cid: str, cfg: CompositeConfig) -> tuple[dis.Pasted, str]:
    """An occluder (``occluder_prob``) and a dimension label (``text_prob``) over the product's
    ``box``, both removed from ``mask``; the occluder and the label's text ("" when none)."""
    r = rng_for(*key, "occluder")
    occluder = dis.Pasted()
    if r.uniform() < cfg.occluder_prob:
        occluder = dis.add_occluder(r, frame, mask, box, distractors, cid, cfg)
    r = rng_for(*key, "text")
    text_label = dis.add_text(r, frame, mask, box, cfg) if r.uniform() < cfg.text_prob else ""
    return occluder, text_label


def _meta(bg: _Backdrop, place: _Placement, size: int, shadow: _Shadow, pasted: dis.Pasted, occluder: dis.Pasted,
          text_label: str, blend: _Blend, visible: float, camera: _Camera, match_blur: float,
          harmonized: float) -> dict:
    """A sample's :data:`META_KEYS`, in that order."""
    used = dict.fromkeys(product_key(c) for c in pasted.cutout_ids + occluder.cutout_ids)  # unique, in order
    x0, y0, _, _ = place.box
    return {
        "bg_kind": bg.kind, "bg_id": bg.bg_id, "bg_fallback": bg.fallback, "bg_noise_sigma": float(bg.noise_sigma),
        "bg_variant": bg.variant, "bg_crop_px": int(bg.crop_px),
        "placement": place.name, "scale": max(place.h, place.w) / size, "pos_x": (x0 + place.w / 2) / size,
        "pos_y": (y0 + place.h / 2) / size, "flip": place.flip,
        "shadow_type": shadow.type, "shadow_opacity": float(shadow.opacity), "shadow_blur": float(shadow.blur),
        "distractor_count": len(pasted.cutout_ids), "distractor_cut": int(pasted.cut),
        "distractor_ids": "|".join(used),
        "occluder": bool(occluder.kind), "occluder_kind": occluder.kind,
        "text": bool(text_label), "text_label": text_label,
        "blend": blend.mode, "blend_px": float(blend.px), "visible_fraction": visible,
        "match": camera.matched, "match_bg_blur_px": float(camera.bg_blur or 0.0), "match_blur_px": float(match_blur),
        "match_noise_std": float(camera.noise_std), "product_cut": place.cut, "harmonize": harmonized,
    }


def _cut_by_frame(r: np.random.Generator, cfg: CompositeConfig, x0: int, y0: int, h: int, w: int, pad: int,
                  size: int) -> tuple[str, int, int]:
    """With ``product_cut_prob``: the layer's top-left ``(x0, y0)`` moved so that a share
    ``U(0.05, product_cut_max)`` of the product's width (left, right) or height (bottom) lies
    outside the frame, as a listing photo crops it; the paste clips the mask alike.
    Returns the side ("" when not cut) and the new top-left."""
    if not r.uniform() < cfg.product_cut_prob:
        return "", x0, y0
    side = CUT_SIDES[int(r.integers(len(CUT_SIDES)))]
    share = r.uniform(min(0.05, cfg.product_cut_max), cfg.product_cut_max)
    if side == "left":
        x0 = -round(share * w) - pad
    elif side == "right":
        x0 = size - w + round(share * w) - pad
    else:
        y0 = size - h + round(share * h) - pad
    return side, x0, y0


def make_context_sample(cutout: Cutout, k: int, *, seed: int, size: int, cfg: CompositeConfig,
                        backgrounds: Sequence[Background] = ()) -> Sample:
    """The ``k``-th composite of a context cutout (a real product with its own surroundings,
    ``cutout.mask`` its product mask): the patch pasted whole into an empty-room canvas, as the
    method did with accepted real photos. The canvas is a ``backgrounds`` room when there are
    any, else a procedural floor and wall; the patch's longer side is ``scale_min..scale_max``
    of the frame, it stands in the lower part of the frame (products stand on floors), and it
    may be mirrored. No shadow, distractor or blur is added: the patch brings its own. The mask
    is the product's; the patch's surroundings are background."""
    if cutout.mask is None or cutout.mask.shape != cutout.rgba.shape[:2]:
        raise ValueError(f"cutout {cutout.cutout_id}: a context cutout needs a mask of its size")
    key = (seed, cutout.cutout_id, k)
    r = rng_for(*key, "bg")
    bg_id, variant, crop_px = "", "", 0
    if backgrounds:
        bg = backgrounds[int(r.integers(len(backgrounds)))]
        frame, crop_px = bgs.room(r, size, cfg, bg)
        bg_kind, bg_id = "room", bg.bg_id
    else:
        variant = _choose(r, cfg.bg_floor_weights, FLOORS)
        frame, bg_kind = fw.floor_wall(r, size, cfg, variant), "floor_wall"
    r = rng_for(*key, "place")
    h0, w0 = cutout.rgba.shape[:2]
    h, w = fit_size(h0, w0, r.uniform(cfg.scale_min, cfg.scale_max) * size)
    h, w = min(h, size), min(w, size)
    flip = bool(r.uniform() < cfg.product_flip_prob)
    x0 = int(r.integers(0, size - w + 1))
    y0 = int(r.integers((size - h) // 2, size - h + 1))
    layer = make_layer(cutout.rgba, h, w, flip=flip)
    paste(frame, layer, x0, y0)
    product = make_layer(np.dstack([np.full((h0, w0, 3), 255, np.uint8), cutout.mask]), h, w, flip=flip).alpha
    mask = np.zeros((size, size), np.uint8)
    mask[y0:y0 + h, x0:x0 + w] = product
    meta = {key_: "" for key_ in META_KEYS} | {
        "bg_kind": bg_kind, "bg_id": bg_id, "bg_fallback": False, "bg_noise_sigma": 0.0, "bg_variant": variant,
        "bg_crop_px": int(crop_px), "placement": "context", "scale": max(h, w) / size,
        "pos_x": (x0 + w / 2) / size, "pos_y": (y0 + h / 2) / size, "flip": flip,
        "shadow_type": "none", "shadow_opacity": 0.0, "shadow_blur": 0.0, "distractor_count": 0,
        "distractor_cut": 0, "occluder": False, "text": False, "blend": "context", "blend_px": 0.0,
        "visible_fraction": 1.0, "match": False, "match_bg_blur_px": 0.0, "match_blur_px": 0.0,
        "match_noise_std": 0.0, "product_cut": "", "harmonize": 0.0}
    return Sample(image=frame, mask=mask, meta=meta)
