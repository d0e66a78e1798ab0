"""The compositing knobs: one frozen dataclass, filled from YAML by ``segsynth.config.load_config``.

Knobs are grouped by prefix (``bg_*``, ``placement_*``, ``shadow_*``, ``distractor_*``,
``occluder_*``, ``text_*``, ``blend_*``, ``match_*``). Sizes are fractions of the output side
(``size``) unless the name ends in ``_px``; mixtures are ``{name: weight}`` mappings whose
weights need not sum to 1 (they are normalised), a weight of 0 turns that option off.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Optional

from segsynth.config import ConfigError
from segsynth.rooms.config import RoomsConfig

BG_KINDS = ("white", "solid", "noise", "floor_wall", "room", "scene")
LIBRARY_KINDS = ("room", "scene")  # the kinds that need room photos from a background library
PLACEMENTS = ("center", "golden", "random")
SHADOW_TYPES = ("shape", "ellipse")
BLEND_MODES = ("none", "feathered", "motion")
FLOORS = ("wood", "tiles", "carpet")  # the floors of the procedural "floor_wall" background


@dataclass(frozen=True)
class CompositeConfig:
    """How one (cutout, k) becomes an image and its mask. All fields have production defaults."""

    # -- backgrounds
    bg_weights: dict[str, float] = field(default_factory=lambda: {
        "white": 0.15, "solid": 0.05, "noise": 0.10, "floor_wall": 0.15, "room": 0.30, "scene": 0.25})
    bg_white_min: int = 235               # near-white level, 0..255 (catalog photos sit at 240..255)
    bg_white_gradient_max: float = 18.0   # largest corner-to-corner brightness drop of the white gradient
    bg_noise_amp_min: float = 8.0         # std of the noise around its base colour, in 0..255 units
    bg_noise_amp_max: float = 60.0
    bg_noise_blur_min_px: float = 0.0     # noise is made at the output size, then blurred this much
    bg_noise_blur_max_px: float = 3.0     # (sigma, pixels); 0 = white noise, pixel-level grain
    bg_noise_color_prob: float = 0.5      # coloured (per-channel) noise, else grey noise on a colour
    bg_room_zoom_min: float = 0.5         # a room crop is this fraction (..1) of the photo's shorter side
    bg_room_max_upscale: float = 1.0      # ...but at least size / this many photo pixels when the photo is
                                          # big enough (1: never enlarged, so as sharp as the product);
                                          # a smaller photo keeps the zoom range above (it is upscaled)
    bg_room_flip_prob: float = 0.5
    bg_floor_weights: dict[str, float] = field(default_factory=lambda: {
        "wood": 0.45, "tiles": 0.3, "carpet": 0.25})
    bg_floor_top_min: float = 0.3         # "floor_wall": the floor's top edge (where the wall meets it),
    bg_floor_top_max: float = 0.8         # a fraction of the frame height from the top
    bg_floor_baseboard_prob: float = 0.6

    # -- placement of the product
    placement_weights: dict[str, float] = field(default_factory=lambda: {
        "center": 0.3, "golden": 0.3, "random": 0.4})
    placement_jitter: float = 0.04        # std of the random shift added to centre / golden points
    placement_margin: float = 0.02        # the product keeps at least this far from every border
    scale_min: float = 0.45               # the product's longer side as a fraction of the frame
    scale_max: float = 0.9
    product_flip_prob: float = 0.5

    # -- shadow under the product (background in the mask)
    shadow_prob: float = 0.7
    shadow_weights: dict[str, float] = field(default_factory=lambda: {"shape": 0.5, "ellipse": 0.5})
    shadow_opacity_min: float = 0.15
    shadow_opacity_max: float = 0.6
    shadow_blur_min: float = 0.01         # Gaussian sigma as a fraction of the product's longer side
    shadow_blur_max: float = 0.06
    shadow_offset_max: float = 0.04       # random shift of the shadow, fraction of the product side
    shadow_squash_min: float = 0.08       # "shape" shadow: height factor of the projected silhouette
    shadow_squash_max: float = 0.45
    shadow_shear_min: float = 0.2         # "shape" shadow: horizontal shear of the silhouette (either
    shadow_shear_max: float = 0.9         # side), so a shadow cast behind the product shows beside it
    shadow_ellipse_width_min: float = 0.6  # "ellipse" shadow: width as a fraction of product width
    shadow_ellipse_width_max: float = 1.3

    # -- distractor products behind the main one: background in the mask
    distractor_categories: list[str] = field(default_factory=lambda: ["chair", "plant", "table", "dresser"])
    # {background kind: probability that a sample of that kind gets distractors}; the default
    # furnishes "scene" backgrounds only. Clutter that is plainly background on other kinds,
    # e.g. {scene: 1.0, room: 0.5, floor_wall: 0.5}, with the limits below.
    distractor_kinds: dict[str, float] = field(default_factory=lambda: {"scene": 1.0})
    distractor_count_min: int = 1
    distractor_count_max: int = 4
    distractor_scale_min: float = 0.2     # longer side as a fraction of the frame
    distractor_scale_max: float = 0.6
    # each distractor's box at most this fraction of the product's box area (scaled down to fit):
    # smaller than the product, so it never competes with it; null: no limit
    distractor_max_product_area: Optional[float] = None
    distractor_shadow_prob: float = 0.0   # a distractor casts a shadow too (so a shadow is not "the product")
    distractor_defocus_max_px: float = 0.0  # extra Gaussian blur (sigma, px) of up to this: out of focus, behind

    # -- the product cut by the frame, as listing photos crop it (the mask is cut alike)
    product_cut_prob: float = 0.0
    product_cut_max: float = 0.3          # at most this fraction of the product's width (or height) outside

    # -- things in front of the product: removed from the mask
    occluder_prob: float = 0.1
    occluder_scale_min: float = 0.15      # occluder's longer side as a fraction of the product's
    occluder_scale_max: float = 0.45
    text_prob: float = 0.15               # a dimension label ("120 cm") over the product
    text_height_min: float = 0.03         # text height as a fraction of the frame
    text_height_max: float = 0.07

    # -- edge blending of the product into the background
    blend_weights: dict[str, float] = field(default_factory=lambda: {
        "none": 0.4, "feathered": 0.4, "motion": 0.2})
    blend_feather_max_px: float = 2.0     # sigma of the inward feather of the alpha edge
    blend_motion_max_px: float = 5.0      # length of the motion-blur kernel

    # -- one camera for product and background: same sharpness, same sensor noise
    match_prob: float = 0.5               # share of samples where the product is matched to its background
    match_blur_max_px: float = 3.0        # the largest blur (sigma) a product gets to match a blurry background
    match_noise_std_min: float = 1.0      # Gaussian noise over the whole frame after compositing,
    match_noise_std_max: float = 6.0      # std in 0..255 units (the mask is unchanged)
    # colour and light: the studio-lit product moved part of the way (strength 0..max) towards
    # the background's per-channel mean and contrast (gain, white balance and contrast together)
    harmonize_prob: float = 0.0
    harmonize_strength_max: float = 0.5

    def __post_init__(self) -> None:
        self.check_inputs()  # validate once at the boundary, not on every sample

    def check_inputs(self) -> None:
        """Raise :class:`ConfigError` naming the first bad knob and how to fix it."""
        for name, valid in (("bg_weights", BG_KINDS), ("placement_weights", PLACEMENTS),
                            ("shadow_weights", SHADOW_TYPES), ("blend_weights", BLEND_MODES),
                            ("bg_floor_weights", FLOORS)):
            weights = getattr(self, name)
            for key, w in weights.items():
                if key not in valid:
                    raise ConfigError(f"{name}: unknown option {key!r}; valid options: {', '.join(valid)}")
                if not w >= 0:
                    raise ConfigError(f"{name}.{key}: weights must be >= 0, got {w}")
            if not sum(weights.values()) > 0:
                raise ConfigError(f"{name}: at least one weight must be > 0 (options: {', '.join(valid)})")
        for kind, p in self.distractor_kinds.items():
            if kind not in BG_KINDS:
                raise ConfigError(f"distractor_kinds: unknown background kind {kind!r}; valid: {', '.join(BG_KINDS)}")
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"distractor_kinds.{kind}: a probability must be in [0, 1], got {p}")
        if self.distractor_max_product_area is not None and not self.distractor_max_product_area > 0:
            raise ConfigError(f"distractor_max_product_area: must be > 0 (e.g. 0.5) or null for no limit, "
                              f"got {self.distractor_max_product_area}")
        if not 0.0 <= self.product_cut_max < 1.0:
            raise ConfigError(f"product_cut_max: the share of the product outside the frame must be in [0, 1), "
                              f"got {self.product_cut_max}")
        if not 0.0 <= self.harmonize_strength_max <= 1.0:
            raise ConfigError(f"harmonize_strength_max: must be in [0, 1] (1: the background's statistics), "
                              f"got {self.harmonize_strength_max}")
        for name in ("bg_room_flip_prob", "bg_noise_color_prob", "bg_floor_baseboard_prob", "product_flip_prob",
                     "shadow_prob", "occluder_prob", "text_prob", "match_prob", "distractor_shadow_prob",
                     "product_cut_prob", "harmonize_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name}: a probability must be in [0, 1], got {p}")
        if not 0 <= self.bg_white_min <= 255:
            raise ConfigError(f"bg_white_min: must be in 0..255, got {self.bg_white_min}")
        if not 0.0 < self.bg_room_zoom_min <= 1.0:
            raise ConfigError(f"bg_room_zoom_min: must be in (0, 1], got {self.bg_room_zoom_min}")
        if not self.bg_room_max_upscale > 0:
            raise ConfigError(f"bg_room_max_upscale: must be > 0 (1: crops are never enlarged; a large value "
                              f"turns the limit off), got {self.bg_room_max_upscale}")
        if not 0.05 <= self.bg_floor_top_min <= self.bg_floor_top_max <= 0.95:
            raise ConfigError(f"bg_floor_top_min/max: need 0.05 <= min <= max <= 0.95 (fractions of the frame "
                              f"height), got {self.bg_floor_top_min}, {self.bg_floor_top_max}")
        if not 0.0 < self.scale_max <= 1.0:
            raise ConfigError(f"scale_max: the product must fit the frame, so 0 < scale_max <= 1, got {self.scale_max}")
        if not 0.0 <= self.placement_margin < 0.25:
            raise ConfigError(f"placement_margin: must be in [0, 0.25), got {self.placement_margin}")
        if self.distractor_count_min < 0:
            raise ConfigError(f"distractor_count_min: must be >= 0, got {self.distractor_count_min}")
        nonneg = ("bg_white_gradient_max", "bg_noise_amp_min", "bg_noise_blur_min_px", "placement_jitter",
                  "shadow_opacity_min", "shadow_blur_min", "shadow_offset_max", "shadow_squash_min",
                  "shadow_shear_min", "shadow_ellipse_width_min", "distractor_scale_min",
                  "occluder_scale_min", "text_height_min", "blend_feather_max_px", "blend_motion_max_px",
                  "match_blur_max_px", "match_noise_std_min", "distractor_defocus_max_px")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.shadow_opacity_max > 1.0:
            raise ConfigError(f"shadow_opacity_max: an opacity is at most 1, got {self.shadow_opacity_max}")
        if self.scale_min <= 0:
            raise ConfigError(f"scale_min: must be > 0, got {self.scale_min}")
        names = {f.name for f in fields(self)}
        for lo in sorted(n for n in names if "_min" in n):
            hi = lo.replace("_min", "_max")
            if hi in names and getattr(self, lo) > getattr(self, hi):
                raise ConfigError(f"{lo} ({getattr(self, lo)}) is greater than {hi} ({getattr(self, hi)}); "
                                  f"set {lo} <= {hi}")


# Keys of the config that change the samples: a re-run into the same ``out`` must match them.
SAMPLE_KEYS = ("cutouts", "backgrounds", "scene_backgrounds", "scene_share", "seed", "size", "samples_per_cutout",
               "shard_size", "shard_order", "categories", "limit_cutouts", "image_format", "jpeg_quality", "distractor_cutouts",
               "val_fraction", "composite", "rooms_per_shard", "rooms", "distractors_per_shard",
               "backgrounds_per_shard")


# ``rooms.*`` keys that only place or size the diffusion actors (or belong to `segsynth rooms`)
ROOMS_RESOURCE_KEYS = ("out", "count", "part_size", "workers", "num_gpus", "num_cpus", "device", "write_jpegs")


@dataclass(frozen=True)
class SynthConfig:
    cutouts: str = "outputs/demo/cutouts"        # cutout folder (with manifest.parquet) or the manifest file
    backgrounds: list[str] = field(default_factory=list)  # folders of empty-room photos or background libraries
    # Furnished room photos (folders or libraries) for the "scene" kind: their furniture is
    # background, like the distractors pasted over them. Empty: scenes are `backgrounds` rooms
    # furnished with distractors only.
    scene_backgrounds: list[str] = field(default_factory=list)
    # Only the photos with segsynth.split.used_as_scene(bg_id, scene_share) are used;
    # the rest (segsynth.synth.split_scenes), stay unseen for active learning.
    scene_share: float = 1.0
    # Must equal the training config's val_fraction: the products of
    # segsynth.split.is_validation(cutout_id, val_fraction) are held out, so they are not used as
    # distractors or occluders in samples whose own product is a training product (a validation
    # product's own samples may use any). Each sample lists them in `distractor_ids`.
    val_fraction: float = 0.1
    out: str = "outputs/demo/synth"
    seed: int = 0
    size: int = 512                               # output side in px (square)
    samples_per_cutout: int = 8
    workers: int | list[int] = 2                  # compositing actors: N, or [min, max] for a pool that grows with the backlog
    cpus_per_worker: float = 1.0
    shard_size: int = 64                          # samples per parquet shard (and per task)
    # "mixed": the (product, k) pairs in a fixed random order of (seed), so a shard (and the
    # training's shuffle pool) holds many products; "product": sorted, a product's samples together
    shard_order: Literal["mixed", "product"] = "mixed"
    categories: Optional[list[str]] = None        # main products' categories; None: all
    distractor_cutouts: Optional[str] = None      # where distractors come from; None: the same manifest
    # What a worker holds per shard, whatever the catalog's size: this many distractors and this
    # many room (and scene) photos, drawn for each shard from (seed, shard); all when fewer.
    distractors_per_shard: int = 64
    backgrounds_per_shard: int = 16
    limit_cutouts: Optional[int] = None
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = 92
    write_folders: bool = False                   # also OUT/images/*.jpg and OUT/masks/*.png
    contact_sheet: int = 24                       # samples on OUT/contact_sheet.png; 0: none
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    # On-the-fly empty rooms: this many rooms are generated for each shard (0: off) with the
    # generator settings of ``rooms.*`` (``model``, ``size``, ``steps``, ``num_gpus``, ``workers``
    # ...; its ``out`` and ``count`` are not used here). They join ``backgrounds`` as canvases.
    rooms_per_shard: int = 0
    rooms: RoomsConfig = field(default_factory=RoomsConfig)

    @property
    def worker_pool(self) -> dict[str, int]:
        """Ray Data's ``ActorPoolStrategy`` arguments: a fixed pool, or one Ray Data autoscales
        between ``min`` and ``max`` actors as shards wait (on a cluster, the autoscaler adds
        nodes for them)."""
        if isinstance(self.workers, int):
            return {"size": self.workers}
        low, high = self.workers
        return {"size": low} if low == high else {"min_size": low, "max_size": high}

    @property
    def max_workers(self) -> int:
        return self.workers if isinstance(self.workers, int) else int(self.workers[-1])

    def check_inputs(self) -> None:
        if self.size < 32:
            raise ConfigError(f"size: {self.size} px is too small; use at least 32")
        for key in ("samples_per_cutout", "shard_size", "distractors_per_shard", "backgrounds_per_shard"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be at least 1, got {getattr(self, key)}")
        pool = [self.workers] if isinstance(self.workers, int) else list(self.workers)
        if len(pool) not in (1, 2) or min(pool) < 1 or pool != sorted(pool):
            raise ConfigError(f"workers: {self.workers!r}; give a number of actors (>= 1) or [min, max] with "
                              "1 <= min <= max, e.g. [2, 16]")
        if self.rooms_per_shard < 0:
            raise ConfigError(f"rooms_per_shard: must be >= 0 (0 turns on-the-fly rooms off), got {self.rooms_per_shard}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"cpus_per_worker: must be > 0, got {self.cpus_per_worker}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality: must be in 1..100, got {self.jpeg_quality}")
        if not 0.0 <= self.scene_share <= 1.0:
            raise ConfigError(f"scene_share: the share of scene photos to use, in [0, 1]; got {self.scene_share}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction: in [0, 1), equal to the training config's; got {self.val_fraction}")
