"""The synthetic dataset on disk: the shard plan, the shard writer (a ``map_batches`` callable
that composites one shard and writes it atomically), resuming, the summary and contact sheet.

Pure numpy/OpenCV/pyarrow; :mod:`segsynth.synth.job` maps these over a Ray Data pipeline.
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Iterable

import numpy as np
import pyarrow as pa

from segsynth import io
from segsynth.config import ConfigError, dump_config
from segsynth.rooms.config import RoomsConfig
from segsynth.split import is_validation
from segsynth.synth.config import SAMPLE_KEYS, ROOMS_RESOURCE_KEYS, SynthConfig
from segsynth.synth.engine import make_sample
from segsynth.synth.library import CONTEXT_MASK, Background, Cutout, decode_cutout, load_backgrounds, load_cutouts, split_scenes

log = logging.getLogger(__name__)


SHARD_DIR = "shards"


SUMMARY = "summary.json"


CONTACT_SHEET = "contact_sheet.png"


def manifest_path(cutouts: str) -> str:
    return cutouts if cutouts.endswith(".parquet") else io.join(cutouts, "manifest.parquet")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def sample_filename(sample_id: str) -> str:
    """A file stem for a sample id (``catalog/000.1#3`` -> ``catalog__000.1_k3``)."""
    return sample_id.replace("/", "__").replace("#", "_k")


def plan_shards(cfg: SynthConfig) -> list[dict]:
    """The fixed list of shards: ``{shard, cutout_ids, ks}``, from the manifest alone."""
    path = manifest_path(cfg.cutouts)
    if not io.exists(path):
        raise FileNotFoundError(f"cutout manifest {path} not found; run `segsynth cutouts` first or set cutouts=FOLDER")
    table = io.read_parquet(path, columns=["cutout_id", "category"])
    rows = sorted(zip(table.column("cutout_id").to_pylist(), table.column("category").to_pylist()))
    if cfg.categories is not None:
        wanted = set(cfg.categories)
        rows = [r for r in rows if r[1] in wanted]
    if cfg.limit_cutouts is not None:
        rows = rows[: cfg.limit_cutouts]
    if not rows:
        raise ValueError(f"no cutouts to composite in {path} (categories={cfg.categories}); check the manifest and `categories`")
    pairs = [(cid, k) for cid, _ in rows for k in range(cfg.samples_per_cutout)]
    n = cfg.shard_size
    return [{"shard": i // n, "cutout_ids": [p[0] for p in pairs[i:i + n]], "ks": [p[1] for p in pairs[i:i + n]]}
            for i in range(0, len(pairs), n)]


def distractor_categories(present: Iterable[str], wanted: list[str]) -> list[str] | None:
    """The ``present`` categories that contain one of ``wanted`` as a word or part of one.

    Catalog types are fine-grained: ``chair`` matches ``Armchair`` and ``Swivel chair``,
    ``table`` matches ``Coffee table``. An empty ``wanted`` keeps every category.
    """
    if not wanted:
        return None
    needles = [w.lower() for w in wanted]
    return sorted({c for c in present if any(n in str(c).lower() for n in needles)})


class ShardWriter:
    """Composites and writes whole shards; a Ray Data ``map_batches`` callable class.

    ``__init__`` loads the cutout manifest's bytes, the distractor pools and the backgrounds
    once per actor; ``__call__`` takes a batch of shard rows and returns one summary row per
    shard. It works the same outside Ray (the plain-loop baseline calls it directly).

    Two distractor pools: all of them for a validation product's samples, and without the
    validation products (``is_validation(cutout_id, val_fraction)``) for a training product's,
    so a held-out product is never seen in training, not even as background.
    """

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        table = io.read_parquet(manifest_path(cfg.cutouts))
        self._rgba = dict(zip(table.column("cutout_id").to_pylist(), table.column("rgba").to_pylist()))
        self._mask = (dict(zip(table.column("cutout_id").to_pylist(), table.column(CONTEXT_MASK).to_pylist()))
                      if CONTEXT_MASK in table.column_names else {})
        self._category = dict(zip(table.column("cutout_id").to_pylist(), table.column("category").to_pylist()))
        del table
        pool = manifest_path(cfg.distractor_cutouts or cfg.cutouts)
        present = (self._category.values() if pool == manifest_path(cfg.cutouts)  # read once, not again
                   else io.read_parquet(pool, columns=["category"]).column("category").to_pylist())
        categories = distractor_categories(present, cfg.composite.distractor_categories)
        self.distractors, skipped = load_cutouts(pool, categories)
        self.distractors = [d for d in self.distractors if d.mask is None]  # a context patch is no distractor
        self.train_distractors = [d for d in self.distractors if not is_validation(d.cutout_id, cfg.val_fraction)]
        self.skipped_distractors = [name for name, _ in skipped]
        self.backgrounds, bg_skipped = load_backgrounds(cfg.backgrounds) if cfg.backgrounds else ([], [])
        self.skipped_backgrounds = [name for name, _ in bg_skipped]
        self.scenes: list[Background] = []
        if cfg.scene_backgrounds:
            scenes, scene_skipped = load_backgrounds(cfg.scene_backgrounds)
            self.skipped_backgrounds += [name for name, _ in scene_skipped]
            self.scenes, unseen = split_scenes(scenes, cfg.scene_share)
            if scenes and not self.scenes:
                raise ValueError(f"scene_share={cfg.scene_share} keeps none of the {len(scenes)} photos in "
                                 f"{cfg.scene_backgrounds}; raise scene_share or drop scene_backgrounds")
            log.info("scene backgrounds: %d used, %d held out for active learning (scene_share=%s)",
                     len(self.scenes), len(unseen), cfg.scene_share)
        self._cutout = lru_cache(maxsize=64)(self._decode_cutout)

    def _decode_cutout(self, cutout_id: str) -> Cutout:
        return decode_cutout(cutout_id, self._category[cutout_id], self._rgba[cutout_id], self._mask.get(cutout_id))

    def _encode(self, image: np.ndarray) -> bytes:
        if self.cfg.image_format == "png":
            return io.encode_png(image)
        return io.encode_jpeg(image, self.cfg.jpeg_quality)

    def make_shard(self, cutout_ids: list[str], ks: list[int], rooms: list[Background] | None = None) -> tuple[pa.Table, list[str]]:
        """Composite one shard -> (table in the synthetic-dataset contract, corrupt cutout ids)."""
        cfg = self.cfg
        backgrounds = self.backgrounds if rooms is None else rooms
        rows, corrupt = [], []
        for cutout_id, k in zip(cutout_ids, ks):
            try:
                cutout = self._cutout(cutout_id)
            except io.ImageDecodeError as e:
                if cutout_id not in corrupt:
                    log.warning("skipping corrupt cutout: %s", e)
                    corrupt.append(cutout_id)
                continue
            pool = self.distractors if is_validation(cutout_id, cfg.val_fraction) else self.train_distractors
            sample = make_sample(cutout, int(k), seed=cfg.seed, size=cfg.size, cfg=cfg.composite,
                                 backgrounds=backgrounds, distractors=pool, scenes=self.scenes)
            sample_id = f"{cutout_id}#{int(k)}"
            rows.append({"sample_id": sample_id, "cutout_id": cutout_id, "category": cutout.category,
                         "k": int(k), "seed": cfg.seed, "image": self._encode(sample.image),
                         "mask": io.encode_png(sample.mask), **sample.meta})
            if cfg.write_folders:
                stem = sample_filename(sample_id)
                io.write_bytes(io.join(cfg.out, "images", f"{stem}.{'png' if cfg.image_format == 'png' else 'jpg'}"), rows[-1]["image"])
                io.write_bytes(io.join(cfg.out, "masks", f"{stem}.png"), rows[-1]["mask"])
        return pa.Table.from_pylist(rows), corrupt

    def __call__(self, batch: dict) -> dict:
        out = {"shard": [], "samples": [], "corrupt": [], "bg_kinds": [], "skipped_inputs": []}
        for i, shard in enumerate(batch["shard"]):
            rooms = None
            if "room_images" in batch:
                rooms = [Background(bg_id=str(bid), rgb=io.decode_image(img, name=str(bid)))
                         for bid, img in zip(batch["room_ids"][i], batch["room_images"][i])] + list(self.backgrounds)
            table, corrupt = self.make_shard(list(batch["cutout_ids"][i]), list(batch["ks"][i]), rooms)
            io.write_parquet(table, io.join(self.cfg.out, SHARD_DIR, shard_name(int(shard))))
            kinds = table.column("bg_kind").to_pylist() if table.num_rows else []
            out["shard"].append(int(shard))
            out["samples"].append(table.num_rows)
            out["corrupt"].append(json.dumps(corrupt))
            out["bg_kinds"].append(json.dumps({k: kinds.count(k) for k in sorted(set(kinds))}))
            out["skipped_inputs"].append(json.dumps({"backgrounds": self.skipped_backgrounds,
                                                     "distractors": self.skipped_distractors}))
        return {k: np.asarray(v) for k, v in out.items()}


def check_existing_config(cfg: SynthConfig) -> None:
    """Refuse to resume into ``out`` when the samples there were made with other settings."""
    import yaml

    path = io.join(cfg.out, "config.yaml")
    if not io.exists(path):
        return
    def sample_settings(resolved: dict) -> dict:
        settings = {k: resolved.get(k) for k in SAMPLE_KEYS}
        rooms = settings.pop("rooms") or {}
        if settings.get("rooms_per_shard"):  # the rooms section matters only when rooms are generated
            settings["rooms"] = {k: v for k, v in rooms.items() if k not in ROOMS_RESOURCE_KEYS}
        return settings

    old = sample_settings(yaml.safe_load(io.read_bytes(path)) or {})
    new = sample_settings(yaml.safe_load(dump_config(cfg)))
    changed = [k for k in new if old.get(k) != new[k]]
    if changed:
        raise ConfigError(f"{cfg.out} already holds samples made with a different {', '.join(changed)}; "
                          f"use a new out=FOLDER or delete {cfg.out} to start over")


def pending_shards(cfg: SynthConfig, shards: list[dict]) -> list[dict]:
    return [s for s in shards if not io.exists(io.join(cfg.out, SHARD_DIR, shard_name(s["shard"])))]


class ShardRooms:
    """The diffusion stage of on-the-fly rooms, a Ray Data callable class (one pipeline per actor).

    Adds ``room_ids`` and ``room_images`` (JPEG bytes) to each shard row: ``rooms_per_shard``
    rooms from prompts ``shard * rooms_per_shard + j`` of the prompt bank, so a shard's rooms
    depend on ``(rooms.seed, shard)`` alone. The quality gate of ``segsynth.rooms`` drops blank
    images (safety-checker blanks, black frames) and near duplicates within the shard.
    """

    def __init__(self, rooms: RoomsConfig, per_shard: int):
        from segsynth.rooms.generator import RoomGenerator

        self.rooms, self.per_shard = rooms, per_shard
        self.generator = RoomGenerator(
            rooms.model, size=rooms.size, steps=rooms.steps, guidance=rooms.guidance_scale,
            device=rooms.actor_device, dtype=rooms.dtype, batch_size=rooms.batch_size, run_seed=rooms.seed,
            jpeg_quality=rooms.jpeg_quality, blank_min_std=rooms.blank_min_std, blank_black_level=rooms.blank_black_level)

    def __call__(self, batch: dict) -> dict:
        from segsynth.rooms.prompts import dedupe, make_prompts

        n = len(batch["shard"])
        ids, images = np.empty(n, dtype=object), np.empty(n, dtype=object)
        for i, shard in enumerate(batch["shard"]):
            prompts = make_prompts(self.rooms.prompts, self.per_shard, self.rooms.seed, start=int(shard) * self.per_shard)
            rows = self.generator({
                "prompt": np.array([p.prompt for p in prompts], dtype=object),
                "negative_prompt": np.array([p.negative_prompt for p in prompts], dtype=object),
                "seed": np.array([p.seed for p in prompts], np.int64),
                "index": np.array([p.index for p in prompts], np.int64)})
            fine = [j for j, blank in enumerate(rows["blank"]) if not blank]
            unique = dedupe([int(rows["phash"][j]) for j in fine], self.rooms.dedupe_max_distance)
            keep = [j for j, ok in zip(fine, unique) if ok]
            ids[i], images[i] = [rows["bg_id"][j] for j in keep], [rows["image"][j] for j in keep]
        return {**batch, "room_ids": ids, "room_images": images}


def summarize(cfg: SynthConfig, shards: list[dict], results: list[dict], seconds: float) -> dict:
    corrupt = sorted({c for r in results for c in json.loads(r["corrupt"])})
    kinds: dict[str, int] = {}
    for r in results:
        for k, v in json.loads(r["bg_kinds"]).items():
            kinds[k] = kinds.get(k, 0) + v
    written = int(sum(r["samples"] for r in results))
    skipped = [json.loads(r["skipped_inputs"]) for r in results]
    skipped_bg = sorted({name for s in skipped for name in s["backgrounds"]})
    skipped_distractors = sorted({name for s in skipped for name in s["distractors"]})
    return {
        "out": cfg.out,
        "shards": len(shards),
        "shards_written": len(results),
        "shards_skipped": len(shards) - len(results),
        "samples_written": written,
        "samples_per_second": round(written / seconds, 2) if seconds > 0 else None,
        "seconds": round(seconds, 1),
        "bg_kinds": kinds,
        "corrupt_cutouts": corrupt,
        "skipped_backgrounds": skipped_bg,
        "skipped_distractors": skipped_distractors,
    }


def write_contact_sheet(cfg: SynthConfig, columns: int = 6, tile: int = 160) -> str | None:
    """A PNG grid of the first samples: each tile is the image with its mask's outline."""
    import cv2

    files = io.list_files(io.join(cfg.out, SHARD_DIR), [".parquet"])
    tiles = []
    for f in files:
        table = io.read_parquet(f, columns=["image", "mask"]).slice(0, cfg.contact_sheet - len(tiles))
        for img, mask in zip(table.column("image").to_pylist(), table.column("mask").to_pylist()):
            rgb = cv2.resize(io.decode_image(img), (tile, tile), interpolation=cv2.INTER_AREA)
            m = cv2.resize(io.decode_mask(mask), (tile, tile), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours((m > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(rgb, contours, -1, (255, 0, 255), 1)
            tiles.append(np.concatenate([rgb, cv2.cvtColor(m, cv2.COLOR_GRAY2RGB)], axis=1))
        if len(tiles) >= cfg.contact_sheet:
            break
    if not tiles:
        return None
    rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    blank = np.zeros_like(tiles[0])
    sheet = np.concatenate([np.concatenate(r + [blank] * (columns - len(r)), axis=1) for r in rows], axis=0)
    path = io.join(cfg.out, CONTACT_SHEET)
    io.write_bytes(path, io.encode_png(sheet))
    return path
