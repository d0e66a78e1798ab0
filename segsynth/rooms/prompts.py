"""Empty-room prompts and the quality gate (numpy and OpenCV only).

- **Prompt bank** (:class:`RoomPromptConfig`, :func:`make_prompt`, :func:`make_prompts`): a
  template filled from lists of room types, styles, wall and floor materials, windows, light,
  time of day and camera angle, plus the method's own prompts verbatim. Prompt ``i`` of a run
  depends on ``(seed, i)`` only (:func:`segsynth.rng.rng_for`), so any slice of a run can be
  regenerated on any machine.
- **Quality gate** (:func:`is_blank`, :func:`phash`, :func:`dedupe`): black or near-uniform
  images (e.g. the safety checker's blanks) and near duplicates are dropped and counted.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from segsynth.config import ConfigError
from segsynth.rng import rng_for


# --------------------------------------------------------------------------- prompt bank
# The method's own prompt, verbatim: the best backgrounds of the original work came from it.
METHOD_PROMPTS: tuple[str, ...] = (
    "The room was completely empty, with no furniture or decorations to speak of. "
    "The bare walls and floor gave the room a stark and desolate feeling.",
)


DEFAULT_NEGATIVE_PROMPT = (
    "furniture, sofa, couch, chair, table, desk, bed, shelf, cabinet, wardrobe, lamp, rug, carpet, "
    "plant, decoration, painting, picture frame, curtains, clutter, objects, people, person, "
    "text, letters, watermark, logo, signature, lowres, blurry, cartoon, illustration"
)


# Kept short on purpose: CLIP reads 77 tokens, and the end of a longer prompt is dropped.
DEFAULT_TEMPLATE = (
    "{camera} photo of an empty {style} {room}, {walls}, {floor}, {window}, {light}, {time}, "
    "no furniture, bare walls and floor"
)


# placeholder in the template -> field of RoomPromptConfig that lists its values
PLACEHOLDERS: dict[str, str] = {
    "room": "room_types",
    "style": "styles",
    "walls": "wall_materials",
    "floor": "floor_materials",
    "window": "windows",
    "light": "lighting",
    "time": "times_of_day",
    "camera": "camera_angles",
}


@dataclass(frozen=True)
class RoomPromptConfig:
    """The prompt bank: a template and the lists its placeholders are drawn from.

    ``method_prompt_fraction`` of the prompts are taken verbatim from ``method_prompts``; the rest
    fill ``template`` (placeholders: ``{room} {style} {walls} {floor} {window} {light} {time}
    {camera}``) with one value of each list, drawn uniformly.
    """

    template: str = DEFAULT_TEMPLATE
    room_types: tuple[str, ...] = (
        "living room", "bedroom", "kitchen", "office", "hallway", "garden terrace", "dining room",
        "studio apartment", "loft", "attic room", "bathroom", "entrance hall", "conference room",
        "shop interior", "sunroom",
    )
    styles: tuple[str, ...] = (
        "modern", "minimalist", "scandinavian", "industrial", "classic", "rustic", "mid-century",
        "mediterranean", "japanese", "art deco", "contemporary", "farmhouse",
    )
    wall_materials: tuple[str, ...] = (
        "white painted walls", "light grey plaster walls", "beige walls", "exposed brick walls",
        "concrete walls", "wood panelled walls", "pastel green walls", "warm off-white walls",
        "tiled walls", "limewash walls",
    )
    floor_materials: tuple[str, ...] = (
        "oak parquet floor", "light wooden floor", "dark hardwood floor", "polished concrete floor",
        "white marble floor", "terracotta tiles", "grey stone tiles", "herringbone floor",
        "bare carpet floor", "checkered tile floor",
    )
    windows: tuple[str, ...] = (
        "large windows", "floor-to-ceiling windows", "a single small window", "no windows",
        "french doors", "a skylight", "arched windows", "windows with shutters",
    )
    lighting: tuple[str, ...] = (
        "soft natural light", "bright daylight", "warm lamp light", "diffuse overcast light",
        "sunbeams on the floor", "cool indirect light", "recessed ceiling lights",
    )
    times_of_day: tuple[str, ...] = ("morning", "midday", "afternoon", "golden hour", "evening", "night")
    camera_angles: tuple[str, ...] = (
        "wide-angle", "eye-level", "corner view", "low-angle", "straight-on", "slightly elevated",
    )
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    method_prompts: tuple[str, ...] = METHOD_PROMPTS
    method_prompt_fraction: float = 0.1

    def check_inputs(self) -> None:
        names = [name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None]
        unknown = [n for n in names if n not in PLACEHOLDERS]
        if unknown:
            raise ConfigError(f"prompts.template: unknown placeholder {{{unknown[0]}}}; valid ones: "
                              + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
        for name in sorted({PLACEHOLDERS[n] for n in names}):
            if not getattr(self, name):
                raise ConfigError(f"prompts.{name} is empty but the template uses it; give at least one value")
        if not 0.0 <= self.method_prompt_fraction <= 1.0:
            raise ConfigError(f"prompts.method_prompt_fraction must be in [0, 1], got {self.method_prompt_fraction}")
        if self.method_prompt_fraction > 0 and not self.method_prompts:
            raise ConfigError("prompts.method_prompts is empty but method_prompt_fraction > 0; "
                              "give prompts or set method_prompt_fraction: 0")


@dataclass(frozen=True)
class RoomPrompt:
    """One prompt of a run: ``index`` in the run, ``seed`` of its initial noise."""

    prompt: str
    negative_prompt: str
    seed: int
    index: int


def make_prompt(cfg: RoomPromptConfig, seed: int, index: int) -> RoomPrompt:
    """Prompt ``index`` of the run ``seed``: a function of ``(cfg, seed, index)`` only."""
    rng = rng_for("rooms", seed, index)
    if cfg.method_prompts and rng.random() < cfg.method_prompt_fraction:
        prompt = cfg.method_prompts[int(rng.integers(len(cfg.method_prompts)))]
    else:
        values = {}
        for placeholder, field in PLACEHOLDERS.items():  # fixed order: same draws everywhere
            options = getattr(cfg, field)
            values[placeholder] = options[int(rng.integers(len(options)))] if options else ""
        prompt = cfg.template.format(**values)
    image_seed = int(rng.integers(0, 2**31 - 1))  # torch.Generator.manual_seed takes any int; keep it portable
    return RoomPrompt(prompt=prompt, negative_prompt=cfg.negative_prompt, seed=image_seed, index=index)


def make_prompts(cfg: RoomPromptConfig, n: int, seed: int, start: int = 0) -> list[RoomPrompt]:
    """Prompts ``start .. start + n - 1`` of the run ``seed`` (deterministic, order-free)."""
    return [make_prompt(cfg, seed, i) for i in range(start, start + n)]


def bg_id_for(seed: int, index: int) -> str:
    """Stable id of background ``index`` of the run ``seed``, e.g. ``"sd-7-000042"``."""
    return f"sd-{seed}-{index:06d}"


# --------------------------------------------------------------------------- quality gate
def is_blank(rgb: np.ndarray, min_std: float = 4.0, black_level: float = 10.0) -> bool:
    """True for a black or near-uniform image (e.g. a safety-checker blank).

    ``rgb``: ``(H, W, 3) uint8``. Black: mean gray level below ``black_level`` (0..255).
    Near-uniform: standard deviation of the gray levels below ``min_std``.
    """
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return bool(gray.mean() < black_level or gray.std() < min_std)


def phash(rgb: np.ndarray) -> int:
    """64-bit perceptual hash (DCT of a 32x32 gray thumbnail, 8x8 low frequencies vs median).

    ``rgb``: ``(H, W, 3) uint8``. Near-identical images differ in a few bits; compare with
    :func:`hamming`. Returns an int in ``[0, 2**64)``.
    """
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return int(a ^ b).bit_count()


def dedupe(hashes: Sequence[int], max_distance: int = 4, seen: Sequence[int] = ()) -> list[bool]:
    """Keep-flags for ``hashes`` in order: an item is dropped when its hash is within
    ``max_distance`` bits of an earlier kept item or of any hash in ``seen``.

    Deterministic for a given order. ``max_distance: 0`` drops exact hash repeats only.
    """
    kept = np.zeros(len(seen) + len(hashes), dtype=np.uint64)  # kept hashes, filled in order
    kept[:len(seen)] = [int(h) for h in seen]
    n = len(seen)
    keep: list[bool] = []
    for h in hashes:
        h = np.uint64(int(h))
        dup = n > 0 and int(np.bitwise_count(kept[:n] ^ h).min()) <= max_distance
        keep.append(not dup)
        if not dup:
            kept[n] = h
            n += 1
    return keep


# --------------------------------------------------------------------------- dataset steps
def prompt_batch(batch: dict[str, np.ndarray], prompts: RoomPromptConfig, seed: int, start: int) -> dict[str, np.ndarray]:
    items = [make_prompt(prompts, seed, start + int(i)) for i in batch["id"]]
    return {
        "bg_id": np.array([bg_id_for(seed, p.index) for p in items], dtype=object),
        "prompt": np.array([p.prompt for p in items], dtype=object),
        "negative_prompt": np.array([p.negative_prompt for p in items], dtype=object),
        "seed": np.array([p.seed for p in items], np.int64),
        "index": np.array([p.index for p in items], np.int64),
    }
