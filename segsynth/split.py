"""The one split key: which product (and which background photo) sits on which side.

A product is on one side of the train/validation split whatever cutouts were made of it: the
white-background cutout ``catalog/002.460.78`` and the teacher's ``catalog/002.460.78@teacher``
(and the same photo brought in by another source, ``ikea/002.460.78``) share the product key
``002.460.78``. Training holds out validation products, and synthesis keeps them out of the
distractors and occluders of training samples, with the same function.

Background photos are split the same way (:func:`in_share`): a share of the furnished room
photos serves synthesis as scene backgrounds, the rest stays unseen (the pool active learning
scores).

Labelled real folders whose stems are not numbers (furniture_dev's ``bed_003a7e3a85``) are
split into two fixed halves the same way (:func:`dev_half`): ``select`` (checkpoint selection,
the ablations' curves) and ``report`` (the figures nobody selected on). A config names a half
with ``split: {half: select}`` (:class:`HalfSplit`).

Pure Python: imports neither numpy nor Ray.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from segsynth.rng import stable_hash

_HASH_RANGE = float(2**64)

__all__ = ["product_key", "is_validation", "in_share", "SCENE_SALT", "used_as_scene", "DEV_HALVES", "dev_half",
           "HalfSplit"]

SCENE_SALT = "scenes"  # the salt of the furnished-room photo split (synthesis uses, active learning scores the rest)


def product_key(cutout_id: str) -> str:
    """``"<source>/<stem>[@<variant>]"`` -> ``"<stem>"``: the product a cutout id shows.

    The source prefix is everything up to the last ``/``; the variant (``@teacher``, ``@white``)
    everything from the first ``@`` of the remaining name.
    """
    name = str(cutout_id).rsplit("/", 1)[-1]
    return name.split("@", 1)[0]


def _unit(*keys: object) -> float:
    return stable_hash(*keys) / _HASH_RANGE


def is_validation(cutout_id: str, val_fraction: float) -> bool:
    """Whether the product of ``cutout_id`` is held out for validation (``val_fraction`` of the
    products); decided by the product key alone, so the split never changes with the seed, the
    source name or the cutout variant."""
    return _unit("val-split", product_key(cutout_id)) < val_fraction


def in_share(key: str, share: float, salt: str = "share") -> bool:
    """Whether ``key`` (e.g. a background id) falls in a stable ``share`` (0..1) of all keys;
    the complement (``not in_share``) is the rest, disjoint and stable."""
    return _unit(salt, str(key)) < share


def used_as_scene(bg_id: str, scene_share: float) -> bool:
    """Whether synthesis with ``scene_share`` composites on the furnished room photo ``bg_id``;
    the photos where this is False stay unseen by training (active learning's pool)."""
    return in_share(bg_id, scene_share, salt=SCENE_SALT)


DEV_HALVES = ("select", "report")
DEV_SALT = "dev-half"  # the salt of the select/report split of labelled real folders


def dev_half(stem: str) -> str:
    """``"select"`` or ``"report"``: the fixed half of a labelled folder that item ``stem``
    belongs to (a stable hash of the stem: the same on every machine, for every run and config;
    about half the items each, whatever the stems look like)."""
    return DEV_HALVES[0] if in_share(stem, 0.5, salt=DEV_SALT) else DEV_HALVES[1]


@dataclass(frozen=True)
class HalfSplit:
    """``split: {half: select}`` in a config: keep the items of one :func:`dev_half`."""

    half: Literal["select", "report"]

    def keeps(self, stem: str) -> bool:
        return dev_half(stem) == self.half
