"""The training loop, plain torch: data decoding and augmentation, loss, optimizer, one worker's
epochs. Ray appears only in :func:`train_loop_per_worker` (dataset shard, checkpoint, report).

Data flow: parquet rows -> :func:`segsynth.pipeline.train.decode_samples` (Ray Data tasks,
torch-free: split by cutout, mixing copies, decode, fit to ``size``) ->
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
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from segsynth import io
from segsynth.model import ModelSpec, build_model, preprocessing, save_model_folder, to_input
from segsynth.rng import rng_for, stable_hash

if TYPE_CHECKING:
    from segsynth.pipeline.train import AugmentConfig, TrainConfig

log = logging.getLogger(__name__)

SCORE_KEY = "checkpoint_score"  # Ray keeps the best checkpoints by this: validation IoU per epoch
STEP_CHECKPOINT_SCORE = -1e9  # mid-epoch checkpoints are for resuming, never "the best"
STATE_FILE = "state.pt"


# ---------------------------------------------------------------- augmentation (batch loader)
def augment_sample(image: np.ndarray, mask: np.ndarray, aug: "AugmentConfig",
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random square crop (resized back), flips, colour jitter, JPEG re-compression.
    ``(S, S, 3) uint8, (S, S) uint8`` in and out."""
    size = image.shape[0]
    side = int(round(size * rng.uniform(aug.crop_min, 1.0)))
    if side < size:
        y0, x0 = rng.integers(0, size - side + 1, size=2)
        image = cv2.resize(image[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_LINEAR)
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


class Augmenter:
    """Batch collation: ``{key, image, mask}`` numpy -> ``{"image": (N, S, S, 3) uint8, "mask":
    (N, 1, S, S) uint8}`` tensors, augmenting each sample when ``train``. Set ``epoch`` before
    each epoch: a sample's augmentation depends on ``(seed, epoch, key)`` only."""

    def __init__(self, aug: "AugmentConfig", seed: int, train: bool = True):
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


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.01) -> float:
    """Linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Stepper:
    """Optimizer, schedule, AMP and gradient accumulation around a (possibly DDP) model.

    ``micro_step`` runs forward/backward on one micro-batch; ``optimizer_step`` applies the
    accumulated gradients. AMP (bf16/fp16) and channels_last apply on CUDA only.
    """

    def __init__(self, model: torch.nn.Module, cfg: "TrainConfig", total_steps: int, device: torch.device):
        self.model, self.cfg, self.device = model, cfg, device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
        cuda = device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if cuda else None
        self.channels_last = cuda and cfg.channels_last
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_input(batch["image"], self.device, self.channels_last)
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

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def validate(stepper: Stepper, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Sums over validation samples: ``n, loss, iou, mae, ssim_box`` (per-sample metrics from
    :mod:`segsynth.metrics`, on the truth's box for SSIM). Reduce with the ``n`` of all workers."""
    from segsynth.metrics import iou, mae, ssim_box

    model, cfg = stepper.model, stepper.cfg
    sums = {"n": 0.0, "loss": 0.0, "iou": 0.0, "mae": 0.0, "ssim_box": 0.0}
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            x, y = stepper.inputs(batch)
            with stepper.autocast():
                logits = model(x).float()
            n = logits.shape[0]
            sums["loss"] += float(seg_loss(logits, y, cfg.loss.bce_weight, cfg.loss.dice_weight)) * n
            probs = torch.sigmoid(logits)[:, 0].cpu().numpy()
            truth = batch["mask"][:, 0].cpu().numpy()
            for p, g in zip(probs, truth):
                sums["iou"] += iou(p, g)
                sums["mae"] += mae(p, g)
                sums["ssim_box"] += ssim_box(p, g)
            sums["n"] += n
    model.train()
    return sums


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
    best_val_iou: float | None = None
    history: list[dict] = field(default_factory=list)
    attempt_start_steps: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def model_spec(cfg: "TrainConfig") -> ModelSpec:
    return ModelSpec(encoder_name=cfg.encoder_name, decoder_pyramid_channels=cfg.decoder_pyramid_channels,
                     decoder_segmentation_channels=cfg.decoder_segmentation_channels)


def model_card(cfg: "TrainConfig", state: LoopState, metrics: dict | None) -> dict:
    from segsynth.config import to_dict

    return {
        "name": cfg.name,
        "encoder_name": cfg.encoder_name,
        "model": to_dict(model_spec(cfg)),
        "preprocessing": preprocessing(cfg.size),
        "output": "logits",
        "metrics": metrics or {},
        "step": state.step,
        "epoch": state.epoch,
        "config": to_dict(cfg),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_checkpoint(folder: str, model: torch.nn.Module, stepper: Stepper, cfg: "TrainConfig",
                     state: LoopState, metrics: dict | None) -> None:
    """A resumable checkpoint: ``state.pt`` (optimizer, scheduler, loop state) beside the
    standalone model folder files (``model.pt``, ``model_card.json``, ``config.yaml``)."""
    from segsynth.config import dump_config

    save_model_folder(folder, model, model_card(cfg, state, metrics), dump_config(cfg))
    buf = _pyio.BytesIO()
    torch.save({**stepper.state_dict(), "loop": state.as_dict()}, buf)
    io.write_bytes(io.join(folder, STATE_FILE), buf.getvalue())


def read_checkpoint(folder: str) -> tuple[dict, dict]:
    """``(model state dict, training state)`` of a checkpoint written by :func:`write_checkpoint`."""
    from segsynth.model import MODEL_FILE

    weights = torch.load(_pyio.BytesIO(io.read_bytes(io.join(folder, MODEL_FILE))), map_location="cpu", weights_only=True)
    state = torch.load(_pyio.BytesIO(io.read_bytes(io.join(folder, STATE_FILE))), map_location="cpu", weights_only=True)
    return weights, state


METRIC_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_iou", "val_mae", "val_ssim_box", "lr",
                  "samples_per_s", "train_s", "first_batch_s", "epoch_s", "attempt")


def write_metrics_csv(history: list[dict], path: str) -> None:
    buf = _pyio.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    io.write_bytes(path, buf.getvalue().encode())


def plot_learning_curve(history: list[dict], path: str) -> None:
    """Train/validation loss and validation IoU/SSIM per epoch -> PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is missing (pip install matplotlib): no learning curve")
        return
    ep = [r["epoch"] for r in history]

    def col(key):
        return [r.get(key) if r.get(key) is not None else float("nan") for r in history]

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, col("train_loss"), "o-", label="train loss")
    a.plot(ep, col("val_loss"), "s-", label="validation loss")
    a.set_xlabel("epoch"), a.set_ylabel("BCE + Dice"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, col("val_iou"), "o-", label="IoU")
    b.plot(ep, col("val_ssim_box"), "s-", label="SSIM (truth box)")
    b.plot(ep, col("val_mae"), "^-", label="MAE")
    b.set_xlabel("epoch"), b.set_ylim(0, 1), b.legend(), b.grid(alpha=0.3)
    b.set_title("validation")
    fig.tight_layout()
    buf = _pyio.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    io.write_bytes(path, buf.getvalue())


def pool_rows(cfg: "TrainConfig") -> int:
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


# ---------------------------------------------------------------- the Ray Train worker
def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: resume if Ray has a checkpoint, train ``steps_per_epoch`` optimizer
    steps per epoch on its dataset shard, validate, report. Only rank 0 writes files."""
    import ray.train
    import ray.train.torch
    from ray.data.collate_fn import NumpyBatchCollateFn

    from segsynth.config import dump_config

    cfg: TrainConfig = config["cfg"]
    n_steps: int = config["steps_per_epoch"]
    torch.set_num_threads(cfg.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    state, blob = LoopState(), None
    checkpoint = ray.train.get_checkpoint()
    torch.manual_seed(stable_hash(cfg.seed, "init") % 2**63)
    model = build_model(model_spec(cfg), encoder_weights=None if checkpoint else cfg.encoder_weights)
    if checkpoint:
        with checkpoint.as_directory() as folder:
            weights, blob = read_checkpoint(folder)
        model.load_state_dict(weights)
        state = LoopState(**blob["loop"])
        log.info("rank %d resumes from step %d (epoch %d, %d steps into it)", rank, state.step, state.epoch, state.step_in_epoch)
    state.attempt_start_steps.append(state.step)
    model.to(device)
    find_unused = world > 1 and has_unused_parameters(model, device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": find_unused})
    stepper = Stepper(model, cfg, total_steps=n_steps * cfg.epochs, device=device)
    if blob is not None:
        stepper.load_state_dict(blob)

    class Collate(NumpyBatchCollateFn):
        def __init__(self, augmenter: Augmenter):
            super().__init__()
            self.augmenter = augmenter

        def __call__(self, batch):
            return self.augmenter(batch)

    train_aug, val_aug = Augmenter(cfg.augment, cfg.seed, train=True), Augmenter(cfg.augment, cfg.seed, train=False)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if config.get("n_val") else None
    experiment = io.join(cfg.out, cfg.name)

    def report(metrics: dict, with_checkpoint: bool) -> None:
        if not with_checkpoint or rank != 0:  # every rank reports (a barrier); rank 0 attaches the files
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(tmp, model, stepper, cfg, state, metrics)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"checkpoint_step{state.step:07d}_epoch{state.epoch:03d}"
                                                 f"_attempt{len(state.attempt_start_steps)}")  # unique across restarts

    for epoch in range(state.epoch, cfg.epochs):
        train_aug.epoch = epoch
        pools = train_shard.iter_torch_batches(batch_size=pool_rows(cfg), collate_fn=Collate(train_aug), prefetch_batches=1)
        batches: Iterator = shuffled_batches(pools, cfg.batch_size, cfg.seed, epoch, rank)
        loss_sum, loss_n, t0, steps_done = torch.zeros((), device=device), 0, time.perf_counter(), 0
        first_batch_s = None  # the iterator's start (dataset execution, first fetch), apart from the steps
        exhausted = False
        while state.step_in_epoch < n_steps and not exhausted:
            for micro in range(cfg.grad_accum):
                batch = next(batches, None)
                if batch is None:  # equal shards make this rare; every rank sees the same count
                    exhausted = True
                    break
                if first_batch_s is None:
                    first_batch_s = time.perf_counter() - t0
                loss_sum += stepper.micro_step(batch, sync=micro == cfg.grad_accum - 1)
                loss_n += 1
            if exhausted:
                stepper.optimizer.zero_grad(set_to_none=True)
                log.warning("epoch %d: the shard ran out after %d of %d steps", epoch + 1, state.step_in_epoch, n_steps)
                break
            stepper.optimizer_step()
            state.step, state.step_in_epoch, steps_done = state.step + 1, state.step_in_epoch + 1, steps_done + 1
            if cfg.fail_at_step == state.step and rank == 0:
                marker = io.join(experiment, f".chaos-failed-at-{state.step}")
                if not io.exists(marker):  # fail once: the restarted attempt must get past this step
                    io.write_bytes(marker, b"")
                    raise RuntimeError(f"chaos test: rank 0 fails at step {state.step} (fail_at_step)")
            if state.step % cfg.checkpoint_every_steps == 0 and state.step_in_epoch < n_steps:
                report({"step": state.step, "epoch": epoch, "train_loss": float(loss_sum) / max(loss_n, 1),
                        SCORE_KEY: STEP_CHECKPOINT_SCORE, "attempt_start_steps": list(state.attempt_start_steps)},
                       with_checkpoint=True)
        del batches
        train_s = time.perf_counter() - t0
        val = validate(stepper, val_shard.iter_torch_batches(batch_size=cfg.batch_size, collate_fn=Collate(val_aug))) \
            if val_shard is not None else {"n": 0.0, "loss": 0.0, "iou": 0.0, "mae": 0.0, "ssim_box": 0.0}
        tl_sum, tl_n, vn, vloss, viou, vmae, vssim = _all_reduce(
            [float(loss_sum), float(loss_n), val["n"], val["loss"], val["iou"], val["mae"], val["ssim_box"]], device)
        row = {"epoch": epoch + 1, "step": state.step, "train_loss": _mean(tl_sum, tl_n), "val_loss": _mean(vloss, vn),
               "val_iou": _mean(viou, vn), "val_mae": _mean(vmae, vn), "val_ssim_box": _mean(vssim, vn),
               "lr": stepper.lr, "samples_per_s": steps_done * cfg.batch_size * cfg.grad_accum * world / max(train_s, 1e-9),
               "train_s": train_s, "first_batch_s": first_batch_s or 0.0, "epoch_s": time.perf_counter() - t0, "attempt": len(state.attempt_start_steps)}
        state.history.append(row)
        state.epoch, state.step_in_epoch = epoch + 1, 0
        score = row["val_iou"] if row["val_iou"] is not None else -(row["train_loss"] or 0.0)
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_val_iou = score, row["val_iou"]
        if rank == 0:
            log.info("epoch %d/%d step %d: train loss %.4f, val IoU %s, SSIM %s, %.1f samples/s", epoch + 1, cfg.epochs,
                     state.step, row["train_loss"] or float("nan"), row["val_iou"], row["val_ssim_box"], row["samples_per_s"])
            write_metrics_csv(state.history, io.join(cfg.out, "metrics.csv"))
            plot_learning_curve(state.history, io.join(cfg.out, "learning_curve.png"))
            if improved:  # the standalone best folder: what eval, export and serve load
                save_model_folder(io.join(cfg.out, "best"), model, model_card(cfg, state, row), dump_config(cfg))
        metrics = {**row, SCORE_KEY: score, "best_val_iou": state.best_val_iou,
                   "attempt_start_steps": list(state.attempt_start_steps)}
        report({k: v for k, v in metrics.items() if v is not None}, with_checkpoint=True)
