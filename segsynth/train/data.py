"""Training data without Ray: which rows train and which validate (by product), per-source
weights as copies, decoding and letterboxing rows into model inputs, and the split counts.

:mod:`segsynth.train.job` builds the Ray datasets from these; the worker loop
(:mod:`segsynth.train.loop`) only sees decoded batches.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from segsynth import io
from segsynth.config import ConfigError
from segsynth.preprocess import letterbox
from segsynth.rng import stable_hash
from segsynth.split import is_validation
from segsynth.train.config import DataSource, TrainConfig, ValSource

log = logging.getLogger(__name__)


_HASH_RANGE = float(2**64)


# ---------------------------------------------------------------- data: split, mixing, decoding
def shows_validation_product(distractor_ids: str | None, val_fraction: float) -> bool:
    """Whether a sample's distractors/occluders (``distractor_ids``, product keys ``a|b``) include
    a held-out product: such a training sample would leak validation products into training."""
    return bool(distractor_ids) and any(is_validation(k, val_fraction) for k in str(distractor_ids).split("|") if k)


def copies(sample_id: str, weight: float, seed: int) -> int:
    """How many times a training sample appears per epoch: ``floor(weight)`` plus one more with
    probability ``frac(weight)``, decided by the sample id (the same subset every epoch)."""
    whole, frac = int(math.floor(weight)), weight - math.floor(weight)
    return whole + int(stable_hash("mix", seed, str(sample_id)) / _HASH_RANGE < frac)


def role_rows(sample_ids, cutout_ids, distractor_ids, role: str, val_fraction: float, weight: float = 1.0,
              seed: int = 0) -> tuple[list[tuple[int, int]], int]:
    """Which rows of one source ``role`` ("train" or "val") uses, and how often: ``[(row index,
    copies)]`` in row order (a validation row once, a training row :func:`copies` times, rows with
    none left out), and how many training rows were left out because they show a held-out product
    as a distractor. ``distractor_ids``: None when the source records none. The one rule that
    :func:`decode_samples` decodes by and :func:`plan` counts by."""
    chosen, leaks = [], 0
    for i, (sid, cid) in enumerate(zip(sample_ids, cutout_ids)):
        if is_validation(cid, val_fraction) != (role == "val"):
            continue
        if role == "val":
            chosen.append((i, 1))
            continue
        if distractor_ids is not None and shows_validation_product(distractor_ids[i], val_fraction):
            leaks += 1
            continue
        n = copies(str(sid), weight, seed)
        if n:
            chosen.append((i, n))
    return chosen, leaks


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
    skipped = 0
    chosen, leaks = role_rows(batch["sample_id"], batch["cutout_id"], batch.get("distractor_ids"), role, val_fraction,
                              weight, seed)
    for i, n in chosen:
        sid = str(batch["sample_id"][i])
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


def shard_files(path: str) -> list[str]:
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

    return pa.concat_tables([io.read_parquet(f, columns=columns) for f in shard_files(path)])


def synthetic_columns(path: str, columns: list[str]) -> list[str]:
    """``columns`` plus ``distractor_ids`` when the dataset records them (older datasets do not)."""
    import pyarrow.parquet as pq

    fs, p = io.resolve(shard_files(path)[0])
    with fs.open_input_file(p) as f:
        names = pq.read_schema(f).names
    return columns + ["distractor_ids"] if "distractor_ids" in names else columns


def index_source(source: DataSource) -> list[dict]:
    """``[{sample_id, cutout_id, ...}]`` of one source: only the small columns are read."""
    if source.kind == "synthetic":
        return _read_synthetic(source.path, synthetic_columns(source.path, ["sample_id", "cutout_id"])).to_pylist()
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
        index = index_source(s)
        ids, cutouts = [r["sample_id"] for r in index], [r["cutout_id"] for r in index]
        distractors = [r.get("distractor_ids") for r in index]
        trained, leaks = role_rows(ids, cutouts, distractors, "train", cfg.val_fraction, s.weight, cfg.seed)
        t, v = sum(n for _, n in trained), len(role_rows(ids, cutouts, None, "val", cfg.val_fraction)[0])
        if leaks:
            log.warning("%s: %d training samples show validation products as distractors and are left out "
                        "(synthesize with val_fraction=%s to keep them)", s.path, leaks, cfg.val_fraction)
        rows.append({"path": s.path, "kind": s.kind, "weight": s.weight, "samples": len(index), "train_rows": t,
                     "val_rows": v, "left_out_leaks": leaks})
        train, val = train + t, val + v
    if cfg.val_max_samples is not None:
        val = min(val, cfg.val_max_samples)
    for v in cfg.val_data:
        n = len(real_val_items(v))
        rows.append({"path": v.path, "kind": "val_data", "stems": v.stems, "label": v.label, "val_rows": n})
    return SplitCounts(train, val, tuple(rows))


def decoded_locally(cfg: TrainConfig, role: str) -> list[dict]:
    """Every ``role`` row of every source, decoded in this process (``cache_decoded``)."""
    rows = []
    for s in cfg.data:
        if s.kind == "synthetic":
            table = _read_synthetic(s.path, synthetic_columns(s.path, ["sample_id", "cutout_id", "image", "mask"]))
            batch = {c: np.asarray(table.column(c).to_pylist(), dtype=object) for c in table.column_names}
        else:
            items = index_source(s)
            batch = {k: np.asarray([it[k] for it in items], dtype=object) for k in items[0]}
        out = decode_samples(batch, role, cfg.size, cfg.val_fraction, s.weight, cfg.seed)
        rows += [{"key": k, "image": im, "mask": m} for k, im, m in zip(out["key"], out["image"], out["mask"])]
    return rows


def steps_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    """Optimizer steps per epoch on every worker (equal shards, full micro-batches only)."""
    per_worker = n_train // cfg.num_workers
    steps = per_worker // (cfg.batch_size * cfg.grad_accum)
    if steps < 1:
        raise ConfigError(f"{n_train} training rows are too few for {cfg.num_workers} workers x batch_size "
                          f"{cfg.batch_size} x grad_accum {cfg.grad_accum}; lower batch_size or add data")
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def real_val_items(source: ValSource) -> list[dict]:
    """The ``{stem, image, mask}`` paths of a ``val_data`` folder (a ConfigError names the fix)."""
    if not io.exists(io.join(source.path, "images")) or not io.exists(io.join(source.path, "masks")):
        raise ConfigError(f"val_data: {source.path} is not a labelled folder; it needs images/ and masks/")
    try:
        items = io.labelled_folder(source.path, source.stems, source.half)
    except ValueError as e:
        raise ConfigError(f"val_data {source.path}: {e}") from None
    if not items:
        raise ConfigError(f"val_data: {source.path} holds no image with a mask")
    return items
