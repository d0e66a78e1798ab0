"""Contact sheets: a photo with its mask's outline, and tiles laid out in a grid. numpy and
OpenCV only; the synthetic set's sheet (``segsynth.synth.shards``) and a round's accepted masks
(``segsynth.active.harvest``) are drawn with these."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def outline(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], thickness: int = 1) -> np.ndarray:
    """``rgb (H, W, 3) uint8`` with the outer contours of ``mask (H, W) uint8 >= 128`` drawn on it
    (in place, and returned)."""
    contours, _ = cv2.findContours((mask >= 128).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(rgb, contours, -1, color, thickness)
    return rgb


def grid(tiles: Sequence[np.ndarray], columns: int, fill: int = 0) -> np.ndarray:
    """Equal-sized ``tiles`` in rows of ``columns``, the last row padded with ``fill``."""
    blank = np.full_like(tiles[0], fill)
    rows = [list(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    return np.concatenate([np.concatenate(r + [blank] * (columns - len(r)), axis=1) for r in rows], axis=0)
