"""``segsynth train``: the FPN model on synthetic (and real) data with Ray Train DDP.

    cfg = load_config(TrainConfig, "configs/demo/train.yaml", ["epochs=2"])
    summary = run(cfg)          # {"best": "OUT/best", "best_score": ..., "best_iou": ..., ...}

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
import logging
import os
import time


from segsynth import console, io
from segsynth.config import save_config
from segsynth.train import malloc
from segsynth.train.config import TrainConfig
from segsynth.train.data import decode_samples, decoded_locally, index_source, plan, shard_files, steps_per_epoch, synthetic_columns
from segsynth.train.loop import PROGRESS_FILE, SELECT_SCORE_KEY, train_loop

log = logging.getLogger(__name__)


class RaySession:
    """:class:`segsynth.train.loop.WorkerSession` inside a Ray Train worker: its rank, device,
    dataset shards, the checkpoint Ray restored, and ``ray.train.report``."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    @contextlib.contextmanager
    def resume_folder(self):
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield folder

    def prepare_model(self, model, find_unused_parameters: bool):
        import ray.train.torch

        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters})

    def batches(self, role: str, batch_size: int, collate, prefetch_batches: int = 1, epoch: int = 0):
        # ``epoch`` unused: the shard's blocks come as Ray Data reads them; the loop's
        # shuffled_batches reorders their rows by (seed, epoch)
        import ray.train
        from ray.data.collate_fn import NumpyBatchCollateFn

        class Collate(NumpyBatchCollateFn):  # Ray's batch loader calls it in its prefetch thread
            def __call__(self, batch):
                return collate(batch)

        try:
            shard = ray.train.get_dataset_shard(role)
        except KeyError:
            return None
        if shard is None:
            return None
        return iter(shard.iter_torch_batches(batch_size=batch_size, collate_fn=Collate(), prefetch_batches=prefetch_batches))

    def report(self, metrics: dict, folder: str | None = None, name: str | None = None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name if folder else None)


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker: :func:`segsynth.train.loop.train_loop` in a :class:`RaySession`."""
    train_loop(config["cfg"], config["steps_per_epoch"], RaySession())


def build_datasets(cfg: TrainConfig):
    """``(train, val)`` Ray Datasets of ``{key, image (S, S, 3) uint8, mask (S, S) uint8}`` rows.

    Streaming (default): parquet shards and labelled folders are read and decoded by Ray Data
    tasks every epoch, so a dataset larger than memory streams through. ``cache_decoded``: small
    sets are decoded once, here, and held in the object store (no per-epoch decode, no tasks).
    """
    import ray.data

    if cfg.cache_decoded:
        train, val = (ray.data.from_items(decoded_locally(cfg, role)) for role in ("train", "val"))
        return train, val.limit(cfg.val_max_samples) if cfg.val_max_samples is not None else val
    splits = {"train": [], "val": []}
    for s in cfg.data:
        if s.kind == "synthetic":
            base = ray.data.read_parquet(shard_files(s.path)).select_columns(
                synthetic_columns(s.path, ["sample_id", "cutout_id", "image", "mask"]))
        else:
            base = ray.data.from_items(index_source(s))
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
    val_data = tuple(dataclasses.replace(v, path=fix(v.path), name=v.label,
                                         stems=fix(v.stems) if v.stems and v.stems.lower().endswith(".csv") else v.stems)
                     for v in cfg.val_data)
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


def _checkpoint_uri(checkpoint, out: str) -> str | None:
    """Where a Ray Train checkpoint is, as a path segsynth opens: Ray gives the path on its
    filesystem (``bucket/key`` for ``storage_path=s3://bucket/...``); the scheme of ``out`` is put back."""
    if checkpoint is None:
        return None
    scheme = out.split("://", 1)[0] + "://" if io.is_uri(out) else ""
    return checkpoint.path if checkpoint.path.startswith(scheme) else scheme + checkpoint.path


def run(cfg: TrainConfig, address: str | None = None, worker_loop=train_loop_per_worker) -> dict:
    """Train with Ray Train; returns a summary (also written to ``OUT/summary.json``).

    ``worker_loop(config)``: what each Ray Train worker runs (tests inject failures with
    :func:`segsynth.testing.failing_train_loop`).
    """
    from segsynth.ray_env import init_ray

    for i, source in enumerate(cfg.data):  # before Ray starts: a wrong path fails in a second
        io.require_input(source.path, f"data[{i}].path")
    for i, source in enumerate(cfg.val_data):
        io.require_input(source.path, f"val_data[{i}].path", "folder")
    io.require_output(cfg.out)
    cfg = _absolute(cfg)
    counts = plan(cfg)
    n_steps = steps_per_epoch(cfg, counts.train)
    log.info("train rows per epoch %d, validation rows %d, %d steps per epoch x %d epochs on %d worker(s)",
             counts.train, counts.val, n_steps, cfg.epochs, cfg.num_workers)
    io.mark_incomplete(cfg.out)
    io.makedirs(cfg.out)
    save_config(cfg, cfg.out)
    init_ray(address)

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    train_ds, val_ds = build_datasets(cfg)
    datasets = {"train": train_ds}
    if counts.val > 0:
        datasets["val"] = val_ds
    resources = {"CPU": cfg.worker_cpus}
    if cfg.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": cfg, "steps_per_epoch": n_steps, "n_train": counts.train, "n_val": counts.val},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.name, storage_path=cfg.out,
            # glibc reads its malloc settings when the worker process starts (segsynth.train.malloc)
            worker_runtime_env={"env_vars": dict(malloc.ENV)} if cfg.malloc == "tuned" else None,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.num_to_keep,
                                                         checkpoint_score_attribute=SELECT_SCORE_KEY,
                                                         checkpoint_score_order="max")),
        datasets=datasets,
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
    )
    started = time.perf_counter()
    io.write_bytes(io.join(cfg.out, PROGRESS_FILE), b'{"step": 0, "total": 0}')  # not a previous run's
    with _pinned_ray_address(), console.FileProgress(io.join(cfg.out, PROGRESS_FILE), desc="train"):
        result = trainer.fit()
    fit_s = time.perf_counter() - started
    metrics = dict(result.metrics or {})
    scored = [(m.get(SELECT_SCORE_KEY, float("-inf")), _checkpoint_uri(c, cfg.out)) for c, m in (result.best_checkpoints or [])]
    best_dir = io.join(cfg.out, "best")
    summary = {
        "out": cfg.out,
        "best": best_dir if io.exists(io.join(best_dir, "model_card.json")) else None,
        "select_on": cfg.select_on,
        "selected_on": "val_data" if cfg.val_data else ("synthetic" if counts.val else "train_loss"),
        "best_score": metrics.get("best_score"),  # select_on (negated when lower is better) on selected_on
        "best_iou": metrics.get("best_iou"),  # best/'s IoU on selected_on (None for train_loss)
        "best_step": metrics.get("best_step"),
        "normalization": cfg.resolved_normalization,
        "epochs": metrics.get("epoch"),
        "steps": metrics.get("step"),
        "train_rows_per_epoch": counts.train,
        "val_rows": counts.val,
        "steps_per_epoch": n_steps,
        "fit_wall_s": fit_s,  # trainer.fit(): workers' start, data, steps, validation, checkpoints
        "resumed_from_steps": metrics.get("attempt_start_steps"),
        "latest_checkpoint": _checkpoint_uri(result.checkpoint, cfg.out),
        "best_checkpoint": max(scored)[1] if scored else None,  # Ray's copy, with the optimizer state
        "metrics_csv": io.join(cfg.out, "metrics.csv"),
        "learning_curve": io.join(cfg.out, "learning_curve.png"),
        "sources": list(counts.per_source),
        "final_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    return io.mark_complete(cfg.out, summary, default=str)

