"""The training stage's config: data sources and their weights, loss, augmentation, the model,
the Ray Train resources, and the real labelled photos that validate training and select its
best checkpoint. Pure Python: no torch, no Ray."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from segsynth import io
from segsynth.config import ConfigError
from segsynth.preprocess import Preprocessing
from segsynth.split import HalfSplit

SELECT_METRICS = {"ssim_box": "max", "iou": "max", "mae": "min", "loss": "min"}  # metric -> better direction


@dataclass(frozen=True)
class ValSource:
    """A real labelled folder (``images/`` + ``masks/``) evaluated during training. ``stems``
    keeps numbered items in ranges (``"1-50"``) or the stems a CSV file lists (``stem``
    column); ``split: {half: select}`` keeps one fixed half of the folder (by a stable hash of
    the stem, :func:`segsynth.split.dev_half`: ``report`` is the other half); ``name`` labels
    its metrics (default: the folder's name, plus the ranges or the half)."""

    path: str
    stems: Optional[str] = None
    name: Optional[str] = None
    split: Optional[HalfSplit] = None
    select: bool = True  # false: on the learning curve only; best/ is chosen on the other sources

    @property
    def half(self) -> Optional[str]:
        return self.split.half if self.split else None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = self.path.rstrip("/").split("/")[-1]
        if self.stems and not self.stems.lower().endswith(".csv"):
            base = f"{base}_{self.stems.replace(',', '_')}"
        return f"{base}_{self.half}" if self.half else base


@dataclass(frozen=True)
class DataSource:
    """One training source. ``weight``: how many times each of its samples is seen per epoch on
    average (2.0 oversamples a small real set, 0.25 uses a fixed random quarter of a big one)."""

    path: str
    kind: Literal["synthetic", "labelled"] = "synthetic"
    weight: float = 1.0


@dataclass(frozen=True)
class LossConfig:
    bce_weight: float = 1.0
    dice_weight: float = 1.0  # soft Dice per sample: keeps small objects from vanishing under BCE


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, drawn per (seed, epoch, sample) in the batch loader."""

    enabled: bool = True
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # products are rarely upside down
    crop_min: float = 0.6  # random square crop, side in [crop_min, 1] of the image, resized to size
    brightness: float = 0.2  # +- fraction
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02  # +- fraction of the hue circle
    jpeg_prob: float = 0.3  # re-compress as JPEG: real catalog photos are JPEGs
    jpeg_quality: tuple[int, int] = (40, 95)
    # letterbox as the predictors do (segsynth.preprocess), but at a random place: a random
    # rectangle of the sample (aspect up to letterbox_aspect_max either way) is fitted into the
    # square with zero padding, so the model learns that padding is background
    letterbox_prob: float = 0.3
    letterbox_aspect_max: float = 2.0


@dataclass(frozen=True)
class TrainConfig:
    data: tuple[DataSource, ...] = ()
    out: str = "outputs/train"
    name: str = "segsynth-train"  # Ray run name: same name + out = resume
    epochs: int = 10
    size: int = 512  # the model's input square (segsynth.preprocess letterbox), a multiple of 32
    batch_size: int = 8  # per worker, per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200  # linear warm-up, then cosine to min_lr_ratio * lr
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    # -- training hygiene for a pretrained encoder fine-tuned at small batches
    # BatchNorm of the encoder in eval mode (its ImageNet running statistics kept): at batch 8 of
    # correlated composites, updating them (timm's momentum 0.1 follows ~10 batches) drags the
    # statistics to the synthetic images' and away from real photos'. Affine weights still train.
    freeze_encoder_bn: bool = False
    encoder_lr_scale: float = 1.0  # the encoder's learning rate = lr x this (e.g. 0.1 for pretrained weights)
    decay_norm_and_bias: bool = True  # false: no weight decay on norm weights and biases (only on conv/linear weights)
    ema_decay: float | None = None  # weight EMA (e.g. 0.999): validation, best/ and exports use the averaged weights
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: Literal["bf16", "fp16", "fp32"] = "bf16"  # mixed precision on GPU; fp32 turns it off (CPU always runs fp32)
    channels_last: bool = True  # GPU only
    encoder_name: str = "efficientnet-b5"
    encoder_weights: str | None = "imagenet"  # "imagenet" (hub; packaged for tu-tf_efficientnet_lite0|1|2), null, or a local file/folder
    # input normalisation (segsynth.preprocess): imagenet mean/std, lite ((x - 127) / 128, what the
    # EfficientNet-Lite weights were trained with), or auto (lite for efficientnet_lite encoders)
    normalization: Literal["auto", "imagenet", "lite"] = "auto"
    decoder_pyramid_channels: int = 256
    decoder_segmentation_channels: int = 128  # a multiple of 32
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # default 0.5 on CPU (data tasks need CPUs too), 4 with GPUs
    torch_threads: int | None = None  # intra-op threads per worker; default max(1, cpus_per_worker)
    # glibc malloc in the training processes: tuned keeps each step's freed activations for the next
    # step instead of returning them to the kernel (segsynth.train.malloc); default leaves glibc's
    malloc: Literal["tuned", "default"] = "tuned"
    checkpoint_every_steps: int = 500
    num_to_keep: int = 2  # Ray checkpoints kept: the best by the select_on score (as best/) and the latest
    max_failures: int = 2  # worker failures recovered (from the latest checkpoint) before giving up
    val_fraction: float = 0.1  # share of products (segsynth.split.product_key) held out of the synthetic data
    val_max_samples: int | None = 2000  # caps synthetic validation time per epoch
    # real labelled folders evaluated at each epoch end (and every val_every_steps) with the
    # evaluation metrics on the photos' own size; best/ is selected on them when given
    val_data: tuple[ValSource, ...] = ()
    select_on: Literal["ssim_box", "iou", "mae", "loss"] = "ssim_box"  # best/ by this (real data when given, else synthetic)
    val_every_steps: int | None = None  # also validate every N steps (a long run keeps its best real-photo model)
    seed: int = 0
    max_steps_per_epoch: int | None = None
    shuffle_pool: int = 256  # rows per worker collated at once and served as batches in a seeded random order
    cache_decoded: bool = False  # decode once into the object store (small sets: demo, tests) instead of every epoch
    val_batch_size: int = 4  # real validation photos per forward pass
    # stop stepping after this many minutes of a worker's loop (a CPU budget); the learning-rate
    # schedule then follows the larger of step and time progress, so it anneals by the deadline
    time_budget_min: float | None = None

    def check_inputs(self) -> None:
        if not self.data:
            raise ConfigError("data: no sources; add e.g. data: [{path: outputs/demo/synth, kind: synthetic}]")
        for i, s in enumerate(self.data):
            if s.weight <= 0:
                raise ConfigError(f"data[{i}].weight must be > 0, got {s.weight}; drop the source instead")
        if self.size <= 0 or self.size % 32:
            raise ConfigError(f"size={self.size} must be a positive multiple of 32 (the FPN's output stride); "
                              f"e.g. {max(32, round(self.size / 32) * 32)}")
        for key in ("epochs", "batch_size", "grad_accum", "num_workers", "checkpoint_every_steps", "num_to_keep"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if self.decoder_segmentation_channels % 32:
            raise ConfigError(f"decoder_segmentation_channels={self.decoder_segmentation_channels} must be a multiple of 32")
        if not 0.0 < self.augment.crop_min <= 1.0:
            raise ConfigError(f"augment.crop_min={self.augment.crop_min} must be in (0, 1]")
        lo, hi = self.augment.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ConfigError(f"augment.jpeg_quality={[lo, hi]} must be [low, high] within 1..100")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ConfigError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if not self.encoder_lr_scale > 0:
            raise ConfigError(f"encoder_lr_scale must be > 0 (1: the encoder trains at lr), got {self.encoder_lr_scale}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1) (e.g. 0.999) or null for no EMA, got {self.ema_decay}")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise ConfigError(f"time_budget_min must be > 0 minutes (or null), got {self.time_budget_min}")
        if self.select_on not in SELECT_METRICS:
            raise ConfigError(f"select_on={self.select_on!r}; valid: {', '.join(SELECT_METRICS)}")
        if self.val_every_steps is not None and self.val_every_steps < 1:
            raise ConfigError(f"val_every_steps must be >= 1 (or null), got {self.val_every_steps}")
        if self.val_every_steps is not None and not self.val_data:
            raise ConfigError("val_every_steps validates the real val_data photos, and val_data is empty; add "
                              "val_data: [{path: FOLDER}] or set val_every_steps: null (the synthetic split is "
                              "validated at each epoch end)")
        if not 0.0 <= self.augment.letterbox_prob <= 1.0:
            raise ConfigError(f"augment.letterbox_prob={self.augment.letterbox_prob} must be in [0, 1]")
        if self.augment.letterbox_aspect_max < 1.0:
            raise ConfigError(f"augment.letterbox_aspect_max={self.augment.letterbox_aspect_max} must be >= 1")
        if self.val_data and not any(v.select for v in self.val_data):
            raise ConfigError("val_data: every source has select: false, so nothing chooses best/; set select: true "
                              "on the photos best/ is chosen on (and report on the others)")
        labels = [v.label for v in self.val_data]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"val_data: two sources are labelled alike ({labels}); give them a name")
        for v in self.val_data:
            if v.stems is not None and not v.stems.lower().endswith(".csv"):
                try:
                    io.parse_stem_ranges(v.stems)
                except ValueError as e:
                    raise ConfigError(f"val_data {v.path}: {e}") from None

    @property
    def worker_cpus(self) -> float:
        return self.cpus_per_worker if self.cpus_per_worker is not None else (4.0 if self.use_gpu else 0.5)

    @property
    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.worker_cpus))

    @property
    def resolved_normalization(self) -> str:
        if self.normalization != "auto":
            return self.normalization
        return "lite" if "efficientnet_lite" in self.encoder_name else "imagenet"

    @property
    def preprocessing(self) -> Preprocessing:
        """The one preprocessing of this model: written into its card, replayed by every predictor."""
        return Preprocessing(size=self.size, normalization=self.resolved_normalization)
