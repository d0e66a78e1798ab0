"""Compositing engine: cutout + background -> image and mask (pure numpy/OpenCV, no Ray, no torch).

    cutouts, skipped = load_cutouts("outputs/cutouts")            # manifest.parquet inside
    rooms, _ = load_backgrounds(["outputs/rooms", "data/rooms/"])
    scenes, _ = load_backgrounds(["data/furnished_rooms/"])        # optional: furnished rooms
    sample = make_sample(cutouts[0], k=3, seed=0, size=512, cfg=CompositeConfig(),
                         backgrounds=rooms, distractors=others, scenes=scenes)
    sample.image, sample.mask, sample.meta                        # (512, 512, 3), (512, 512), dict
"""
from segsynth.synth.config import BG_KINDS, BLEND_MODES, FLOORS, PLACEMENTS, SHADOW_TYPES, CompositeConfig
from segsynth.synth.engine import META_KEYS, Sample, make_sample
from segsynth.synth.library import Background, Cutout, load_backgrounds, load_cutouts, split_scenes

__all__ = [
    "BG_KINDS", "BLEND_MODES", "FLOORS", "PLACEMENTS", "SHADOW_TYPES", "META_KEYS",
    "Background", "CompositeConfig", "Cutout", "Sample",
    "load_backgrounds", "load_cutouts", "make_sample", "split_scenes",
]
