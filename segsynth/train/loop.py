"""The training loop, plain torch: augmentation, loss, optimizer, validation, one worker's epochs.

:func:`train_loop` runs one worker against a :class:`WorkerSession` (rank, device, dataset
batches, the checkpoint to resume from, reports); the Ray Train session lives in
:mod:`segsynth.train.job`, so this module never imports Ray.

Data flow: parquet rows -> ``decode_samples`` (:mod:`segsynth.train.data`, torch-free: split
by product, mixing copies, decode, letterbox to ``size``) -> ``session.batches(collate=Augmenter)`` (per-sample
``iter_torch_batches(collate_fn=Augmenter)`` (per-sample
augmentation drawn from ``rng_for(seed, "augment", epoch, key)``) -> :class:`Stepper`.

Images are ``(N, S, S, 3) uint8`` until they reach the device; masks ``(N, 1, S, S) uint8``
0..255, made float 0..1 on the device.
"""
from __future__ import annotations

import contextlib
import csv
import io as _pyio
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterable, Iterator, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from segsynth import console, io
from segsynth.config import dump_config, to_dict
from segsynth.metrics import iou, mae, ssim_box
from segsynth.model import MODEL_FILE, ModelSpec, build_model, save_model_folder, to_input, unwrap
from segsynth.preprocess import Preprocessing, letterbox, unletterbox
from segsynth.rng import rng_for, stable_hash
from segsynth.train import malloc
from segsynth.train.config import SELECT_METRICS, AugmentConfig, TrainConfig
from segsynth.train.data import real_val_items

log = logging.getLogger(__name__)

# Ray keeps the best checkpoints (num_to_keep) by this metric: each epoch's select_on score, higher is better
# (score_of in train_loop); the name is what runs already on disk were reported with
SELECT_SCORE_KEY = "checkpoint_score"
STEP_CHECKPOINT_SCORE = -1e9  # mid-epoch checkpoints are for resuming, never "the best"
STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"  # {"step", "total"} by rank 0, for the driver's progress bar


# ---------------------------------------------------------------- augmentation (batch loader)
def augment_sample(image: np.ndarray, mask: np.ndarray, aug: AugmentConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random square crop (resized back), letterbox at a random place, flips, colour jitter,
    JPEG re-compression. ``(S, S, 3) uint8, (S, S) uint8`` in and out."""
    size = image.shape[0]
    side = int(round(size * rng.uniform(aug.crop_min, 1.0)))
    if side < size:
        y0, x0 = rng.integers(0, size - side + 1, size=2)
        image = cv2.resize(image[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < aug.letterbox_prob:
        image, mask = random_letterbox(image, mask, aug.letterbox_aspect_max, rng)
    if rng.random() < aug.hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < aug.vflip:
        image, mask = image[::-1], mask[::-1]
    image = np.ascontiguousarray(image)
    if aug.hue > 0:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        shift = int(round(rng.uniform(-aug.hue, aug.hue) * 180))  # OpenCV's 8-bit hue is 0..179
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    x = image.astype(np.float32)
    x *= 1.0 + rng.uniform(-aug.brightness, aug.brightness)
    mean = x.mean()
    x = (x - mean) * (1.0 + rng.uniform(-aug.contrast, aug.contrast)) + mean
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * (1.0 + rng.uniform(-aug.saturation, aug.saturation)) + gray
    image = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < aug.jpeg_prob:
        lo, hi = aug.jpeg_quality
        image = io.decode_image(io.encode_jpeg(image, int(rng.integers(lo, hi + 1))))
    return image, np.ascontiguousarray(mask)


def random_letterbox(image: np.ndarray, mask: np.ndarray, aspect_max: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random non-square rectangle of the sample (aspect ``w / h`` log-uniform in
    ``[1 / aspect_max, aspect_max]``, as large as fits), letterboxed back into the square by
    :func:`segsynth.preprocess.letterbox` with the content at a random offset: what a predictor
    does to a photo of that shape, the padding placed anywhere. ``(S, S, 3)`` and ``(S, S)`` uint8."""
    size = image.shape[0]
    aspect = float(np.exp(rng.uniform(-np.log(aspect_max), np.log(aspect_max))))
    h, w = (size, max(1, round(size * aspect))) if aspect < 1 else (max(1, round(size / aspect)), size)
    y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    image, mask = image[y0:y0 + h, x0:x0 + w], mask[y0:y0 + h, x0:x0 + w]
    if (h, w) == (size, size):
        return image, mask
    oy, ox = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))  # its longer side is already size
    return letterbox(image, size, offset=(oy, ox))[0], letterbox(mask, size, offset=(oy, ox))[0]


class Augmenter:
    """Batch collation: ``{key, image, mask}`` numpy -> ``{"image": (N, S, S, 3) uint8, "mask":
    (N, 1, S, S) uint8}`` tensors, augmenting each sample when ``train``. Set ``epoch`` before
    each epoch: a sample's augmentation depends on ``(seed, epoch, key)`` only."""

    def __init__(self, aug: AugmentConfig, seed: int, train: bool = True):
        self.aug, self.seed, self.train, self.epoch = aug, seed, train, 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        images, masks = batch["image"], batch["mask"]
        if self.train and self.aug.enabled:
            pairs = [augment_sample(im, m, self.aug, rng_for(self.seed, "augment", self.epoch, str(k)))
                     for im, m, k in zip(images, masks, batch["key"])]
            images = np.stack([p[0] for p in pairs])
            masks = np.stack([p[1] for p in pairs])
        return {"image": torch.from_numpy(np.ascontiguousarray(images)),
                "mask": torch.from_numpy(np.ascontiguousarray(masks))[:, None]}


# ---------------------------------------------------------------- loss, schedule, one step
def seg_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0, dice_weight: float = 1.0) -> torch.Tensor:
    """BCE (with logits) + soft Dice, mean over the batch. ``logits, target: (N, 1, H, W)``, target 0..1."""
    loss = logits.new_zeros(())
    if bce_weight:
        loss = loss + bce_weight * F.binary_cross_entropy_with_logits(logits, target)
    if dice_weight:
        p = torch.sigmoid(logits).flatten(1)
        t = target.flatten(1)
        dice = (2 * (p * t).sum(1) + 1.0) / (p.sum(1) + t.sum(1) + 1.0)  # +1 smooths empty masks
        loss = loss + dice_weight * (1.0 - dice).mean()
    return loss


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.01,
              progress_floor: float = 0.0) -> float:
    """Linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps``.

    ``progress_floor`` (0..1): the cosine is at least this far along, whatever the step (a time
    budget's elapsed share: a run stopped by ``time_budget_min`` has annealed by then)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, max((step - warmup_steps) / max(1, total_steps - warmup_steps), progress_floor))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: the encoder's at ``lr * encoder_lr_scale``, the rest at ``lr``;
    with ``decay_norm_and_bias: false`` norm weights and biases (1-d tensors) get no weight decay.
    The decoder's decayed group comes first (its ``lr`` is the one reported)."""
    bare = unwrap(model)
    encoder = {id(p) for p in bare.encoder.parameters()} if hasattr(bare, "encoder") else set()
    groups: dict[tuple[bool, bool], list] = {}
    for p in bare.parameters():
        if p.requires_grad:
            decay = cfg.decay_norm_and_bias or p.ndim > 1
            groups.setdefault((id(p) in encoder, not decay), []).append(p)
    return [{"params": ps, "lr": cfg.lr * (cfg.encoder_lr_scale if enc else 1.0),
             "weight_decay": 0.0 if no_decay else cfg.weight_decay}
            for (enc, no_decay), ps in sorted(groups.items())]


def set_train_mode(model: torch.nn.Module, freeze_encoder_bn: bool) -> None:
    """``model.train()``, with the encoder's BatchNorm layers back in eval mode when
    ``freeze_encoder_bn`` (running statistics kept; their affine weights still learn)."""
    model.train()
    bare = unwrap(model)
    if freeze_encoder_bn and hasattr(bare, "encoder"):
        for m in bare.encoder.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def ema_model(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers. The decay ramps up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the randomly initialised decoder
    is forgotten within the first hundred steps instead of weighing on a short run."""

    def avg(averaged: torch.Tensor, current: torch.Tensor, num_averaged) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged * d + current * (1.0 - d)

    return torch.optim.swa_utils.AveragedModel(unwrap(model), avg_fn=avg, use_buffers=True)


class Stepper:
    """Optimizer, schedule, AMP and gradient accumulation around a (possibly DDP) model.

    ``micro_step`` runs forward/backward on one micro-batch; ``optimizer_step`` applies the
    accumulated gradients. AMP (bf16/fp16) and channels_last apply on CUDA only.
    """

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, total_steps: int, device: torch.device):
        self.model, self.cfg, self.device = model, cfg, device
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.time_progress = 0.0  # elapsed share of time_budget_min, set by the loop after each step
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio, self.time_progress))
        self.ema = ema_model(model, cfg.ema_decay) if cfg.ema_decay else None
        cuda = device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if cuda else None
        self.channels_last = cuda and cfg.channels_last
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.pre: Preprocessing = cfg.preprocessing

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_input(batch["image"], self.device, self.channels_last, self.pre)
        y = batch["mask"].to(self.device, non_blocking=True).float().div_(255.0)
        return x, y

    def micro_step(self, batch: dict[str, torch.Tensor], sync: bool = True) -> torch.Tensor:
        """Forward + backward of one micro-batch; gradients are all-reduced only when ``sync``."""
        x, y = self.inputs(batch)
        no_sync = getattr(self.model, "no_sync", None)
        with (no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()):
            with self.autocast():
                logits = self.model(x)
            loss = seg_loss(logits.float(), y, self.cfg.loss.bce_weight, self.cfg.loss.dice_weight)
            self.scaler.scale(loss / self.cfg.grad_accum).backward()
        return loss.detach()

    def optimizer_step(self) -> None:
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(unwrap(self.model))

    @property
    def eval_model(self) -> torch.nn.Module:
        """What validation scores and best/ holds: the EMA weights when ``ema_decay`` is set."""
        return self.ema.module if self.ema is not None else self.model

    def train_mode(self) -> None:
        set_train_mode(self.model, self.cfg.freeze_encoder_bn)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])


VAL_SUMS = ("n", "loss", "iou", "mae", "ssim_box")


def validate(stepper: Stepper, batches: Iterable[dict], model: torch.nn.Module | None = None) -> dict[str, float]:
    """Sums over validation samples: ``n, loss, iou, mae, ssim_box`` (per-sample metrics from
    :mod:`segsynth.metrics`, on the truth's box for SSIM). Reduce with the ``n`` of all workers.

    A batch is ``{"image": (N, S, S, 3) uint8, "mask": (N, 1, S, S) uint8}`` tensors, what the
    network sees and the loss is on; a batch of letterboxed photos (:meth:`RealValidation.batches`)
    also holds each photo's full-size mask ``"truth"`` and content ``"box"``, and its metrics are
    on the prediction cropped and resized back to the photo (:func:`unletterbox`). ``model``: the
    network to run, ``stepper.eval_model`` by default."""
    model, cfg = stepper.eval_model if model is None else model, stepper.cfg
    sums = dict.fromkeys(VAL_SUMS, 0.0)
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            x, y = stepper.inputs(batch)
            with stepper.autocast():
                logits = model(x).float()
            n = logits.shape[0]
            sums["loss"] += float(seg_loss(logits, y, cfg.loss.bce_weight, cfg.loss.dice_weight)) * n
            for p, g in _scored_pairs(torch.sigmoid(logits)[:, 0].cpu().numpy(), batch):
                sums["iou"] += iou(p, g)
                sums["mae"] += mae(p, g)
                sums["ssim_box"] += ssim_box(p, g)
            sums["n"] += n
    stepper.train_mode()
    return sums


def _scored_pairs(probs: np.ndarray, batch: dict) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """``(prediction, truth)`` per sample: at the network's size, or at the photo's own size
    when the batch holds letterboxed photos (``"truth"`` and ``"box"``)."""
    if "truth" not in batch:
        return zip(probs, batch["mask"][:, 0].cpu().numpy())
    return ((unletterbox(p, box, truth.shape), truth) for p, box, truth in zip(probs, batch["box"], batch["truth"]))


class RealValidation:
    """Real labelled photos evaluated during training exactly as ``segsynth eval`` evaluates a
    checkpoint: letterbox (:class:`Preprocessing`), forward, crop the content box, resize to the
    photo's size, then :mod:`segsynth.metrics` against the full-size mask (:func:`validate`).
    Each rank takes every ``world``-th item; sums are all-reduced by the caller. Photos are
    decoded once, here."""

    def __init__(self, sources: Iterable, rank: int = 0, world: int = 1):

        self.sets: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for source in sources:
            items = real_val_items(source)[rank::world]
            pairs = []
            for it in items:
                try:
                    pairs.append((io.read_image(it["image"]), io.read_mask(it["mask"])))
                except (io.ImageDecodeError, OSError) as e:  # one bad pair never stops training
                    log.warning("val_data %s: skipping %s: %s", source.label, it["stem"], e)
            self.sets[source.label] = pairs

    @property
    def labels(self) -> list[str]:
        return list(self.sets)

    def __call__(self, stepper: "Stepper", batch_size: int) -> dict[str, dict[str, float]]:
        """``{label: {n, loss, iou, mae, ssim_box}}`` sums over this rank's photos."""
        # the bare module: DDP's forward may broadcast buffers (a collective), and ranks hold
        # different numbers of photos
        model = unwrap(stepper.eval_model)
        return {label: validate(stepper, self.batches(pairs, batch_size, stepper.pre), model)
                for label, pairs in self.sets.items()}

    @staticmethod
    def batches(pairs: list[tuple[np.ndarray, np.ndarray]], batch_size: int, pre: Preprocessing) -> Iterator[dict]:
        """``(photo, mask)`` pairs letterboxed into :func:`validate`'s batches: ``image (N, S, S, 3)``
        and ``mask (N, 1, S, S)`` uint8 tensors, and each photo's full-size ``truth`` mask and content ``box``."""
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            boxed = [pre.letterbox(img) for img, _ in chunk]
            yield {"image": torch.from_numpy(np.stack([b[0] for b in boxed])),
                   "mask": torch.from_numpy(np.stack([pre.letterbox(m)[0] for _, m in chunk])[:, None]),
                   "truth": [m for _, m in chunk], "box": [b[1] for b in boxed]}


def has_unused_parameters(model: torch.nn.Module, device: torch.device, size: int = 64) -> bool:
    """Whether a forward/backward leaves some trainable parameter without a gradient (DDP then
    needs ``find_unused_parameters=True``; smp's EfficientNet encoders are such a case)."""
    model.eval()
    out = model(torch.zeros(2, 3, size, size, device=device))
    out.float().sum().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train()
    if unused:
        log.info("%d parameters get no gradient (e.g. %s): DDP runs with find_unused_parameters", len(unused), unused[0])
    return bool(unused)


# ---------------------------------------------------------------- state, outputs
@dataclass
class LoopState:
    """What a resumed run needs besides the weights and the optimizer."""

    step: int = 0
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0
    best_score: float = -math.inf
    best_iou: float | None = None  # best/'s IoU on what it was selected on (the selecting real sets, else synthetic)
    best_step: int | None = None
    history: list[dict] = field(default_factory=list)
    attempt_start_steps: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, loop: dict) -> "LoopState":
        """A checkpoint's loop state; one written before ``best_iou`` had its name holds
        ``best_val_iou`` (the synthetic IoU, empty when best/ was a step row): not carried over."""
        return cls(**{k: v for k, v in loop.items() if k != "best_val_iou"})


def model_spec(cfg: TrainConfig) -> ModelSpec:
    return ModelSpec(encoder_name=cfg.encoder_name, decoder_pyramid_channels=cfg.decoder_pyramid_channels,
                     decoder_segmentation_channels=cfg.decoder_segmentation_channels)


def model_card(cfg: TrainConfig, state: LoopState, metrics: dict | None) -> dict:

    return {
        "name": cfg.name,
        "encoder_name": cfg.encoder_name,
        "model": to_dict(model_spec(cfg)),
        "preprocessing": cfg.preprocessing.to_card(),
        "output": "logits",
        "metrics": metrics or {},
        "step": state.step,
        "epoch": state.epoch,
        "config": to_dict(cfg),
        "malloc": malloc.describe(),  # the training process's allocator (segsynth.train.malloc)
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_checkpoint(folder: str, model: torch.nn.Module, stepper: Stepper, cfg: TrainConfig,
                     state: LoopState, metrics: dict | None) -> None:
    """A resumable checkpoint: ``state.pt`` (optimizer, scheduler, loop state) beside the
    standalone model folder files (``model.pt``, ``model_card.json``, ``config.yaml``)."""

    save_model_folder(folder, model, model_card(cfg, state, metrics), dump_config(cfg))
    buf = _pyio.BytesIO()
    torch.save({**stepper.state_dict(), "loop": state.as_dict(), **rng_state()}, buf)
    io.write_bytes(io.join(folder, STATE_FILE), buf.getvalue())


def rng_state() -> dict:
    """torch's random state (the decoder's dropout draws from it): a resumed run goes on with
    the draws the uninterrupted run would have made (rank 0's, restored on every rank, as every
    rank starts from one seed)."""
    state = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(blob: dict) -> None:
    """Undo :func:`rng_state` (a checkpoint from before it keeps the fresh seed)."""
    if "torch_rng" in blob:
        torch.set_rng_state(blob["torch_rng"])
    if "cuda_rng" in blob and torch.cuda.is_available():
        torch.cuda.set_rng_state(blob["cuda_rng"])


def read_checkpoint(folder: str) -> tuple[dict, dict]:
    """``(model state dict, training state)`` of a checkpoint written by :func:`write_checkpoint`."""

    weights = torch.load(_pyio.BytesIO(io.read_bytes(io.join(folder, MODEL_FILE))), map_location="cpu", weights_only=True)
    state = torch.load(_pyio.BytesIO(io.read_bytes(io.join(folder, STATE_FILE))), map_location="cpu", weights_only=True)
    return weights, state


METRIC_COLUMNS = ("epoch", "step", "kind", "train_loss", "val_loss", "val_iou", "val_mae", "val_ssim_box", "lr",
                  "samples_per_s", "train_s", "first_batch_s", "epoch_s", "attempt", "score", "best")
REAL_METRICS = ("loss", "iou", "mae", "ssim_box")


def real_columns(labels: Iterable[str]) -> list[str]:
    """Per real validation set: ``val_<label>_<metric>`` columns of metrics.csv."""
    return [f"val_{label}_{m}" for label in labels for m in REAL_METRICS]


def write_metrics_csv(history: list[dict], path: str, labels: Iterable[str] = ()) -> None:
    """One row per validation (``kind`` ``epoch`` at each epoch end, ``step`` every
    ``val_every_steps``): the synthetic split's ``val_*`` and each real set's columns."""
    buf = _pyio.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(METRIC_COLUMNS) + real_columns(labels), extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    io.write_bytes(path, buf.getvalue().encode())


def plot_learning_curve(history: list[dict], path: str, labels: Iterable[str] = ()) -> None:
    """Train/validation loss and each validation source's IoU/SSIM by optimizer step -> PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is missing (pip install matplotlib): no learning curve")
        return
    labels = list(labels)

    def series(key):
        pts = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(*series("train_loss"), "o-", label="train loss")
    a.plot(*series("val_loss"), "s-", label="validation loss (synthetic)")
    for label in labels:
        a.plot(*series(f"val_{label}_loss"), ".--", label=f"{label} loss")
    a.set_xlabel("step"), a.set_ylabel("BCE + Dice"), a.legend(fontsize=7), a.grid(alpha=0.3)
    b.plot(*series("val_iou"), "o-", label="synthetic IoU")
    b.plot(*series("val_ssim_box"), "s-", label="synthetic SSIM (box)")
    for label in labels:
        b.plot(*series(f"val_{label}_iou"), ".-", label=f"{label} IoU")
        b.plot(*series(f"val_{label}_ssim_box"), ".--", label=f"{label} SSIM (box)")
    best = [r for r in history if r.get("best")]
    if best:
        b.axvline(best[-1]["step"], color="grey", lw=0.8, ls=":", label="best/")
    b.set_xlabel("step"), b.set_ylim(0, 1), b.legend(fontsize=7), b.grid(alpha=0.3)
    b.set_title("validation")
    fig.tight_layout()
    buf = _pyio.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    io.write_bytes(path, buf.getvalue())


def pool_rows(cfg: TrainConfig) -> int:
    """Rows per shuffle pool: ``shuffle_pool`` rounded down to whole batches (at least one)."""
    return max(1, cfg.shuffle_pool // cfg.batch_size) * cfg.batch_size


def shuffled_batches(pools: Iterable[dict[str, torch.Tensor]], batch_size: int, seed: int, epoch: int,
                     rank: int) -> Iterator[dict[str, torch.Tensor]]:
    """Full micro-batches drawn from each pool in the order of ``rng_for(seed, "shuffle", epoch,
    rank, pool)``. (Ray Data's local shuffle buffer re-compacts Arrow tensor blocks per batch and
    cost ~20% of a small model's step; a permutation of tensors already collated costs nothing.)"""
    for i, pool in enumerate(pools):
        n = len(next(iter(pool.values())))
        order = torch.from_numpy(rng_for(seed, "shuffle", epoch, rank, i).permutation(n))
        for s in range(0, n - batch_size + 1, batch_size):
            idx = order[s:s + batch_size]
            yield {k: v[idx.to(v.device)] for k, v in pool.items()}


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _mean(total: float, n: float) -> float | None:
    return total / n if n else None


def _real_summary(row: dict, labels: Iterable[str]) -> str:
    return ", ".join(f"{label} IoU {row.get(f'val_{label}_iou') or float('nan'):.3f} "
                     f"SSIM {row.get(f'val_{label}_ssim_box') or float('nan'):.3f}" for label in labels)


# ---------------------------------------------------------------- one worker
class WorkerSession(Protocol):
    """What :func:`train_loop` needs from the process group it runs in (Ray Train's is
    :class:`segsynth.train.job.RaySession`)."""

    rank: int
    world: int
    device: torch.device

    def resume_folder(self) -> ContextManager[str | None]:
        """The checkpoint folder to resume from (None for a fresh start), while the context is open."""

    def prepare_model(self, model: torch.nn.Module, find_unused_parameters: bool) -> torch.nn.Module:
        """Move to the device and wrap for data-parallel training."""

    def batches(self, role: str, batch_size: int, collate: Callable, prefetch_batches: int = 1,
                epoch: int = 0) -> Iterator | None:
        """Batches of this worker's shard of ``role`` ("train" or "val") through ``collate``; None
        without that split. ``epoch``: the loop's epoch (a resumed run's first is not 0), for a
        session that orders each epoch's rows itself."""

    def report(self, metrics: dict, folder: str | None = None, name: str | None = None) -> None:
        """Report ``metrics`` (every rank: a barrier) with a checkpoint ``folder`` (rank 0) named ``name``."""


@dataclass
class EpochStats:
    """What one epoch's steps leave for its end-of-epoch row."""

    loss_sum: torch.Tensor
    loss_n: int = 0
    steps_done: int = 0
    t0: float = field(default_factory=time.perf_counter)
    first_batch_s: float | None = None  # the iterator's start (dataset execution, first fetch), apart from the steps
    train_s: float = 0.0

    @property
    def train_loss(self) -> float:
        return float(self.loss_sum) / max(self.loss_n, 1)


class WorkerRun:
    """One worker's run, as named steps: :meth:`resume` (model, optimizer, loop state),
    :meth:`train_epoch` (the steps, with their mid-epoch validation and checkpoints),
    :meth:`end_epoch` (validation, the epoch's row, its checkpoint), :meth:`save_last`.
    :func:`train_loop` drives it; only rank 0 writes files."""

    def __init__(self, cfg: TrainConfig, n_steps: int, session: WorkerSession):
        self.cfg, self.n_steps, self.session = cfg, n_steps, session
        self.rank, self.world, self.device = session.rank, session.world, session.device
        self.model, self.stepper, self.state = self.resume()
        self.train_aug = Augmenter(cfg.augment, cfg.seed, train=True)
        self.val_aug = Augmenter(cfg.augment, cfg.seed, train=False)
        self.real_val = RealValidation(cfg.val_data, self.rank, self.world) if cfg.val_data else None
        self.labels = self.real_val.labels if self.real_val else []
        self.selecting = {v.label for v in cfg.val_data if v.select}
        # time_budget_min: a CPU run stops stepping when its budget is spent (checked after each
        # optimizer step, agreed by all ranks), validates, reports and ends as if the epochs were done
        self.budget_s = 60.0 * cfg.time_budget_min if cfg.time_budget_min else 0.0
        self.deadline = time.perf_counter() + self.budget_s if cfg.time_budget_min else None
        self.out_of_time = False

    # ------------------------------------------------------------ start
    def resume(self) -> tuple[torch.nn.Module, Stepper, LoopState]:
        """The model from the session's checkpoint (else from ``encoder_weights``), on the
        device and wrapped for the process group, its stepper and the loop state."""
        cfg, session = self.cfg, self.session
        state, blob = LoopState(), None
        torch.manual_seed(stable_hash(cfg.seed, "init") % 2**63)
        with session.resume_folder() as folder:
            model = build_model(model_spec(cfg), encoder_weights=None if folder else cfg.encoder_weights)
            if folder:
                weights, blob = read_checkpoint(folder)
                model.load_state_dict(weights)
                state = LoopState.from_dict(blob["loop"])
                log.info("rank %d resumes from step %d (epoch %d, %d steps into it)",
                         self.rank, state.step, state.epoch, state.step_in_epoch)
        state.attempt_start_steps.append(state.step)
        model.to(self.device)
        find_unused = self.world > 1 and has_unused_parameters(model, self.device)
        if self.device.type == "cuda" and cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model = session.prepare_model(model, find_unused)
        stepper = Stepper(model, cfg, total_steps=self.n_steps * cfg.epochs, device=self.device)
        if blob is not None:
            stepper.load_state_dict(blob)
            restore_rng_state(blob)
        stepper.train_mode()
        return model, stepper, state

    # ------------------------------------------------------------ scoring and recording
    def validate_real(self) -> dict:
        """Each real set's mean metrics (all ranks' photos), as ``val_<label>_<metric>`` columns,
        plus the pooled ``select_on`` and IoU means over the photos of the ``select: true``
        sources (``_real_select``, ``_real_iou``)."""
        sums = self.real_val(self.stepper, self.cfg.val_batch_size)
        flat = _all_reduce([sums[label][k] for label in self.labels for k in VAL_SUMS], self.device)
        cols, pooled, pooled_iou, total = {}, 0.0, 0.0, 0.0
        for i, label in enumerate(self.labels):
            got = dict(zip(VAL_SUMS, flat[i * len(VAL_SUMS):(i + 1) * len(VAL_SUMS)]))
            for m in REAL_METRICS:
                cols[f"val_{label}_{m}"] = _mean(got[m], got["n"])
            if label in self.selecting:
                pooled, pooled_iou, total = pooled + got[self.cfg.select_on], pooled_iou + got["iou"], total + got["n"]
        cols["_real_select"], cols["_real_iou"] = _mean(pooled, total), _mean(pooled_iou, total)
        return cols

    def score_of(self, row: dict) -> float:
        """Higher is better: the ``select_on`` metric on the real sets when given, else on the
        synthetic split, else minus the training loss."""
        value = row.pop("_real_select", None) if self.labels else row.get(f"val_{self.cfg.select_on}")
        if value is None:
            return -(row.get("train_loss") or 0.0)
        return value if SELECT_METRICS[self.cfg.select_on] == "max" else -value

    def record(self, row: dict) -> tuple[float, bool]:
        """Score ``row``, keep it in the history; rank 0 writes the CSV, the curve and, when it
        is the best so far, best/ (what eval, export and serve load)."""
        cfg, state = self.cfg, self.state
        score = self.score_of(row)
        iou = row.pop("_real_iou", None) if self.labels else row.get("val_iou")  # on the data score_of used
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_iou, state.best_step = score, iou, state.step
        row.update(score=score, best=improved)
        state.history.append(row)
        if self.rank == 0:
            if improved:
                save_model_folder(io.join(cfg.out, "best"), self.stepper.eval_model, model_card(cfg, state, row), dump_config(cfg))
            write_metrics_csv(state.history, io.join(cfg.out, "metrics.csv"), self.labels)
            plot_learning_curve(state.history, io.join(cfg.out, "learning_curve.png"), self.labels)
        return score, improved

    def report(self, metrics: dict, with_checkpoint: bool) -> None:
        """Every rank reports (a barrier); rank 0 attaches a resumable checkpoint when asked."""
        if not with_checkpoint or self.rank != 0:
            self.session.report(metrics)
            return
        state = self.state
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(tmp, self.model, self.stepper, self.cfg, state, metrics)
            self.session.report(metrics, folder=tmp, name=f"checkpoint_step{state.step:07d}_epoch{state.epoch:03d}"
                                                          f"_attempt{len(state.attempt_start_steps)}")  # unique across restarts

    # ------------------------------------------------------------ the steps
    def train_epoch(self, epoch: int) -> EpochStats:
        """Optimizer steps until the epoch's ``n_steps``, the shard's end or the time budget."""
        cfg, state = self.cfg, self.state
        self.train_aug.epoch = epoch
        pools = self.session.batches("train", pool_rows(cfg), self.train_aug, prefetch_batches=1, epoch=epoch)
        batches: Iterator = shuffled_batches(pools, cfg.batch_size, cfg.seed, epoch, self.rank)
        stats = EpochStats(loss_sum=torch.zeros((), device=self.device))
        while state.step_in_epoch < self.n_steps and not self.out_of_time:
            if not self.accumulate(batches, stats):
                self.stepper.optimizer.zero_grad(set_to_none=True)
                log.warning("epoch %d: the shard ran out after %d of %d steps", epoch + 1, state.step_in_epoch, self.n_steps)
                break
            self.stepper.optimizer_step()
            state.step, state.step_in_epoch, stats.steps_done = state.step + 1, state.step_in_epoch + 1, stats.steps_done + 1
            self.after_step(epoch, stats)
        del batches
        stats.train_s = time.perf_counter() - stats.t0
        return stats

    def accumulate(self, batches: Iterator, stats: EpochStats) -> bool:
        """``grad_accum`` micro-steps; False when the shard runs out first (equal shards make
        this rare; every rank sees the same count)."""
        for micro in range(self.cfg.grad_accum):
            batch = next(batches, None)
            if batch is None:
                return False
            if stats.first_batch_s is None:
                stats.first_batch_s = time.perf_counter() - stats.t0
            stats.loss_sum += self.stepper.micro_step(batch, sync=micro == self.cfg.grad_accum - 1)
            stats.loss_n += 1
        return True

    def after_step(self, epoch: int, stats: EpochStats) -> None:
        """The progress file, the time budget, and the mid-epoch validation and checkpoint when due."""
        cfg, state = self.cfg, self.state
        if self.rank == 0:  # the driver's progress bar reads it (throttled to one write every 2 s)
            console.write_progress(io.join(cfg.out, PROGRESS_FILE), state.step, self.n_steps * cfg.epochs,
                                   f"epoch {epoch + 1}/{cfg.epochs}")
        self.check_budget(epoch)
        mid_epoch = state.step_in_epoch < self.n_steps
        if self.real_val and cfg.val_every_steps and state.step % cfg.val_every_steps == 0 and mid_epoch:
            row = {"epoch": epoch + (state.step_in_epoch / self.n_steps), "step": state.step, "kind": "step",
                   "train_loss": stats.train_loss, "lr": self.stepper.lr, **self.validate_real()}
            _, improved = self.record(row)
            if self.rank == 0:
                log.info("step %d: %s%s", state.step, _real_summary(row, self.labels), " (best so far)" if improved else "")
        if state.step % cfg.checkpoint_every_steps == 0 and mid_epoch:
            self.report({"step": state.step, "epoch": epoch, "train_loss": stats.train_loss,
                         SELECT_SCORE_KEY: STEP_CHECKPOINT_SCORE, "attempt_start_steps": list(state.attempt_start_steps)},
                        with_checkpoint=True)

    def check_budget(self, epoch: int) -> None:
        """The schedule's next step follows the ranks' mean elapsed share; all ranks stop together."""
        if self.deadline is None:
            return
        now = time.perf_counter()
        late, share = _all_reduce([float(now > self.deadline), 1.0 - (self.deadline - now) / self.budget_s], self.device)
        self.out_of_time, self.stepper.time_progress = late > 0, min(1.0, share / self.world)
        if self.out_of_time and self.rank == 0:
            log.warning("time_budget_min=%s spent at step %d (epoch %d, %d of %d steps): stopping",
                        self.cfg.time_budget_min, self.state.step, epoch + 1, self.state.step_in_epoch, self.n_steps)

    def end_epoch(self, epoch: int, stats: EpochStats) -> None:
        """Validate on the synthetic split (and the real sets), record the epoch's row, report it
        with a checkpoint."""
        cfg, state = self.cfg, self.state
        val_batches = self.session.batches("val", cfg.batch_size, self.val_aug)
        val = validate(self.stepper, val_batches) if val_batches is not None else dict.fromkeys(VAL_SUMS, 0.0)
        tl_sum, tl_n, vn, vloss, viou, vmae, vssim = _all_reduce(
            [float(stats.loss_sum), float(stats.loss_n), val["n"], val["loss"], val["iou"], val["mae"], val["ssim_box"]],
            self.device)
        row = {"epoch": epoch + 1, "step": state.step, "kind": "epoch", "train_loss": _mean(tl_sum, tl_n),
               "val_loss": _mean(vloss, vn), "val_iou": _mean(viou, vn), "val_mae": _mean(vmae, vn),
               "val_ssim_box": _mean(vssim, vn), "lr": self.stepper.lr,
               "samples_per_s": stats.steps_done * cfg.batch_size * cfg.grad_accum * self.world / max(stats.train_s, 1e-9),
               "train_s": stats.train_s, "first_batch_s": stats.first_batch_s or 0.0,
               "attempt": len(state.attempt_start_steps)}
        if self.real_val:
            row.update(self.validate_real())
        row["epoch_s"] = time.perf_counter() - stats.t0
        state.epoch, state.step_in_epoch = epoch + 1, 0
        score, improved = self.record(row)
        if self.rank == 0:
            log.info("epoch %d/%d step %d: train loss %.4f, synthetic val IoU %s, SSIM %s%s, %.1f samples/s%s", epoch + 1,
                     cfg.epochs, state.step, row["train_loss"] or float("nan"), row["val_iou"], row["val_ssim_box"],
                     (", " + _real_summary(row, self.labels)) if self.labels else "", row["samples_per_s"],
                     " (best so far)" if improved else "")
        metrics = {**row, SELECT_SCORE_KEY: score, "best_iou": state.best_iou, "best_score": state.best_score,
                   "best_step": state.best_step, "attempt_start_steps": list(state.attempt_start_steps)}
        self.report({k: v for k, v in metrics.items() if v is not None}, with_checkpoint=True)

    def save_last(self) -> None:
        """The weights at the end of the budget (EMA when on), whatever best/ chose: what ablations compare."""
        if self.rank == 0:
            history = self.state.history
            save_model_folder(io.join(self.cfg.out, "last"), self.stepper.eval_model,
                              model_card(self.cfg, self.state, history[-1] if history else None), dump_config(self.cfg))


def train_loop(cfg: TrainConfig, n_steps: int, session: WorkerSession) -> None:
    """One worker: resume from the session's checkpoint, train ``n_steps`` optimizer steps per
    epoch on its shard, validate, report (:class:`WorkerRun`'s steps). Only rank 0 writes files."""
    cv2.setNumThreads(1)  # augmentation runs between steps: OpenCV's pool would fight torch's threads
    torch.set_num_threads(cfg.threads)
    if cfg.malloc == "tuned":
        malloc.tune()  # a Ray worker started with malloc.ENV already; a local run gets the thresholds here
    run = WorkerRun(cfg, n_steps, session)
    for epoch in range(run.state.epoch, cfg.epochs):
        if run.out_of_time:
            break
        run.end_epoch(epoch, run.train_epoch(epoch))
    run.save_last()
