"""Randomness from stable keys, never from global state or task order.

``rng_for(seed, "cutout-17", 3)`` is the same generator on every machine, in every process,
whatever order the work runs in: the keys are hashed (BLAKE2b) into the seed sequence.
"""
from __future__ import annotations

import hashlib

import numpy as np


def stable_hash(*keys: object) -> int:
    """A 64-bit integer from keys (their ``repr``), identical across processes and platforms."""
    h = hashlib.blake2b(digest_size=8)
    for key in keys:
        h.update(repr(key).encode())
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "little")


def rng_for(*keys: object) -> np.random.Generator:
    """An independent ``np.random.Generator`` for these keys (e.g. ``seed, cutout_id, k``)."""
    return np.random.Generator(np.random.PCG64(stable_hash(*keys)))
