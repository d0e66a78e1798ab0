"""``segsynth rooms``: empty rooms from Stable Diffusion -> a background library (Ray Data).

The stage is three Ray Data steps::

    prompt indices --prompts (CPU tasks)--> RoomGenerator actors (GPU, one pipeline each) --> gate

The ``count`` prompts are split into fixed parts of ``part_size`` (prompts ``i * part_size ..``).
As the rooms come in, the driver writes each complete part, blank rooms included, to
``OUT/parts/part-XXXXX.parquet`` (atomically); a re-run with the same ``out`` generates only the
parts not written (an ``out`` made with other output settings is refused). Then the parts are
combined into ``OUT/backgrounds.parquet`` (``bg_id, image`` JPEG bytes ``, width, height, prompt,
negative_prompt, seed, model, phash``; blank rooms dropped, near duplicates dropped over the
whole library in index order), optional ``OUT/jpg/<bg_id>.jpg``, ``OUT/config.yaml`` and, last,
``OUT/summary.json`` (counts over all parts: ``generated``, ``kept``, ``dropped_blank``,
``dropped_duplicate``; ``parts``, ``parts_written``, ``parts_skipped``; this run's throughput).
``OUT/parts`` stays, so a re-run of a finished ``out`` only combines the parts again;
``backgrounds: [OUT]`` in ``segsynth synth`` reads ``OUT/backgrounds.parquet`` alone.

Rooms generated on the fly inside ``segsynth synth`` (``rooms_per_shard``) use the same
:class:`RoomsConfig` and :class:`segsynth.rooms.RoomGenerator`, as a GPU stage streaming into the
CPU compositing stage (``segsynth.synth.job.ShardRooms``).
"""
from __future__ import annotations

import logging
import time
from typing import Sequence


from segsynth import console, io
from segsynth.config import check_resume_config, save_config
from segsynth.parts import plan_parts, written_parts
from segsynth.rooms.config import LIBRARY_FILENAME, RoomsConfig
from segsynth.rooms.generator import resolve_model
from segsynth.rooms.library import PART_SCHEMA, combine_parts, output_settings, write_room_part
from segsynth.rooms.prompts import prompt_batch

log = logging.getLogger(__name__)


def prompt_dataset(cfg: RoomsConfig, start: int = 0, indices: Sequence[int] | None = None):
    """Prompt rows (``bg_id, prompt, negative_prompt, seed, index``), built by cheap CPU tasks
    from ``(cfg.seed, index)``: prompts ``start .. start + cfg.count - 1``, or the prompts
    ``indices`` (the driver holds those numbers, no prompts)."""
    import ray.data

    ids = ray.data.range(cfg.count) if indices is None else ray.data.from_items([{"id": int(i)} for i in indices])
    return ids.map_batches(
        prompt_batch, fn_kwargs={"prompts": cfg.prompts, "seed": cfg.seed, "start": start if indices is None else 0},
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
    """Generate ``cfg.count`` rooms (the parts not written yet) and write the background library
    to ``cfg.out``.

    Blank rooms are dropped; near duplicates are dropped over the whole library in index order
    (deterministic for a given seed and model), whichever run made which part. Returns the
    summary (also written to ``OUT/summary.json``).
    """
    resolve_model(cfg.model)  # fail before Ray starts when the model cannot be found
    io.require_output(cfg.out)
    plan = plan_parts(cfg.count, cfg.part_size)
    done = written_parts(cfg.out) & set(range(len(plan)))
    if done:
        check_resume_config(cfg, cfg.out, output_settings, holds="room parts")
    io.mark_incomplete(cfg.out)
    save_config(cfg, cfg.out)
    pending = [i for i in range(len(plan)) if i not in done]
    log.info("rooms: %d prompts in %d parts of %d (%d already written) -> %s",
             cfg.count, len(plan), cfg.part_size, len(done), cfg.out)
    t0 = time.time()
    new_rooms = _generate(cfg, {i: plan[i] for i in pending}, address) if pending else 0
    seconds = time.time() - t0
    counts = combine_parts(cfg, len(plan))
    summary = {
        "out": cfg.out,
        "library": io.join(cfg.out, LIBRARY_FILENAME),
        "model": cfg.model,
        "requested": cfg.count,
        "generated": counts.generated,
        "kept": counts.kept,
        "dropped_blank": counts.dropped_blank,
        "dropped_duplicate": counts.dropped_duplicate,
        "parts": len(plan),
        "parts_written": len(pending),
        "parts_skipped": len(done),
        "size": cfg.size,
        "steps": cfg.steps,
        "workers": cfg.workers,
        "num_gpus_per_worker": cfg.num_gpus,
        "seconds": round(seconds, 2),  # this run's generation
        "backgrounds_per_second": round(new_rooms / seconds, 4) if new_rooms and seconds > 0 else None,
    }
    io.mark_complete(cfg.out, summary)
    log.debug("rooms: kept %d of %d (dropped %d blank, %d near duplicates) -> %s",
             counts.kept, counts.generated, counts.dropped_blank, counts.dropped_duplicate, summary["library"])
    return summary


def _generate(cfg: RoomsConfig, parts: dict[int, range], address: str | None) -> int:
    """Generate the prompts of ``parts`` (``{part: its prompt indices}``) on Ray; each part is
    written to ``OUT/parts`` as soon as all its rooms are in. Returns the rooms generated."""
    from segsynth.ray_env import init_ray

    init_ray(address)
    part_of = {i: p for p, indices in parts.items() for i in indices}
    rows = room_stage(prompt_dataset(cfg, indices=sorted(part_of)), cfg)
    waiting: dict[int, list[dict]] = {}  # rows of the parts not complete yet (they come in any order)
    generated = 0
    with console.progress(total=len(part_of), desc="rooms", unit="rooms") as bar:
        for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
            bar.update(len(batch["bg_id"]))
            for i in range(len(batch["bg_id"])):
                generated += 1
                if bool(batch["blank"][i]):
                    log.debug("blank room %s (prompt %r)", batch["bg_id"][i], str(batch["prompt"][i])[:60])
                part = part_of[int(batch["index"][i])]
                waiting.setdefault(part, []).append({k: batch[k][i] for k in PART_SCHEMA.names})
                if len(waiting[part]) == len(parts[part]):
                    write_room_part(cfg, part, waiting.pop(part))
    if waiting:
        raise RuntimeError(f"rooms: parts {sorted(waiting)} did not get all their rooms back; run again to make them")
    return generated
