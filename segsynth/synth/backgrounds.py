"""Background generators: each returns a fresh ``(size, size, 3) uint8`` RGB frame.

Noise is always made at the output resolution (:func:`noise_field`) and only blurred there:
made small and enlarged, it would be smooth blobs, not the pixel-level grain a model must learn
to ignore.
"""
from __future__ import annotations

import cv2
import numpy as np

from segsynth.synth.config import CompositeConfig
from segsynth.synth.layers import resize
from segsynth.synth.library import Background


def random_color(rng: np.random.Generator) -> np.ndarray:
    """A plausible wall/studio colour: ``(3,) float32`` 0..255, mostly muted, sometimes saturated."""
    hue = rng.uniform(0, 360)
    sat = rng.uniform() ** 1.5
    val = rng.uniform(0.15, 1.0)
    hsv = np.array([[[hue, sat, val]]], np.float32)  # float HSV: H 0..360, S and V 0..1
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] * np.float32(255)


def white(rng: np.random.Generator, size: int, cfg: CompositeConfig) -> np.ndarray:
    """Near-white studio backdrop with a slight linear gradient in a random direction."""
    level = rng.uniform(cfg.bg_white_min, 255.0)
    drop = rng.uniform(0.0, cfg.bg_white_gradient_max)
    tint = rng.uniform(-3.0, 3.0, 3)  # a faint warm/cool cast
    angle = rng.uniform(0, 2 * np.pi)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    gx, gy = float(np.cos(angle)), float(np.sin(angle))
    # ramp(y, x) along the gradient direction, 0..1: an outer sum, no per-pixel trig
    ramp = np.add.outer(t * np.float32(gy), t * np.float32(gx))
    ramp -= ramp.min()
    ramp *= np.float32(1.0 / (abs(gx) + abs(gy)))
    # per channel: level + tint - drop * ramp, rounded and saturated to uint8 (all >= 0)
    planes = [cv2.convertScaleAbs(ramp, alpha=-drop, beta=min(255.0, level + t_c)) for t_c in tint]
    return cv2.merge(planes)


def solid(rng: np.random.Generator, size: int, cfg: CompositeConfig) -> np.ndarray:
    """One flat colour."""
    color = np.clip(np.round(random_color(rng)), 0, 255).astype(np.uint8)
    return cv2.merge([np.full((size, size), c, np.uint8) for c in color])


def noise_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """I.i.d. uniform ``uint8`` noise of exactly ``shape`` (std ~73.9), from the sample's generator.

    Full-range 64-bit words cut into bytes (little-endian, the same on every platform): several
    times faster than ``rng.bytes``, which draws 32 bits at a time.
    """
    n = int(np.prod(shape))
    words = rng.integers(0, 2**64, -(-n // 8), dtype=np.uint64).astype("<u8", copy=False)
    return words.view(np.uint8)[:n].reshape(shape)


def noise(rng: np.random.Generator, size: int, cfg: CompositeConfig) -> tuple[np.ndarray, float]:
    """Grainy noise around a random colour, made at ``size`` and blurred at ``size``.

    Returns the frame and the blur sigma used (pixels). The noise amplitude (std, 0..255 units)
    is kept after the blur, so fine and coarse grain look equally strong.
    """
    color = random_color(rng)
    amp = rng.uniform(cfg.bg_noise_amp_min, cfg.bg_noise_amp_max)
    sigma = rng.uniform(cfg.bg_noise_blur_min_px, cfg.bg_noise_blur_max_px)
    channels = 3 if rng.uniform() < cfg.bg_noise_color_prob else 1
    field = noise_field(rng, (size, size, channels) if channels == 3 else (size, size))
    gain = 1.0
    if sigma >= 0.3:
        field = cv2.GaussianBlur(field.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        k = cv2.getGaussianKernel(2 * int(np.ceil(3 * sigma)) + 1, sigma)
        gain = float((k ** 2).sum())  # std of a blurred i.i.d. field = std * sum(k1^2) (separable kernel)
    scale = amp / (73.9 * gain)
    # out_c = field * scale + (color_c - 127.5 * scale): one cv2.transform pass (a grey field feeds
    # all three channels); 8-bit input saturates by itself, float input is clipped first
    offset = (color - 127.5 * scale).reshape(3, 1)
    m = np.hstack([np.eye(3) * scale if channels == 3 else np.full((3, 1), scale), offset]).astype(np.float32)
    out = cv2.transform(field if channels == 3 else field[:, :, None], m)
    if out.dtype != np.uint8:
        np.clip(out, 0, 255, out=out)
        out = cv2.convertScaleAbs(out)
    return out, float(sigma)


def room(rng: np.random.Generator, size: int, cfg: CompositeConfig, bg: Background) -> tuple[np.ndarray, int]:
    """A random square crop of a room photo (zoom, position, mirror), resized to ``size``.

    The crop side is ``bg_room_zoom_min..1`` of the photo's shorter side, and at least
    ``size / bg_room_max_upscale`` photo pixels when the shorter side has that many: a small
    crop of a big photo is not enlarged into a blurry frame behind a sharp product. A photo
    smaller than that keeps the whole zoom range (it is enlarged: including it is the caller's
    choice). Returns the ``(size, size, 3) uint8`` frame and the crop side in photo pixels.
    """
    h, w = bg.rgb.shape[:2]
    short = min(h, w)
    lo = cfg.bg_room_zoom_min
    min_side = size / cfg.bg_room_max_upscale
    if short >= min_side:
        lo = max(lo, min_side / short)
    side = max(1, int(round(short * rng.uniform(lo, 1.0))))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = bg.rgb[y0:y0 + side, x0:x0 + side]
    out = resize(crop, size, size)
    if rng.uniform() < cfg.bg_room_flip_prob:
        out = out[:, ::-1]
    return np.ascontiguousarray(out), side
