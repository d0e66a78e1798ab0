"""``segsynth synth``: cutouts x backgrounds -> synthetic parquet shards, on Ray Data.

The manifest expands into ``(cutout_id, k)`` rows, grouped into fixed shards of ``shard_size``
rows in a fixed order. Ray Data maps one :class:`ShardWriter` actor pool (``workers`` actors)
over the shards; each call composites one shard and writes ``OUT/shards/shard-XXXXX.parquet``
atomically. So:

- a sample is a pure function of ``(seed, cutout_id, k)``, the inputs and the shard plan,
  whatever the number of workers or their order;
- memory is bounded by ``workers x`` one shard's inputs and samples, however many samples and
  however large the catalog: an actor indexes the inputs (ids, no pixels) and reads per shard
  its products, ``distractors_per_shard`` distractors and ``backgrounds_per_shard`` photos
  (drawn from ``(seed, shard)``, kept near output size); the summary's ``peak_worker_rss_mb``
  is the largest actor's peak;
- a re-run skips the shards already written (and refuses an ``out`` made with another config);
- a corrupt cutout or background is skipped, counted and named; the job goes on.

With ``rooms_per_shard > 0`` empty rooms are generated on the fly: a GPU stage (diffusers actors)
adds generated rooms to each shard row, streaming into the CPU compositing stage, each stage
with its own resources and pool size.
"""
from __future__ import annotations

import logging
import time


from segsynth import console, io
from segsynth.config import save_config
from segsynth.synth.config import SynthConfig
from segsynth.synth.shards import (ShardRooms, ShardWriter, check_existing_config, pending_shards, plan_shards,
                                   summarize, write_contact_sheet)

log = logging.getLogger(__name__)


def _room_stage(ray, ds, cfg: SynthConfig):
    """The GPU stage before compositing, with its own resources and pool size (``rooms.*``)."""
    from segsynth.rooms.generator import resolve_model

    resolve_model(cfg.rooms.model)  # offline with a hub id: fail now, with the fix, not in an actor
    r = cfg.rooms
    return ds.map_batches(ShardRooms, fn_constructor_kwargs={"rooms": r, "per_shard": cfg.rooms_per_shard},
                          batch_size=1, compute=ray.data.ActorPoolStrategy(size=r.workers),
                          num_gpus=r.num_gpus or None, num_cpus=r.num_cpus)



class NodeShardWriter(ShardWriter):
    """:class:`ShardWriter` that also says which Ray node wrote each shard (the summary's
    ``samples_per_node``)."""

    def __call__(self, batch: dict) -> dict:
        import numpy as np
        import ray

        out = super().__call__(batch)
        out["node"] = np.asarray([ray.get_runtime_context().get_node_id()] * len(out["shard"]))
        return out

def run(cfg: SynthConfig, address: str | None = None) -> dict:
    from segsynth.ray_env import init_ray

    started = time.time()
    io.require_input(cfg.cutouts, "cutouts")  # before Ray starts: a wrong path fails in a second
    for key in ("backgrounds", "scene_backgrounds"):
        for i, path in enumerate(getattr(cfg, key)):
            io.require_input(path, f"{key}[{i}]")
    if cfg.distractor_cutouts:
        io.require_input(cfg.distractor_cutouts, "distractor_cutouts")
    io.require_output(cfg.out)
    check_existing_config(cfg)
    shards = plan_shards(cfg)
    io.mark_incomplete(cfg.out)
    save_config(cfg, cfg.out)
    pending = pending_shards(cfg, shards)
    n_samples = sum(len(s["ks"]) for s in shards)
    log.info("synth: %d samples in %d shards of %d (%d already written) -> %s",
             n_samples, len(shards), cfg.shard_size, len(shards) - len(pending), cfg.out)
    results = []
    if pending:
        ray = init_ray(address)
        ds = ray.data.from_items(pending, override_num_blocks=len(pending))
        if cfg.rooms_per_shard:
            ds = _room_stage(ray, ds, cfg)
        ds = ds.map_batches(NodeShardWriter, fn_constructor_kwargs={"cfg": cfg}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(**cfg.worker_pool), num_cpus=cfg.cpus_per_worker)
        planned = {s["shard"]: len(s["ks"]) for s in pending}  # a corrupt cutout writes no sample but is done
        with console.progress(total=sum(planned.values()), desc="synth", unit="samples") as bar:
            for row in ds.iter_rows():
                results.append(row)
                bar.update(planned[int(row["shard"])])
    summary = summarize(cfg, shards, results, time.time() - started)
    nodes: dict[str, int] = {}
    for r in results:  # where the samples were made: every node of a cluster should appear
        nodes[str(r["node"])] = nodes.get(str(r["node"]), 0) + int(r["samples"])
    summary["samples_per_node"] = nodes
    if cfg.contact_sheet:
        summary["contact_sheet"] = write_contact_sheet(cfg)
    io.mark_complete(cfg.out, summary)
    log.debug("synth: wrote %d new samples (%d shards skipped as already written) to %s",
             summary["samples_written"], summary["shards_skipped"], cfg.out)
    for key in ("corrupt_cutouts", "skipped_backgrounds", "skipped_distractors"):
        if summary[key]:
            log.warning("synth: %s (%d): %s", key.replace("_", " "), len(summary[key]), ", ".join(summary[key]))
    return summary


