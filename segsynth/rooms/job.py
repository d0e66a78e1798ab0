"""``segsynth rooms``: empty rooms from Stable Diffusion -> a background library (Ray Data).

The stage is three Ray Data steps::

    range(count) --prompts (CPU tasks)--> RoomGenerator actors (GPU, one pipeline each) --> gate

and writes ``OUT/backgrounds.parquet`` (``bg_id, image`` JPEG bytes ``, width, height, prompt,
negative_prompt, seed, model, phash``), optional ``OUT/jpg/<bg_id>.jpg``, ``OUT/config.yaml`` and
``OUT/summary.json`` (``dropped_blank``, ``dropped_duplicate``, throughput).

Rooms generated on the fly inside ``segsynth synth`` (``rooms_per_shard``) use the same
:class:`RoomsConfig` and :class:`segsynth.rooms.RoomGenerator`, as a GPU stage streaming into the
CPU compositing stage (``segsynth.synth.job.ShardRooms``).
"""
from __future__ import annotations

import json
import logging
import time


from segsynth import console, io
from segsynth.config import save_config
from segsynth.rooms.config import LIBRARY_COLUMNS, LIBRARY_FILENAME, RoomsConfig
from segsynth.rooms.generator import resolve_model
from segsynth.rooms.library import write_library
from segsynth.rooms.prompts import dedupe, prompt_batch

log = logging.getLogger(__name__)


def prompt_dataset(cfg: RoomsConfig, start: int = 0):
    """``cfg.count`` prompt rows (``bg_id, prompt, negative_prompt, seed, index``), built by
    cheap CPU tasks from ``(cfg.seed, index)``; no prompt list is held on the driver."""
    import ray.data

    return ray.data.range(cfg.count).map_batches(
        prompt_batch, fn_kwargs={"prompts": cfg.prompts, "seed": cfg.seed, "start": start},
                          batch_format="numpy", num_cpus=0.25)


def room_stage(prompts, cfg: RoomsConfig):
    """The GPU diffusion stage: a dataset of prompt rows -> raw room rows (nothing dropped).

    ``prompts``: a ``ray.data.Dataset`` with ``prompt, negative_prompt, seed, index`` (and
    optionally ``bg_id``), e.g. :func:`prompt_dataset`. Runs :class:`segsynth.rooms.RoomGenerator`
    on an actor pool of ``cfg.workers`` actors, each reserving ``cfg.num_gpus`` GPUs and
    ``cfg.num_cpus`` CPUs and loading the pipeline once; ``cfg.batch_size`` prompts per call.
    Output rows: ``bg_id, image, width, height, prompt, negative_prompt, seed, model, index,
    phash, blank``.
    """
    import ray.data

    from segsynth.rooms.generator import RoomGenerator

    return prompts.map_batches(
        RoomGenerator,
        fn_constructor_kwargs=dict(
            model=cfg.model, size=cfg.size, steps=cfg.steps, guidance=cfg.guidance_scale,
            device=cfg.actor_device, dtype=cfg.dtype, batch_size=cfg.batch_size, run_seed=cfg.seed,
            jpeg_quality=cfg.jpeg_quality, blank_min_std=cfg.blank_min_std, blank_black_level=cfg.blank_black_level),
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.workers),
        num_gpus=cfg.num_gpus,
        num_cpus=cfg.num_cpus,
    )


# --------------------------------------------------------------------------- the stage
def run(cfg: RoomsConfig, address: str | None = None) -> dict:
    """Generate ``cfg.count`` rooms and write the background library to ``cfg.out``.

    Blank rooms are dropped as they come; near duplicates are dropped over the whole library in
    index order (deterministic for a given seed and model). Returns the summary (also written
    to ``OUT/summary.json``).
    """
    from segsynth.ray_env import init_ray

    resolve_model(cfg.model)  # fail before Ray starts when the model cannot be found
    io.require_output(cfg.out)
    init_ray(address)
    t0 = time.time()
    rows = room_stage(prompt_dataset(cfg), cfg)
    kept: list[dict] = []
    generated = dropped_blank = 0
    bar = console.progress(total=cfg.count, desc="rooms", unit="rooms")
    for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
        bar.update(len(batch["bg_id"]))
        for i in range(len(batch["bg_id"])):
            generated += 1
            if bool(batch["blank"][i]):
                dropped_blank += 1
                log.debug("dropped blank room %s (prompt %r)", batch["bg_id"][i], str(batch["prompt"][i])[:60])
                continue
            kept.append({k: batch[k][i] for k in LIBRARY_COLUMNS + ("index",)})
    bar.close()
    seconds = time.time() - t0
    kept.sort(key=lambda r: int(r["index"]))
    flags = dedupe([int(r["phash"]) for r in kept], cfg.dedupe_max_distance)
    dropped_duplicate = flags.count(False)
    kept = [r for r, ok in zip(kept, flags) if ok]
    write_library(cfg, kept)
    save_config(cfg, cfg.out)
    summary = {
        "out": cfg.out,
        "library": io.join(cfg.out, LIBRARY_FILENAME),
        "model": cfg.model,
        "requested": cfg.count,
        "generated": generated,
        "kept": len(kept),
        "dropped_blank": dropped_blank,
        "dropped_duplicate": dropped_duplicate,
        "size": cfg.size,
        "steps": cfg.steps,
        "workers": cfg.workers,
        "num_gpus_per_worker": cfg.num_gpus,
        "seconds": round(seconds, 2),
        "backgrounds_per_second": round(generated / seconds, 4) if seconds > 0 else None,
    }
    io.write_bytes(io.join(cfg.out, "summary.json"), json.dumps(summary, indent=2).encode())
    log.debug("rooms: kept %d of %d (dropped %d blank, %d near duplicates) -> %s",
             len(kept), generated, dropped_blank, dropped_duplicate, summary["library"])
    return summary


