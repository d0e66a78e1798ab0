"""``segsynth train``: the FPN model on synthetic (and real) data with Ray Train DDP.

    cfg = load_config(TrainConfig, "configs/demo/train.yaml", ["epochs=2"])
    summary = run(cfg)          # {"best": "OUT/best", "best_val_iou": ..., ...}

Data: one Ray Dataset per split, read from synthetic parquet datasets (``SYNTH/shards``) and
labelled folders (``images/`` + ``masks/``), mixed with per-source weights. Samples are split
into train/validation by ``cutout_id`` (every sample of one cutout on one side). The workers run
:func:`segsynth.train.train_loop_per_worker`.

Outputs under ``out``: ``config.yaml`` (resolved), ``NAME/`` (Ray's run folder and its
checkpoints: a rerun with the same ``name`` and ``out`` resumes from the latest one),
``best/`` (standalone checkpoint folder of the best validation epoch), ``metrics.csv``,
``learning_curve.png`` and ``summary.json``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from segsynth import io
from segsynth import split
from segsynth.config import ConfigError, save_config
from segsynth.preprocess import NORMALIZATIONS, Preprocessing, letterbox
from segsynth.rng import stable_hash
from segsynth.validation import SELECT_METRICS, ValSource, real_val_items  # noqa: F401  (part of this stage's API)

log = logging.getLogger(__name__)
_HASH_RANGE = float(2**64)

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
    checkpoint_every_steps: int = 500
    num_to_keep: int = 2  # Ray checkpoints kept: the best by validation IoU and the latest
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
    fail_at_step: int | None = None  # chaos test: rank 0 raises once when reaching this step
    val_batch_size: int = 4  # real validation photos per forward pass
    time_budget_min: float | None = None  # stop stepping after this many minutes of a worker's loop (a CPU budget)

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
        labels = [v.label for v in self.val_data]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"val_data: two sources are labelled alike ({labels}); give them a name")
        for v in self.val_data:
            if v.stems is not None:
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


# ---------------------------------------------------------------- data: split, mixing, decoding
def is_validation(cutout_id: str, val_fraction: float) -> bool:
    """Whether a cutout's product is held out (:func:`segsynth.split.is_validation`): every
    cutout of one product on one side, whatever the seed."""
    return split.is_validation(cutout_id, val_fraction)


def shows_validation_product(distractor_ids: str | None, val_fraction: float) -> bool:
    """Whether a sample's distractors/occluders (``distractor_ids``, product keys ``a|b``) include
    a held-out product: such a training sample would leak validation products into training."""
    return bool(distractor_ids) and any(is_validation(k, val_fraction) for k in str(distractor_ids).split("|") if k)


def copies(sample_id: str, weight: float, seed: int) -> int:
    """How many times a training sample appears per epoch: ``floor(weight)`` plus one more with
    probability ``frac(weight)``, decided by the sample id (the same subset every epoch)."""
    whole, frac = int(math.floor(weight)), weight - math.floor(weight)
    return whole + int(stable_hash("mix", seed, str(sample_id)) / _HASH_RANGE < frac)


# ---------------------------------------------------------------- decoding (Ray Data tasks: no torch here)
def decode_samples(batch: dict[str, np.ndarray], role: str, size: int, val_fraction: float,
                   weight: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """One source's rows -> the ``role`` ("train" or "val") rows, decoded and letterboxed into
    ``(size, size)`` exactly as the predictors do (:mod:`segsynth.preprocess`).

    Input columns: ``sample_id, cutout_id``, optional ``distractor_ids``, and either ``image,
    mask`` (encoded bytes) or ``image_path, mask_path``. Output: ``key`` (str), ``image (N, S, S,
    3) uint8``, ``mask (N, S, S) uint8``; a training row appears :func:`copies` times. An
    unreadable row is skipped and logged; a training row showing a held-out product as a
    distractor is left out.
    """
    cv2.setNumThreads(1)  # a Ray task per core: OpenCV's own thread pool only oversubscribes the cores
    keys, images, masks = [], [], []
    skipped = leaks = 0
    for i, sid in enumerate(batch["sample_id"]):
        sid = str(sid)
        held_out = is_validation(batch["cutout_id"][i], val_fraction)
        if held_out != (role == "val"):
            continue
        if role == "train" and "distractor_ids" in batch and shows_validation_product(batch["distractor_ids"][i], val_fraction):
            leaks += 1
            continue
        n = 1 if role == "val" else copies(sid, weight, seed)
        if n == 0:
            continue
        try:
            if "image" in batch:
                img_bytes, mask_bytes = batch["image"][i], batch["mask"][i]
            else:
                img_bytes, mask_bytes = io.read_bytes(batch["image_path"][i]), io.read_bytes(batch["mask_path"][i])
            image = io.decode_image(img_bytes, name=f"{sid} image")
            mask = io.decode_mask(mask_bytes, name=f"{sid} mask")
            if image.shape[:2] != mask.shape:
                raise io.ImageDecodeError(f"{sid}: image {image.shape[:2]} and mask {mask.shape} differ in size")
        except (io.ImageDecodeError, OSError) as e:
            skipped += 1
            log.warning("skipping sample %s: %s", sid, e)
            continue
        image, mask = letterbox(image, size)[0], letterbox(mask, size)[0]
        for k in range(n):
            keys.append(f"{sid}#{k}")
            images.append(image)
            masks.append(mask)
    if skipped:
        log.warning("%d unreadable samples skipped in this batch", skipped)
    if leaks:
        log.warning("%d training samples left out: their distractors are validation products "
                    "(synthesize with the training's val_fraction to avoid it)", leaks)
    return {
        "key": np.asarray(keys, dtype=object),
        "image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        "mask": np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
    }


def _shard_files(path: str) -> list[str]:
    shards = io.join(path, "shards")
    folder = shards if io.exists(shards) else path
    try:
        files = io.list_files(folder, [".parquet"])
    except FileNotFoundError:
        files = []
    if not files:
        raise ConfigError(f"synthetic source {path}: no parquet shards in {folder}; run `segsynth synth` first "
                          "or point data[].path at a synthetic dataset folder")
    return files


def _read_synthetic(path: str, columns: list[str]):
    import pyarrow as pa

    return pa.concat_tables([io.read_parquet(f, columns=columns) for f in _shard_files(path)])


def _synthetic_columns(path: str, columns: list[str]) -> list[str]:
    """``columns`` plus ``distractor_ids`` when the dataset records them (older datasets do not)."""
    import pyarrow.parquet as pq

    fs, p = io.resolve(_shard_files(path)[0])
    with fs.open_input_file(p) as f:
        names = pq.read_schema(f).names
    return columns + ["distractor_ids"] if "distractor_ids" in names else columns


def _index(source: DataSource) -> list[dict]:
    """``[{sample_id, cutout_id, ...}]`` of one source: only the small columns are read."""
    if source.kind == "synthetic":
        return _read_synthetic(source.path, _synthetic_columns(source.path, ["sample_id", "cutout_id"])).to_pylist()
    items = io.labelled_folder(source.path)
    if not items:
        raise ConfigError(f"labelled source {source.path}: no images with masks (expected images/ and masks/)")
    name = source.path.rstrip("/").split("/")[-1]
    return [{"sample_id": f"{name}/{it['stem']}", "cutout_id": f"{name}/{it['stem']}",
             "image_path": it["image"], "mask_path": it["mask"]} for it in items]


@dataclass(frozen=True)
class SplitCounts:
    train: int  # training rows per epoch, after mixing weights
    val: int
    per_source: tuple[dict, ...] = ()


def plan(cfg: TrainConfig) -> SplitCounts:
    """Count train (with mixing copies) and validation rows per source, without reading images."""
    train = val = 0
    rows = []
    for s in cfg.data:
        index = _index(s)
        v = sum(is_validation(r["cutout_id"], cfg.val_fraction) for r in index)
        leaks = [r for r in index if not is_validation(r["cutout_id"], cfg.val_fraction)
                 and shows_validation_product(r.get("distractor_ids"), cfg.val_fraction)]
        t = sum(copies(r["sample_id"], s.weight, cfg.seed) for r in index
                if not is_validation(r["cutout_id"], cfg.val_fraction)) - sum(
            copies(r["sample_id"], s.weight, cfg.seed) for r in leaks)
        if leaks:
            log.warning("%s: %d training samples show validation products as distractors and are left out "
                        "(synthesize with val_fraction=%s to keep them)", s.path, len(leaks), cfg.val_fraction)
        rows.append({"path": s.path, "kind": s.kind, "weight": s.weight, "samples": len(index), "train_rows": t,
                     "val_rows": v, "left_out_leaks": len(leaks)})
        train, val = train + t, val + v
    if cfg.val_max_samples is not None:
        val = min(val, cfg.val_max_samples)
    for v in cfg.val_data:
        n = len(real_val_items(v))
        rows.append({"path": v.path, "kind": "val_data", "stems": v.stems, "label": v.label, "val_rows": n})
    return SplitCounts(train, val, tuple(rows))


def _decoded_locally(cfg: TrainConfig, role: str) -> list[dict]:
    """Every ``role`` row of every source, decoded in this process (``cache_decoded``)."""
    rows = []
    for s in cfg.data:
        if s.kind == "synthetic":
            table = _read_synthetic(s.path, _synthetic_columns(s.path, ["sample_id", "cutout_id", "image", "mask"]))
            batch = {c: np.asarray(table.column(c).to_pylist(), dtype=object) for c in table.column_names}
        else:
            items = _index(s)
            batch = {k: np.asarray([it[k] for it in items], dtype=object) for k in items[0]}
        out = decode_samples(batch, role, cfg.size, cfg.val_fraction, s.weight, cfg.seed)
        rows += [{"key": k, "image": im, "mask": m} for k, im, m in zip(out["key"], out["image"], out["mask"])]
    return rows


def build_datasets(cfg: TrainConfig):
    """``(train, val)`` Ray Datasets of ``{key, image (S, S, 3) uint8, mask (S, S) uint8}`` rows.

    Streaming (default): parquet shards and labelled folders are read and decoded by Ray Data
    tasks every epoch, so a dataset larger than memory streams through. ``cache_decoded``: small
    sets are decoded once, here, and held in the object store (no per-epoch decode, no tasks).
    """
    import ray.data

    if cfg.cache_decoded:
        train, val = (ray.data.from_items(_decoded_locally(cfg, role)) for role in ("train", "val"))
        return train, val.limit(cfg.val_max_samples) if cfg.val_max_samples is not None else val
    splits = {"train": [], "val": []}
    for s in cfg.data:
        if s.kind == "synthetic":
            base = ray.data.read_parquet(_shard_files(s.path)).select_columns(
                _synthetic_columns(s.path, ["sample_id", "cutout_id", "image", "mask"]))
        else:
            base = ray.data.from_items(_index(s))
        for role in splits:
            fn_kwargs = dict(role=role, size=cfg.size, val_fraction=cfg.val_fraction, weight=s.weight, seed=cfg.seed)
            # tasks, not actors: nothing expensive to hold, and actors would pin CPUs per source
            splits[role].append(base.map_batches(decode_samples, fn_kwargs=fn_kwargs, batch_size=16,
                                                 batch_format="numpy"))
    train, val = (ds[0].union(*ds[1:]) if len(ds) > 1 else ds[0] for ds in splits.values())
    train = train.randomize_block_order(seed=cfg.seed)
    if cfg.val_max_samples is not None:
        val = val.limit(cfg.val_max_samples)
    return train, val


# ---------------------------------------------------------------- run
def _absolute(cfg: TrainConfig) -> TrainConfig:
    """Local paths made absolute: Ray workers do not share the driver's working directory."""
    def fix(p: str | None) -> str | None:
        if p is None or io.is_uri(p) or os.path.isabs(p):
            return p
        return os.path.abspath(p)

    weights = cfg.encoder_weights
    if weights and weights != "imagenet" and (os.path.exists(weights) or "/" in weights):
        weights = fix(weights)
    data = tuple(dataclasses.replace(s, path=fix(s.path)) for s in cfg.data)
    val_data = tuple(dataclasses.replace(v, path=fix(v.path), name=v.label) for v in cfg.val_data)
    return dataclasses.replace(cfg, out=fix(cfg.out), data=data, val_data=val_data, encoder_weights=weights)


@contextlib.contextmanager
def _pinned_ray_address():
    """Run Ray Train with ``RAY_ADDRESS`` set to the cluster this driver is connected to.

    Ray Train's placement-group cleaner asks the state API whether the controller is alive,
    resolving the cluster as "auto". With several local Ray instances on one machine (shared dev
    boxes, parallel test sessions) "auto" can pick another instance, miss our controller there,
    and remove our placement group: the workers die mid-run. Ray propagates only a fixed list of
    variables to the controller (and from it to the cleaner), so RAY_ADDRESS joins that list.
    """
    import ray

    if os.environ.get("RAY_ADDRESS"):
        yield
        return
    try:
        from ray.train.v2._internal import constants as v2_constants

        propagate = getattr(v2_constants, "ENV_VARS_TO_PROPAGATE", None)
    except ImportError:
        propagate = None
    added = propagate is not None and "RAY_ADDRESS" not in propagate
    if added:
        propagate.add("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    try:
        yield
    finally:  # a later ray.init in this process must not try to join a cluster that has stopped
        os.environ.pop("RAY_ADDRESS", None)
        if added:
            propagate.discard("RAY_ADDRESS")


def steps_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    """Optimizer steps per epoch on every worker (equal shards, full micro-batches only)."""
    per_worker = n_train // cfg.num_workers
    steps = per_worker // (cfg.batch_size * cfg.grad_accum)
    if steps < 1:
        raise ConfigError(f"{n_train} training rows are too few for {cfg.num_workers} workers x batch_size "
                          f"{cfg.batch_size} x grad_accum {cfg.grad_accum}; lower batch_size or add data")
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def run(cfg: TrainConfig, address: str | None = None) -> dict:
    """Train with Ray Train; returns a summary (also written to ``OUT/summary.json``)."""
    from segsynth.pipeline.ray_env import init_ray

    cfg = _absolute(cfg)
    counts = plan(cfg)
    n_steps = steps_per_epoch(cfg, counts.train)
    log.info("train rows per epoch %d, validation rows %d, %d steps per epoch x %d epochs on %d worker(s)",
             counts.train, counts.val, n_steps, cfg.epochs, cfg.num_workers)
    io.makedirs(cfg.out)
    save_config(cfg, cfg.out)
    init_ray(address)

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from segsynth.train import SCORE_KEY, train_loop_per_worker

    train_ds, val_ds = build_datasets(cfg)
    datasets = {"train": train_ds}
    if counts.val > 0:
        datasets["val"] = val_ds
    resources = {"CPU": cfg.worker_cpus}
    if cfg.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "steps_per_epoch": n_steps, "n_train": counts.train, "n_val": counts.val},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.name, storage_path=cfg.out,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.num_to_keep,
                                                         checkpoint_score_attribute=SCORE_KEY,
                                                         checkpoint_score_order="max")),
        datasets=datasets,
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
    )
    started = time.perf_counter()
    with _pinned_ray_address():
        result = trainer.fit()
    fit_s = time.perf_counter() - started
    metrics = dict(result.metrics or {})
    scored = [(m.get(SCORE_KEY, float("-inf")), c.path) for c, m in (result.best_checkpoints or [])]
    best_dir = io.join(cfg.out, "best")
    summary = {
        "out": cfg.out,
        "best": best_dir if io.exists(io.join(best_dir, "model_card.json")) else None,
        "best_val_iou": metrics.get("best_val_iou"),
        "select_on": cfg.select_on,
        "selected_on": "val_data" if cfg.val_data else ("synthetic" if counts.val else "train_loss"),
        "best_score": metrics.get("best_score"),
        "best_step": metrics.get("best_step"),
        "normalization": cfg.resolved_normalization,
        "epochs": metrics.get("epoch"),
        "steps": metrics.get("step"),
        "train_rows_per_epoch": counts.train,
        "val_rows": counts.val,
        "steps_per_epoch": n_steps,
        "fit_wall_s": fit_s,  # trainer.fit(): workers' start, data, steps, validation, checkpoints
        "resumed_from_steps": metrics.get("attempt_start_steps"),
        "latest_checkpoint": result.checkpoint.path if result.checkpoint else None,
        "best_checkpoint": max(scored)[1] if scored else None,  # Ray's copy, with the optimizer state
        "metrics_csv": io.join(cfg.out, "metrics.csv"),
        "learning_curve": io.join(cfg.out, "learning_curve.png"),
        "sources": list(counts.per_source),
        "final_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    io.write_bytes(io.join(cfg.out, "summary.json"), json.dumps(summary, indent=2, default=str).encode())
    return summary


__all__ = ["TrainConfig", "DataSource", "LossConfig", "AugmentConfig", "run", "plan", "build_datasets",
           "is_validation", "copies", "decode_samples", "steps_per_epoch"]
