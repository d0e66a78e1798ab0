"""Training in this process, without Ray: :func:`train_loop` against a :class:`LocalSession`.

The same loop, model, augmentation, validation and outputs as ``segsynth train`` (which runs
the loop in Ray Train workers), for one worker on this machine: the ablations
(``benchmarks/recipe_ablation.py``) train many short variants and need every core for the
forward/backward pass, and tests exercise the loop's behaviours without starting Ray.

Rows are decoded once into memory (:func:`segsynth.train.data.decoded_locally`, as
``cache_decoded``) and every epoch draws a new permutation of all of them, so a batch mixes
products from the whole dataset rather than from a few neighbouring shards.

    cfg = load_config(TrainConfig, "configs/demo/train.yaml", ["epochs=1"])
    summary = run_local(cfg)     # the summary ``segsynth train`` writes, from this process
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from segsynth import io
from segsynth.config import save_config
from segsynth.rng import rng_for
from segsynth.train.config import TrainConfig
from segsynth.train.data import decoded_locally, plan, steps_per_epoch
from segsynth.train.loop import train_loop

log = logging.getLogger(__name__)

LATEST = "local_checkpoint"  # OUT/local_checkpoint: the latest checkpoint, what a rerun resumes from


class LocalSession:
    """:class:`segsynth.train.loop.WorkerSession` for one worker in this process (rank 0 of 1).

    ``batches("train", ..., epoch=E)`` serves epoch E's permutation of every decoded training row
    (from ``(seed, "local-order", E)``, so a resumed run orders its epochs as a whole one would); checkpoints replace
    ``OUT/local_checkpoint``, which a later run with the same ``out`` resumes from.
    """

    rank, world = 0, 1

    def __init__(self, cfg: TrainConfig, rows: dict[str, list[dict]] | None = None, device: str | None = None):
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu"))
        self.rows = rows if rows is not None else {role: decoded_locally(cfg, role) for role in ("train", "val")}
        if cfg.val_max_samples is not None:
            self.rows["val"] = self.rows["val"][:cfg.val_max_samples]
        self.reports: list[dict] = []
        self.latest = io.join(cfg.out, LATEST)

    @contextlib.contextmanager
    def resume_folder(self):
        yield self.latest if Path(self.latest, "state.pt").is_file() else None

    def prepare_model(self, model: torch.nn.Module, find_unused_parameters: bool) -> torch.nn.Module:
        return model.to(self.device)

    def batches(self, role: str, batch_size: int, collate: Callable, prefetch_batches: int = 1,
                epoch: int = 0) -> Iterator | None:
        rows = self.rows.get(role) or []
        if not rows:
            return None
        if role == "train":
            order = rng_for(self.cfg.seed, "local-order", epoch).permutation(len(rows))
        else:
            order = np.arange(len(rows))
        return self._chunks(rows, order, batch_size, collate)

    @staticmethod
    def _chunks(rows: list[dict], order: np.ndarray, batch_size: int, collate: Callable) -> Iterator:
        for start in range(0, len(order), batch_size):
            chunk = [rows[i] for i in order[start:start + batch_size]]
            yield collate({"key": np.asarray([r["key"] for r in chunk], dtype=object),
                           "image": np.stack([r["image"] for r in chunk]),
                           "mask": np.stack([r["mask"] for r in chunk])})

    def report(self, metrics: dict, folder: str | None = None, name: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if folder:  # written to a temp folder by the loop: keep it as the latest, atomically enough
            tmp = Path(self.latest + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(folder, tmp)
            shutil.rmtree(self.latest, ignore_errors=True)
            tmp.rename(self.latest)


def run_local(cfg: TrainConfig, rows: dict[str, list[dict]] | None = None) -> dict:
    """Train ``cfg`` in this process (one worker; ``num_workers`` must be 1) and write what
    ``segsynth train`` writes (``config.yaml``, ``best/``, ``metrics.csv``, the curve,
    ``summary.json``). ``rows``: decoded ``{"train": [...], "val": [...]}`` rows to reuse
    across runs of one dataset (what :func:`decoded_locally` returns); read here when None."""
    if cfg.num_workers != 1:
        raise ValueError(f"run_local trains one worker in this process; num_workers={cfg.num_workers}: "
                         "use segsynth.train.job.run (Ray Train) for data-parallel training")
    for i, source in enumerate(cfg.data):
        io.require_input(source.path, f"data[{i}].path")
    counts = plan(cfg)
    n_steps = steps_per_epoch(cfg, counts.train)
    io.mark_incomplete(cfg.out)
    io.makedirs(cfg.out)
    save_config(cfg, cfg.out)
    session = LocalSession(cfg, rows)
    started = time.perf_counter()
    train_loop(cfg, n_steps, session)
    last = session.reports[-1] if session.reports else _finished(session.latest)
    summary = {
        "out": cfg.out, "best": io.join(cfg.out, "best") if io.exists(io.join(cfg.out, "best", "model_card.json")) else None,
        "select_on": cfg.select_on, "best_score": last.get("best_score"), "best_iou": last.get("best_iou"),
        "best_step": last.get("best_step"),
        "normalization": cfg.resolved_normalization, "epochs": last.get("epoch"), "steps": last.get("step"),
        "train_rows_per_epoch": counts.train, "val_rows": counts.val, "steps_per_epoch": n_steps,
        "fit_wall_s": time.perf_counter() - started, "backend": "local",
        "metrics_csv": io.join(cfg.out, "metrics.csv"), "learning_curve": io.join(cfg.out, "learning_curve.png"),
        "sources": list(counts.per_source),
        "final_metrics": {k: v for k, v in last.items() if isinstance(v, (int, float))},
    }
    return io.mark_complete(cfg.out, summary, default=str)


def _finished(folder: str) -> dict:
    """What a run that had nothing left to train reports: its latest checkpoint's loop state."""
    from segsynth.train.loop import read_checkpoint

    if not Path(folder, "state.pt").is_file():
        return {}
    loop = read_checkpoint(folder)[1]["loop"]
    return {"step": loop["step"], "epoch": loop["epoch"], "best_score": loop["best_score"], "best_iou": loop.get("best_iou"),
            "best_step": loop["best_step"]}
