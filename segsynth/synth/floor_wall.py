"""The procedural "floor_wall" background: a wall over a floor, seen in one-point perspective.

Drawn directly at the output size, so it is as sharp as the product pasted on it (a crop of a
small room photo, enlarged, is not). The camera stands ``1`` unit (its height) above the floor
and faces a wall ``wall_dist`` units away; with focal length ``f`` pixels and the eye-level
horizon at row ``eye``, a floor pixel ``(x, y)`` sees the floor point

    X = (x - vx) / (y - eye)      (sideways, camera heights)
    Z = f / (y - eye)             (depth, camera heights)

so plank seams (constant ``X``) converge on the vanishing point ``(vx, eye)`` and board ends and
tile rows (constant ``Z``) crowd towards the wall. Lines are anti-aliased from their width in
floor units and the pixel's footprint there; patterns finer than two pixels fade into their
mean colour instead of aliasing into moire. Vectorised numpy (one-channel passes): a few
milliseconds at 320 px.
"""
from __future__ import annotations

import cv2
import numpy as np

from segsynth.synth.backgrounds import noise_field
from segsynth.synth.config import FLOORS, CompositeConfig

_LUT = 1024  # per-plank / per-tile tone table; ids are hashed into it
# A region's colour is a sum of terms ``weight (rows, cols) float32 x colour (3,) float32 0..1``:
# the frame is assembled one channel at a time (single-channel float passes are several times
# faster than numpy broadcasting over an interleaved (H, W, 3) array).
Terms = list[tuple[np.ndarray, np.ndarray]]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """``(3,) float32`` RGB 0..1 from hue in degrees, saturation and value 0..1."""
    return cv2.cvtColor(np.array([[[h, s, v]]], np.float32), cv2.COLOR_HSV2RGB)[0, 0]


def _lines(coord: np.ndarray, period: float, half_width: float, footprint: np.ndarray) -> np.ndarray:
    """Coverage (float32 0..1) of lines ``2 * half_width`` wide every ``period`` along ``coord``.

    ``footprint`` is the extent of one pixel along ``coord`` (same units, broadcastable): a box
    filter of the line, faded into its mean density where the lines are less than 2 px apart.
    """
    d = np.abs(coord / np.float32(period) - np.round(coord / np.float32(period))) * np.float32(period)
    s = np.maximum(footprint, np.float32(1e-6))
    cover = np.clip((np.float32(half_width) + 0.5 * s - d) / s, 0.0, np.minimum(1.0, 2 * half_width / s))
    fade = np.clip((period / s - 2.0) / 2.0, 0.0, 1.0)  # 1 where the lines are >= 4 px apart
    return (fade * cover + (1.0 - fade) * np.float32(2 * half_width / period)).astype(np.float32)


def _tone(rng: np.random.Generator, spread: float) -> np.ndarray:
    """A table of multiplicative tones around 1 (``(_LUT,) float32``)."""
    return (1.0 + rng.uniform(-spread, spread, _LUT)).astype(np.float32)


def _cell(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """A pseudo-random table index for integer cell ids ``(i, j)`` (int32 arrays; wrap-around intended)."""
    return ((i * np.int32(73856093)) ^ (j * np.int32(19349663))) & np.int32(_LUT - 1)


def _wood(rng: np.random.Generator, X: np.ndarray, Z: np.ndarray, sx: np.ndarray, sz: np.ndarray) -> Terms:
    """Planks running away from the camera, staggered board ends, grain along the plank.

    ``X`` is ``(rows, cols) float32``; ``Z``, ``sx`` and ``sz`` are ``(rows, 1)`` (see
    :func:`floor_wall`); the weights come out ``(rows, cols) float32``.
    """
    base = _hsv(rng.uniform(15, 42), rng.uniform(0.15, 0.7), rng.uniform(0.3, 0.9))
    plank_w = rng.uniform(0.08, 0.22)                  # camera heights (a camera ~1.3 m up: 10..30 cm)
    board_l = plank_w * rng.uniform(4.0, 12.0)
    i = np.floor(X * np.float32(1 / plank_w)).astype(np.int32)
    offsets = rng.uniform(0, board_l, _LUT).astype(np.float32)  # staggered board ends, per plank
    zo = Z + offsets[i & np.int32(_LUT - 1)]
    j = np.floor(zo * np.float32(1 / board_l)).astype(np.int32)
    cell = _cell(i, j)
    tone = _tone(rng, rng.uniform(0.04, 0.15))[cell]
    # grain: streaks along the plank that wander a little, a phase per board; fades when too fine
    grain_p = plank_w * rng.uniform(0.04, 0.12)
    phase = rng.uniform(0, 2 * np.pi, _LUT).astype(np.float32)[cell]
    wobble = np.sin(Z * np.float32(2 * np.pi / (board_l * rng.uniform(0.3, 0.8))) + phase)
    grain = np.sin(X * np.float32(2 * np.pi / grain_p) + np.float32(rng.uniform(1.0, 4.0)) * wobble + phase)
    grain_amp = np.float32(rng.uniform(0.02, 0.08)) * np.clip((grain_p / sx - 2.0) / 3.0, 0.0, 1.0)
    shade = tone * (1.0 + grain_amp * grain)
    seam = np.maximum(_lines(X, plank_w, plank_w * rng.uniform(0.01, 0.03), sx),
                      _lines(zo, board_l, plank_w * rng.uniform(0.01, 0.03), sz))
    shade *= 1.0 - np.float32(rng.uniform(0.25, 0.6)) * seam
    return [(shade, base)]


def _tiles(rng: np.random.Generator, X: np.ndarray, Z: np.ndarray, sx: np.ndarray, sz: np.ndarray) -> Terms:
    """Square or rectangular tiles with grout, sometimes a checkerboard of two colours (arrays as
    in :func:`_wood`)."""
    if rng.uniform() < 0.35:  # terracotta, else white, grey, beige, dark
        base = _hsv(rng.uniform(8, 28), rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.75))
    else:
        base = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.2), rng.uniform(0.2, 0.97))
    tx = rng.uniform(0.15, 0.6)
    tz = tx * (1.0 if rng.uniform() < 0.6 else rng.uniform(0.5, 2.0))
    X = X + np.float32(rng.uniform(0, tx))
    Z = Z + np.float32(rng.uniform(0, tz))
    i = np.floor(X * np.float32(1 / tx)).astype(np.int32)
    j = np.floor(Z * np.float32(1 / tz)).astype(np.int32)
    tone = _tone(rng, rng.uniform(0.01, 0.06))[_cell(i, j)]
    checker = rng.uniform() < 0.25
    other = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.1, 0.95))
    half = tx * rng.uniform(0.008, 0.03)
    grout = np.maximum(_lines(X, tx, half, sx), _lines(Z, tz, half, sz))
    grout_rgb = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.15), rng.uniform(0.25, 0.9))
    tile = tone * (1.0 - grout)  # (rows, cols): tone varies along the row, grout across it
    if not checker:
        return [(tile, base), (grout, grout_rgb)]
    odd = ((i + j) & 1).astype(np.float32)
    fade = np.clip((np.minimum(tx / sx, tz / sz) - 2.0) / 2.0, 0.0, 1.0)
    odd = fade * odd + (1.0 - fade) * np.float32(0.5)  # too small to resolve: the mean of the two colours
    return [(tile * (1.0 - odd), base), (tile * odd, other), (grout, grout_rgb)]


def _grain(rng: np.random.Generator, rows: int, cols: int, amp: float) -> np.ndarray:
    """Zero-mean pixel-level noise of std ``amp``: ``(rows, cols) float32`` (uniform bytes: cheap)."""
    noise = noise_field(rng, (rows, cols)).astype(np.float32)
    return (noise - np.float32(127.5)) * np.float32(amp / 73.9)  # uint8 uniform noise has std ~73.9


def _mottle(rng: np.random.Generator, rows: int, cols: int, cell: int, amp: float) -> np.ndarray:
    """Smooth variation of std about ``amp``, blobs about ``cell`` px wide: ``(rows, cols) float32``."""
    small = rng.standard_normal((max(2, rows // cell), max(2, cols // cell)), dtype=np.float32)
    return cv2.resize(small, (cols, rows), interpolation=cv2.INTER_CUBIC) * np.float32(amp)


def _carpet(rng: np.random.Generator, rows: int, cols: int) -> Terms:
    """Carpet: a muted colour, soft mottling and pixel-level pile."""
    base = _hsv(rng.uniform(0, 360), rng.uniform(0.05, 0.55), rng.uniform(0.2, 0.85))
    shade = _mottle(rng, rows, cols, 24, rng.uniform(0.02, 0.07)) + _grain(rng, rows, cols, rng.uniform(0.03, 0.09))
    shade += np.float32(1.0)
    return [(shade, base)]


def _wall(rng: np.random.Generator, rows: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A painted wall, sometimes striped wallpaper: shade ``(rows, size) float32`` around 1 and
    colour ``(3,) float32`` 0..1."""
    color = _hsv(rng.uniform(0, 360), rng.uniform() ** 2 * 0.5, rng.uniform(0.45, 0.97))
    shade = _mottle(rng, rows, size, 60, rng.uniform(0.004, 0.015)) + _grain(rng, rows, size, rng.uniform(0.004, 0.015))
    shade += np.float32(1.0)
    if rng.uniform() < 0.2:  # a frontal wall: stripes stay vertical
        period = size * rng.uniform(0.04, 0.15)
        stripes = np.sin(np.arange(size, dtype=np.float32) * np.float32(2 * np.pi / period))
        shade *= 1.0 + np.float32(rng.uniform(0.02, 0.07)) * np.clip(stripes * np.float32(4), -1, 1)[None, :]
    return shade, color


def floor_wall(rng: np.random.Generator, size: int, cfg: CompositeConfig, floor_kind: str) -> np.ndarray:
    """A wall (paint, sometimes a baseboard) over a floor: ``(size, size, 3) uint8``.

    ``floor_kind`` is one of ``FLOORS`` (the caller draws it from ``cfg.bg_floor_weights``).
    """
    if floor_kind not in FLOORS:
        raise ValueError(f"unknown floor {floor_kind!r}; valid: {', '.join(FLOORS)}")
    top = rng.uniform(cfg.bg_floor_top_min, cfg.bg_floor_top_max) * size  # where the floor meets the wall
    f = size * rng.uniform(0.7, 1.4)                    # focal length, px
    wall_dist = rng.uniform(1.5, 6.0)                   # camera heights
    eye = top - f / wall_dist                           # eye-level horizon row (may lie above the frame)
    vx = rng.uniform(0.15, 0.85) * size
    r0 = min(size - 1, int(np.floor(top)))              # the first floor row (partly wall)
    ao = np.float32(rng.uniform(0.04, 0.2))             # a soft darkening into the corner
    floor_gain = np.float32(rng.uniform(0.7, 1.05))     # the floor is lit less or more than the wall
    y = np.arange(size, dtype=np.float32) + 0.5         # pixel-row centres
    cover = np.float32(np.clip(r0 + 1 - top, 0.0, 1.0))  # how much of row r0 is floor

    # -- the wall, rows 0..r0 (row r0 weighted by its wall part)
    shade, color = _wall(rng, r0 + 1, size)
    shade[r0] *= 1.0 - cover
    wall_terms: Terms = [(shade, color)]
    if rng.uniform() < cfg.bg_floor_baseboard_prob:
        height = rng.uniform(0.05, 0.14) * f / wall_dist  # 5..14% of a camera height, at the wall
        b0 = max(0, int(round(top - height)))
        if rng.uniform() < 0.6:
            board_rgb = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.08), rng.uniform(0.82, 0.97))
        else:
            board_rgb = color * np.float32(rng.uniform(0.55, 0.85))
        board = np.zeros_like(shade)
        board[b0:] = 1.0                                  # flat gloss paint or wood, no wall texture
        board[b0:min(r0 + 1, b0 + max(1, round(height * 0.12)))] *= np.float32(1.06)  # the lit top edge
        board[r0] *= 1.0 - cover
        shade[b0:] = 0.0
        wall_terms.append((board, board_rgb))

    # -- the floor, rows r0..size-1 (row r0 weighted by its floor part)
    yf = y[r0:]
    t = np.maximum(yf - np.float32(eye), np.float32(1e-3))[:, None]
    xc = np.arange(size, dtype=np.float32)[None, :] + np.float32(0.5 - vx)
    # per row (rows, 1), broadcast against the columns only where a term needs it: depth, and
    # the floor units one pixel spans sideways and in depth
    Z, sx, sz = np.float32(f) / t, 1.0 / t, np.float32(f) / (t * t)
    if floor_kind == "wood":
        floor_terms = _wood(rng, xc / t, Z, sx, sz)
    elif floor_kind == "tiles":
        floor_terms = _tiles(rng, xc / t, Z, sx, sz)
    else:
        floor_terms = _carpet(rng, len(yf), size)
    for w, _ in floor_terms:
        w[0] *= cover

    # -- light, one channel: a linear falloff in a random direction, a soft pool around a random
    # point, the corner's shadow, and the floor lit less or more than the wall
    angle = rng.uniform(0, 2 * np.pi)
    g = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    light = np.add.outer(g * np.float32(rng.uniform(0.0, 0.35) * np.sin(angle)),
                         g * np.float32(rng.uniform(0.0, 0.35) * np.cos(angle)))
    light += np.float32(1.0)
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    pool = np.add.outer((g - np.float32(cy)) ** 2, (g - np.float32(cx)) ** 2)
    light *= 1.0 - np.float32(rng.uniform(0.0, 0.4)) * pool
    d = (y - np.float32(top)) / np.float32(size)        # distance from the corner line, frame heights
    row = np.where(d < 0, 1.0 - ao * np.exp(np.minimum(d, 0) / np.float32(0.03)),
                   floor_gain * (1.0 - ao * np.exp(-np.maximum(d, 0) / np.float32(0.04))))
    light *= (row * 255).astype(np.float32)[:, None]

    planes = []
    for c in range(3):
        plane = np.zeros((size, size), np.float32)
        for w, rgb in wall_terms:
            plane[:r0 + 1] += w * rgb[c]
        for w, rgb in floor_terms:
            plane[r0:] += w * rgb[c]
        plane *= light
        planes.append(cv2.convertScaleAbs(plane))  # every term is >= 0: this only rounds and saturates
    return cv2.merge(planes)
