"""``segsynth cutouts``: catalog photos, image+mask pairs and RGBA files -> a cutout library.

Sources are listed on the driver (cheap: paths and categories, in a fixed order) and split into
fixed parts of ``part_size`` items. Ray Data maps a pool of ``workers`` :class:`CutoutWorker`
actors over the items of the parts not written yet; each actor holds one
:class:`segsynth.cutouts.CutoutExtractor` (and the teacher model, loaded once in ``__init__``).
The driver takes the results in input order and writes each part as soon as it is complete:

- ``OUT/parts/part-XXXXX.parquet``: every result of the part's items, written or rejected
  (``status``, ``reason``), written atomically. A re-run with the same ``out`` skips the parts
  already there (and makes again a part whose items changed since); an ``out`` made with other
  output settings is refused (:func:`segsynth.cutouts.manifest.output_settings`).

Then the parts are combined, one at a time, into

- ``OUT/manifest.parquet``: ``cutout_id, category, source, source_kind, width, height, quality,
  rgba`` (RGBA PNG bytes of the tight-cropped cutout), plus ``border_white``; in input order, in
  row groups of 64 rows (a reader can fetch a few cutouts without reading the rest);
- ``OUT/rejects.csv``: every item not written, with its status and the reason;
- ``OUT/summary.json``, last: counts over all parts, this run's and an earlier one's (total,
  written, rejected_not_white, rejected_quality, corrupt, corrupt_files, per category, per source
  kind, parts, parts_written, parts_skipped);
- ``OUT/config.yaml``: the resolved config; optional ``OUT/png/<cutout_id>.png`` previews.

A corrupt image is skipped, counted and named in the log and the summary; the job goes on.
"""
from __future__ import annotations

import dataclasses
import logging
import time


from segsynth import console, io
from segsynth.config import ConfigError, check_resume_config, save_config
from segsynth.cutouts.config import CutoutsConfig
from segsynth.cutouts.manifest import (MANIFEST, CutoutWorker, PartCollector, combine_parts, list_items,
                                       output_settings, write_rejects)
from segsynth.parts import pending_parts, plan_parts, written_parts

log = logging.getLogger(__name__)


def run(cfg: CutoutsConfig, address: str | None = None) -> dict:
    """Build the cutout library in ``cfg.out``; returns the summary (also OUT/summary.json)."""
    t0 = time.time()
    for i, src in enumerate(cfg.sources):  # before Ray starts: a wrong path fails in a second
        io.require_input(src.path, f"sources[{i}].path", "folder")
        if src.categories_csv:
            io.require_input(src.categories_csv, f"sources[{i}].categories_csv", "file")
    if cfg.teacher.path:
        io.require_input(cfg.teacher.path, "teacher.path")
    io.require_output(cfg.out)
    items = list_items(cfg)
    if not items:
        raise ConfigError("cutouts: the sources hold no images; check their paths")
    plan = plan_parts(len(items), cfg.part_size)
    keys = [[items[j]["cutout_id"] for j in part] for part in plan]
    written = written_parts(cfg.out)
    if written:
        check_resume_config(cfg, cfg.out, output_settings, holds="cutout parts")
    io.mark_incomplete(cfg.out)
    save_config(cfg, cfg.out)
    pending = pending_parts(cfg.out, keys, written)
    log.info("cutouts: %d items in %d parts of %d (%d already written) -> %s",
             len(items), len(plan), cfg.part_size, len(plan) - len(pending), cfg.out)
    made = _extract(cfg, {i: [dict(items[j], part=i) for j in plan[i]] for i in pending}, address) if pending else []

    counts = combine_parts(cfg.out, len(plan), write_png=cfg.write_png)
    write_rejects(cfg.out, counts.rejects)
    summary = {
        "out": cfg.out,
        "manifest": io.join(cfg.out, MANIFEST),
        "total": len(items),
        "written": counts.statuses["written"],
        "rejected_not_white": counts.statuses["not_white"],
        "rejected_quality": counts.statuses["low_quality"] + counts.statuses["empty"],
        "corrupt": len(counts.corrupt),
        "corrupt_files": counts.corrupt,
        "per_category": dict(sorted(counts.per_category.items())),
        "per_source_kind": dict(sorted(counts.per_kind.items())),
        "parts": len(plan),
        "parts_written": len(made),
        "parts_skipped": len(plan) - len(made),
        "seconds": round(time.time() - t0, 1),
    }
    io.mark_complete(cfg.out, summary)
    if counts.corrupt:
        log.warning("%d corrupt inputs skipped: %s", len(counts.corrupt), ", ".join(counts.corrupt[:10]))
    log.debug("cutouts: %d written of %d (%d background not white, %d low quality, %d corrupt) -> %s",
             summary["written"], summary["total"], summary["rejected_not_white"], summary["rejected_quality"],
             summary["corrupt"], summary["manifest"])
    return summary


def _extract(cfg: CutoutsConfig, parts: dict[int, list[dict]], address: str | None) -> list[int]:
    """Extract the items of ``parts`` (``{part: its items}``) on Ray; each part is written to
    ``OUT/parts`` as soon as its results are in. Returns the parts written."""
    from segsynth.ray_env import init_ray

    ray = init_ray(address)
    items = [it for part in sorted(parts) for it in parts[part]]
    teacher = cfg.teacher
    collector = PartCollector(cfg.out, {p: [it["cutout_id"] for it in its] for p, its in parts.items()})
    # results in input order, whatever the worker timing, so a part is complete when the next
    # one starts; a dataset copies the context when made
    ctx = ray.data.DataContext.get_current()
    old_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // cfg.batch_size, 200)))
        ds = ds.map_batches(
            CutoutWorker,
            fn_constructor_kwargs=dict(white=dataclasses.asdict(cfg.white), min_quality=cfg.min_quality,
                                       teacher_path=teacher.path, teacher_kind=teacher.kind,
                                       teacher_use_for=teacher.use_for, teacher_threads=teacher.threads,
                                       png_compression=cfg.png_compression),
            batch_size=cfg.batch_size, batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=cfg.workers),
            num_cpus=float(teacher.threads or 1) if teacher.path else 1.0,
            num_gpus=teacher.num_gpus if teacher.path else 0.0,
        )
        with console.progress(total=len(items), desc="cutouts", unit="images") as bar:
            for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
                bar.update(int(batch["source"].nunique()))
                for row in batch.to_dict("records"):
                    collector.add(row)
        return collector.finish()
    finally:
        ctx.execution_options.preserve_order = old_order
