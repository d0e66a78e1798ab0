"""The active-learning config: one file for ``segsynth active score|select|harvest|round`` and
``jobs/active.py``. Pure Python: no numpy, no Ray."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from segsynth.config import ConfigError
from segsynth.evaluate.config import EvalModel
from segsynth.split import HalfSplit
from segsynth.white import WhiteBackgroundOptions


@dataclass(frozen=True)
class PoolSource:
    """Unlabelled photos to score. ``path`` is a folder of photos (or a labelled folder: its
    ``images/``); ``table`` a CSV naming each photo's categories (``file_column`` holds the
    file name or stem, ``category_column`` one category or several joined by ``|``, e.g.
    rooms.csv's ``items``). ``unseen_scene_share``: keep only the photos that synthesis with
    ``scene_share`` of this value does NOT composite on (``not segsynth.split.used_as_scene(bg_id,
    share)``), so the pool is unseen by training. ``white: skip`` drops photos on a
    white background before any model runs (the catalog's product shots: nothing to learn)."""

    path: str
    name: Optional[str] = None  # item keys are "<name>/<stem>"; default: the folder's name
    table: Optional[str] = None
    file_column: str = "file"
    category_column: str = "category"
    default_category: str = "unknown"
    unseen_scene_share: Optional[float] = None
    white: Literal["score", "skip"] = "score"
    limit: Optional[int] = None  # the first N photos (by file name)
    # where a photo's category comes from: the table (else default_category), or "imagenet": an
    # ImageNet classifier's classes grouped into the catalog's categories (ActiveConfig.categorize),
    # for listings that come without one (segsynth.active.categorize)
    category_from: Literal["table", "imagenet"] = "table"

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = [p for p in self.path.replace("\\", "/").split("/") if p and p != "."]
        if parts and parts[-1] == "images" and len(parts) > 1:
            return parts[-2]
        return parts[-1] if parts else "pool"


@dataclass(frozen=True)
class ScoreWeights:
    """Weights of the combined score (normalised over the signals present)."""

    entropy: float = 1.0
    instability: float = 1.0
    disagreement: float = 2.0  # a second model's opinion is the strongest hint without truth


@dataclass(frozen=True)
class CategorizeConfig:
    """Categories for pool photos without a table (``category_from: imagenet``): the packaged
    ImageNet classifier ``model`` (``tf_efficientnet_lite0|1|2``: offline) at ``size`` px; the
    probabilities of each group's ImageNet class indices are summed and the photo takes the
    largest group, or ``other`` when no group reaches ``min_prob``. The default groups are the
    furniture categories of ``../shared/data/eval/furniture_dev`` (ImageNet names in
    :data:`segsynth.active.categorize.FURNITURE_GROUPS`)."""

    model: str = "tf_efficientnet_lite2"
    size: int = 260
    groups: Optional[dict[str, list[int]]] = None  # category -> ImageNet class indices; None: FURNITURE_GROUPS
    min_prob: float = 0.1
    other: str = "other"


@dataclass(frozen=True)
class SelectConfig:
    worst_categories: int = 5  # take photos from the K worst categories
    rank_by: Literal["mean", "share_above"] = "mean"  # how categories are ranked (worst first)
    threshold: float = 0.3  # a photo "fails" when its score is at least this (share_above)
    min_count: int = 3  # categories with fewer scored photos are not ranked
    top_n: int = 100  # photos selected (before the control slice)
    per_category_cap: int = 30  # at most this many selected photos per category
    dup_max_hamming: int = 6  # photos whose perceptual hashes differ in <= this many bits are duplicates
    control_fraction: float = 0.1  # plus a random control slice of this share of the selection, from the same pool
    annotators_per_item: int = 1  # people per photo in the review task


@dataclass(frozen=True)
class AutoAcceptConfig:
    """Answer the review task without people (tests, the demo, unattended rounds): with a
    ``reference`` labelled folder, accept the candidate that matches the reference mask best
    when that IoU is at least ``reference_min_iou``; otherwise accept the teacher's mask that
    agrees best with the model's when their IoU is at least ``min_iou``, else (with
    ``teacher_max_entropy`` set) the most confident teacher's mask that passes that bound;
    else answer ``none``. Every output of such a round says it was automatic."""

    enabled: bool = False
    min_iou: float = 0.85
    reference: Optional[str] = None  # a labelled folder whose masks/ are named like the pool's stems
    reference_min_iou: float = 0.9
    # A confident teacher: accept a teacher's mask whose boundary entropy (signals.boundary_entropy,
    # bits) is at most this and whose area is within [min_area, max_area] of the photo, even where
    # the model disagrees (the photos selection picks are exactly those). None: off.
    teacher_max_entropy: Optional[float] = None
    min_area: float = 0.01
    max_area: float = 0.9
    annotator: str = "auto-accept"


@dataclass(frozen=True)
class HarvestConfig:
    weight: float = 2.0  # the accepted folder's training weight (DataSource.weight): times seen per epoch
    # the share of each training epoch's rows the harvest takes (accepted photos and context
    # samples together, weight : context_weight kept); None: the weights as given. With a short
    # round (max_steps_per_epoch) over a large synthetic set, a weight alone shows a few dozen
    # accepted photos a handful of times: the share says how much of the round they are
    share: Optional[float] = None
    context: bool = True  # also cut the products out with their surroundings, for empty-room canvases
    context_margin: float = 0.25  # surroundings kept around the mask's box, as a share of its longer side
    context_feather: float = 0.08  # the patch's edges fade over this share of its shorter side
    context_samples_per_cutout: int = 8
    context_weight: float = 1.0  # training weight of the context samples
    synth_config: Optional[str] = None  # the synthesis config the context samples use (empty rooms); None: its defaults
    synth_overrides: tuple[str, ...] = ()  # key=value on it


@dataclass(frozen=True)
class RoundEval:
    """A labelled folder the round's models are compared on (only evaluation: never the pool)."""

    data: str
    name: Optional[str] = None
    stems: Optional[str] = None
    split: Optional[HalfSplit] = None  # {half: report}: one fixed half (segsynth.split.dev_half)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = self.data.rstrip("/").split("/")[-1]
        tag = self.stems or (self.split.half if self.split else None)
        return f"{base}_{tag}" if tag else base


@dataclass(frozen=True)
class ActiveConfig:
    out: str = "outputs/active"  # rounds go to OUT/round-N/
    # teachers' masks, cached by the photo's content hash (TEACHER_CACHE/<name>-<model digest>/<hash>.png):
    # a photo is pseudo-labelled once per teacher, across rounds, runs and configs that share this
    # folder; None: OUT/teachers
    teacher_cache: Optional[str] = None
    round: Optional[int] = None  # which round a command works on; None: the latest (score: a new one)
    rounds: int = 1  # rounds jobs/active.py runs unattended (auto_accept) in one call
    model: Optional[EvalModel] = None  # the current model (round 1); later rounds use the last round's model/
    teachers: tuple[EvalModel, ...] = ()
    pool: tuple[PoolSource, ...] = ()
    categorize: CategorizeConfig = field(default_factory=CategorizeConfig)
    weights: ScoreWeights = field(default_factory=ScoreWeights)
    boundary_band: float = 0.01  # the entropy band's half-width, a share of the image diagonal
    tta_scale: float = 0.75  # the rescaled test-time pass (besides the flip)
    teachers_on_white: bool = False  # run the (slow) teachers on white-background photos too
    white: WhiteBackgroundOptions = field(default_factory=WhiteBackgroundOptions)
    workers: int = 1  # actors per model
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 2
    select: SelectConfig = field(default_factory=SelectConfig)
    auto_accept: AutoAcceptConfig = field(default_factory=AutoAcceptConfig)
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    train_config: Optional[str] = None  # the training config a round starts from (its data, budget, val_data)
    train_overrides: tuple[str, ...] = ()  # key=value on it, e.g. "max_steps_per_epoch=200"
    eval: tuple[RoundEval, ...] = ()  # where each round's model is compared with the previous one
    # score the pool again with the new model at the end of a round (ROUND/report/after: each
    # category's failure score before and after; the next round starts from these scores)
    rescore_after: bool = True
    eval_models: tuple[EvalModel, ...] = ()  # baselines shown beside them (e.g. DIS)
    seed: int = 0

    def check_inputs(self) -> None:
        if self.model is not None:
            self.model.check_inputs()
        names = [t.name for t in self.teachers]
        for t in self.teachers:
            t.check_inputs()
        if len(set(names)) != len(names) or "model" in names:
            raise ConfigError(f"teachers: names must be unique and not 'model', got {names}")
        labels = [p.label for p in self.pool]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"pool: two sources are named alike ({labels}); give them a name")
        for p in self.pool:
            if p.unseen_scene_share is not None and not 0.0 <= p.unseen_scene_share <= 1.0:
                raise ConfigError(f"pool {p.label}: unseen_scene_share must be in [0, 1] (synth's scene_share)")
        c = self.categorize
        if c.groups is not None and (not c.groups or any(not v or any(not 0 <= int(i) < 1000 for i in v)
                                                           for v in c.groups.values())):
            raise ConfigError("categorize.groups: each category needs ImageNet class indices in 0..999, e.g. "
                              "{sofa: [831], table: [532, 526]}")
        if not 0.0 <= c.min_prob < 1.0:
            raise ConfigError(f"categorize.min_prob must be in [0, 1), got {c.min_prob}")
        if self.round is not None and self.round < 1:
            raise ConfigError(f"round must be >= 1 (rounds are OUT/round-1, round-2 ...), got {self.round}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if not 0.0 < self.tta_scale <= 2.0 or self.tta_scale == 1.0:
            raise ConfigError(f"tta_scale must be in (0, 2] and not 1 (it is the rescaled pass), got {self.tta_scale}")
        if self.boundary_band <= 0:
            raise ConfigError(f"boundary_band must be > 0 (a share of the diagonal), got {self.boundary_band}")
        if min(self.weights.entropy, self.weights.instability, self.weights.disagreement) < 0:
            raise ConfigError("weights must be >= 0 (0 leaves a signal out)")
        s = self.select
        if s.worst_categories < 1 or s.top_n < 1 or s.per_category_cap < 1 or s.min_count < 1:
            raise ConfigError("select.worst_categories, top_n, per_category_cap and min_count must be >= 1")
        if not 0.0 <= s.control_fraction <= 1.0:
            raise ConfigError(f"select.control_fraction must be in [0, 1], got {s.control_fraction}")
        a = self.auto_accept
        if not (0.0 < a.min_iou <= 1.0 and 0.0 < a.reference_min_iou <= 1.0):
            raise ConfigError("auto_accept.min_iou and reference_min_iou must be in (0, 1]")
        if not 0.0 <= a.min_area < a.max_area <= 1.0:
            raise ConfigError(f"auto_accept: need 0 <= min_area < max_area <= 1, got {a.min_area}, {a.max_area}")
        if a.teacher_max_entropy is not None and not 0.0 <= a.teacher_max_entropy <= 1.0:
            raise ConfigError(f"auto_accept.teacher_max_entropy is in bits, 0..1 (or null), got {a.teacher_max_entropy}")
        if self.harvest.weight <= 0 or self.harvest.context_weight <= 0:
            raise ConfigError("harvest.weight and harvest.context_weight must be > 0")
        if self.harvest.share is not None and not 0.0 < self.harvest.share < 1.0:
            raise ConfigError(f"harvest.share must be in (0, 1) (a share of the epoch's rows) or null, got {self.harvest.share}")
        if not 0.0 <= self.harvest.context_margin <= 2.0:
            raise ConfigError(f"harvest.context_margin must be in [0, 2], got {self.harvest.context_margin}")
        if self.workers < 1 or self.batch_size < 1:
            raise ConfigError("workers and batch_size must be >= 1")

    def require_scoring(self) -> None:
        """What ``score`` needs besides the defaults (the other commands do not)."""
        if not self.pool:
            raise ConfigError("pool: no sources; add e.g. pool: [{path: ../shared/data/scenes/ikea_rooms/images, "
                              "table: ../shared/data/scenes/ikea_rooms/rooms.csv, category_column: items}]")
