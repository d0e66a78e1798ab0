"""``segsynth cutouts``: catalog photos, image+mask pairs and RGBA files -> a cutout library.

Sources are listed on the driver (cheap: paths and categories), then Ray Data maps a pool of
``workers`` :class:`CutoutWorker` actors over them; each actor holds one
:class:`segsynth.cutouts.CutoutExtractor` (and the teacher model, loaded once in ``__init__``).
The driver streams the results, in input order, into

- ``OUT/manifest.parquet``: ``cutout_id, category, source, source_kind, width, height, quality,
  rgba`` (RGBA PNG bytes of the tight-cropped cutout), plus ``border_white``;
- ``OUT/rejects.csv``: every item not written, with its status and the reason;
- ``OUT/summary.json``: counts (total, written, rejected_not_white, rejected_quality, corrupt,
  corrupt_files, per category, per source kind);
- ``OUT/config.yaml``: the resolved config; optional ``OUT/png/<cutout_id>.png`` previews.

A corrupt image is skipped, counted and named in the log and the summary; the job goes on.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter


from segsynth import console, io
from segsynth.config import ConfigError, save_config
from segsynth.cutouts.config import CutoutsConfig
from segsynth.cutouts.manifest import MANIFEST, SUMMARY, CutoutWorker, ManifestWriter, list_items, write_rejects

log = logging.getLogger(__name__)


def run(cfg: CutoutsConfig, address: str | None = None) -> dict:
    """Build the cutout library in ``cfg.out``; returns the summary (also OUT/summary.json)."""
    from segsynth.ray_env import init_ray

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
    save_config(cfg, cfg.out)
    ray = init_ray(address)

    teacher = cfg.teacher
    statuses: Counter = Counter()
    per_category: Counter = Counter()
    per_kind: Counter = Counter()
    corrupt: list[str] = []
    rejects: list[dict] = []
    # a manifest in input order, whatever the worker timing; a dataset copies the context when made
    ctx = ray.data.DataContext.get_current()
    old_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    writer = ManifestWriter(io.join(cfg.out, MANIFEST))
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
        bar = console.progress(total=len(items), desc="cutouts", unit="images")
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            bar.update(int(batch["source"].nunique()))
            for row in batch.to_dict("records"):
                statuses[row["status"]] += 1
                if row["status"] == "written":
                    writer.add(row)
                    per_category[row["category"]] += 1
                    per_kind[row["source_kind"]] += 1
                    if cfg.write_png:
                        io.write_bytes(io.join(cfg.out, "png", row["cutout_id"] + ".png"), row["rgba"])
                    continue
                if row["status"] == "corrupt":
                    corrupt.append(row["source"])
                rejects.append({k: row[k] for k in ("cutout_id", "source", "source_kind", "status", "quality",
                                                    "border_white", "reason")})
        writer.close()
        bar.close()
    finally:
        ctx.execution_options.preserve_order = old_order
        writer.abort()  # no-op after close(): a failed run leaves no half manifest

    write_rejects(cfg.out, rejects)
    summary = {
        "out": cfg.out,
        "manifest": io.join(cfg.out, MANIFEST),
        "total": len(items),
        "written": statuses["written"],
        "rejected_not_white": statuses["not_white"],
        "rejected_quality": statuses["low_quality"] + statuses["empty"],
        "corrupt": len(corrupt),
        "corrupt_files": corrupt,
        "per_category": dict(sorted(per_category.items())),
        "per_source_kind": dict(sorted(per_kind.items())),
        "seconds": round(time.time() - t0, 1),
    }
    io.write_bytes(io.join(cfg.out, SUMMARY), json.dumps(summary, indent=2).encode())
    if corrupt:
        log.warning("%d corrupt inputs skipped: %s", len(corrupt), ", ".join(corrupt[:10]))
    log.debug("cutouts: %d written of %d (%d background not white, %d low quality, %d corrupt) -> %s",
             summary["written"], summary["total"], summary["rejected_not_white"], summary["rejected_quality"],
             summary["corrupt"], summary["manifest"])
    return summary


