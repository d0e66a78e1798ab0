"""The synthetic dataset on disk: the shard plan, the shard writer (a ``map_batches`` callable
that composites one shard and writes it atomically), resuming, the summary and contact sheet.

Pure numpy/OpenCV/pyarrow; :mod:`segsynth.synth.job` maps these over a Ray Data pipeline.
"""
from __future__ import annotations

import json
import logging
import math
import posixpath
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from segsynth import io
from segsynth.config import check_resume_config
from segsynth.rooms.config import RoomsConfig
from segsynth.rng import rng_for
from segsynth.split import is_validation, used_as_scene
from segsynth.synth.config import SAMPLE_KEYS, ROOMS_RESOURCE_KEYS, SynthConfig
from segsynth.synth.engine import make_sample
from segsynth.synth.library import Background, BackgroundStore, Cutout, CutoutStore

log = logging.getLogger(__name__)


SHARD_DIR = "shards"


CONTACT_SHEET = "contact_sheet.png"


def manifest_path(cutouts: str) -> str:
    return cutouts if cutouts.endswith(".parquet") else io.join(cutouts, "manifest.parquet")


EMPTY = ".empty"  # the marker of a shard with no samples (all its products corrupt)


def shard_name(index: int, suffix: str = ".parquet") -> str:
    return f"shard-{index:05d}{suffix}"


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
    if cfg.shard_order == "mixed":  # a training batch then draws from many products, not a few neighbours
        pairs = [pairs[i] for i in rng_for(cfg.seed, "shard-order").permutation(len(pairs))]
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


@dataclass
class ShardInputs:
    """What one shard composites with: its products, a sample of the distractor pool (all of it
    for a validation product's samples, ``train_distractors`` for a training product's) and of
    the room and scene photos, and what was skipped as corrupt (``[(id, reason)]``)."""

    cutouts: dict[str, Cutout]
    corrupt: list[str]
    distractors: list[Cutout]
    train_distractors: list[Cutout]
    backgrounds: list[Background]
    scenes: list[Background]
    skipped_distractors: list[str]
    skipped_backgrounds: list[str]


def sample_ids(ids: Sequence[str], n: int, *key) -> list[str]:
    """``n`` of the sorted ``ids`` drawn without replacement from ``rng_for(*key)`` (all of them
    when there are no more than ``n``), in sorted order."""
    if len(ids) <= n:
        return list(ids)
    picked = rng_for(*key).choice(len(ids), n, replace=False)
    return [ids[i] for i in sorted(picked)]


class ShardWriter:
    """Composites and writes whole shards; a Ray Data ``map_batches`` callable class.

    ``__init__`` indexes the inputs (cutout ids and categories, distractor ids, room photo ids:
    no pixels); ``__call__`` takes a batch of shard rows, and for each shard reads what it needs
    (:meth:`shard_inputs`: its products, ``distractors_per_shard`` distractors and
    ``backgrounds_per_shard`` room and scene photos, sampled from ``(seed, shard)`` and photos kept
    near output size), composites it and returns one summary row per shard. So a worker's memory
    does not grow with the catalog. It works the same outside Ray (the plain-loop baseline calls
    it directly).

    Two distractor pools: all of them for a validation product's samples, and without the
    validation products (``is_validation(cutout_id, val_fraction)``) for a training product's,
    so a held-out product is never seen in training, not even as background.
    """

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.products = CutoutStore(cfg.cutouts)
        pool = manifest_path(cfg.distractor_cutouts or cfg.cutouts)
        self.pool = self.products if pool == manifest_path(cfg.cutouts) else CutoutStore(pool)
        categories = distractor_categories(set(self.pool.category.values()), cfg.composite.distractor_categories)
        # a context patch is no distractor
        self.distractor_ids = [c for c in self.pool.ids(categories) if c not in self.pool.context]
        self._last: dict[str, tuple[list[str], object]] = {}
        self.rooms = BackgroundStore(cfg.backgrounds) if cfg.backgrounds else None
        self.skipped_backgrounds = [name for name, _ in self.rooms.skipped] if self.rooms else []
        self.scenes: BackgroundStore | None = None
        self.scene_ids: list[str] = []
        if cfg.scene_backgrounds:
            self.scenes = BackgroundStore(cfg.scene_backgrounds)
            self.skipped_backgrounds += [name for name, _ in self.scenes.skipped]
            self.scene_ids = [b for b in self.scenes.ids if used_as_scene(b, cfg.scene_share)]
            if self.scenes.ids and not self.scene_ids:
                raise ValueError(f"scene_share={cfg.scene_share} keeps none of the {len(self.scenes)} photos in "
                                 f"{cfg.scene_backgrounds}; raise scene_share or drop scene_backgrounds")
            log.info("scene backgrounds: %d used, %d held out for active learning (scene_share=%s)",
                     len(self.scene_ids), len(self.scenes) - len(self.scene_ids), cfg.scene_share)

    def shard_inputs(self, shard: int, cutout_ids: Sequence[str]) -> ShardInputs:
        """Read and decode what shard ``shard`` needs; nothing else stays in memory."""
        cfg = self.cfg
        cutouts, corrupt = self.products.load(sorted(set(cutout_ids)), skip_empty=False)
        for cid, reason in corrupt:
            log.warning("skipping corrupt cutout: %s", reason)
        picked = sample_ids(self.distractor_ids, cfg.distractors_per_shard, cfg.seed, "distractors", shard)
        loaded, skipped = self._same_as_last("distractors", picked, self.pool.load)
        distractors = [loaded[c] for c in picked if c in loaded]
        # photos are only ever cropped to at least bg_room_zoom_min of their shorter side, then
        # resized to `size`: more pixels than size / zoom_min on that side are never used
        short = math.ceil(cfg.size / cfg.composite.bg_room_zoom_min)
        backgrounds, scenes, bg_skipped = [], [], []
        if self.rooms:
            ids = sample_ids(self.rooms.ids, cfg.backgrounds_per_shard, cfg.seed, "backgrounds", shard)
            backgrounds, bg_skipped = self._same_as_last("rooms", ids, lambda i: self.rooms.load(i, max_short=short))
        if self.scenes:
            ids = sample_ids(self.scene_ids, cfg.backgrounds_per_shard, cfg.seed, "scenes", shard)
            scenes, more = self._same_as_last("scenes", ids, lambda i: self.scenes.load(i, max_short=short))
            bg_skipped = bg_skipped + more
        return ShardInputs(
            cutouts=cutouts, corrupt=[c for c, _ in corrupt], distractors=distractors,
            train_distractors=[d for d in distractors if not is_validation(d.cutout_id, cfg.val_fraction)],
            backgrounds=backgrounds, scenes=scenes, skipped_distractors=[c for c, _ in skipped],
            skipped_backgrounds=self.skipped_backgrounds + [b for b, _ in bg_skipped])

    def _same_as_last(self, what: str, ids: list[str], load):
        """``load(ids)``, or what the previous shard loaded when it drew the same ids (a catalog
        smaller than the per-shard counts: every shard draws all of it). One set kept per kind."""
        last = self._last.get(what)
        if last is None or last[0] != ids:
            self._last[what] = last = (list(ids), load(ids))
        return last[1]

    def _encode(self, image: np.ndarray) -> bytes:
        if self.cfg.image_format == "png":
            return io.encode_png(image)
        return io.encode_jpeg(image, self.cfg.jpeg_quality)

    def make_shard(self, cutout_ids: list[str], ks: list[int], rooms: list[Background] | None = None,
                   shard: int = 0) -> tuple[pa.Table | None, ShardInputs]:
        """Composite shard ``shard`` -> (table in the synthetic-dataset contract, or None when
        every product of the shard is corrupt; the shard's inputs, with what was skipped).
        ``rooms``: rooms generated for this shard, canvases besides ``backgrounds``."""
        cfg = self.cfg
        inputs = self.shard_inputs(shard, cutout_ids)
        backgrounds = inputs.backgrounds if rooms is None else list(rooms) + inputs.backgrounds
        rows = []
        for cutout_id, k in zip(cutout_ids, ks):
            cutout = inputs.cutouts.get(cutout_id)
            if cutout is None:  # corrupt: skipped, named in the summary
                continue
            pool = inputs.distractors if is_validation(cutout_id, cfg.val_fraction) else inputs.train_distractors
            sample = make_sample(cutout, int(k), seed=cfg.seed, size=cfg.size, cfg=cfg.composite,
                                 backgrounds=backgrounds, distractors=pool, scenes=inputs.scenes)
            sample_id = f"{cutout_id}#{int(k)}"
            rows.append({"sample_id": sample_id, "cutout_id": cutout_id, "category": cutout.category,
                         "k": int(k), "seed": cfg.seed, "image": self._encode(sample.image),
                         "mask": io.encode_png(sample.mask), **sample.meta})
            if cfg.write_folders:
                stem = sample_filename(sample_id)
                io.write_bytes(io.join(cfg.out, "images", f"{stem}.{'png' if cfg.image_format == 'png' else 'jpg'}"), rows[-1]["image"])
                io.write_bytes(io.join(cfg.out, "masks", f"{stem}.png"), rows[-1]["mask"])
        return (pa.Table.from_pylist(rows) if rows else None), inputs

    def __call__(self, batch: dict) -> dict:
        out = {"shard": [], "samples": [], "corrupt": [], "bg_kinds": [], "skipped_inputs": [], "peak_rss_mb": []}
        for i, shard in enumerate(batch["shard"]):
            rooms = None
            if "room_images" in batch:
                rooms = [Background(bg_id=str(bid), rgb=io.decode_image(img, name=str(bid)))
                         for bid, img in zip(batch["room_ids"][i], batch["room_images"][i])]
            table, inputs = self.make_shard(list(batch["cutout_ids"][i]), list(batch["ks"][i]), rooms, int(shard))
            write_shard(self.cfg.out, int(shard), table, inputs.corrupt)
            kinds = table.column("bg_kind").to_pylist() if table is not None else []
            out["shard"].append(int(shard))
            out["samples"].append(table.num_rows if table is not None else 0)
            out["corrupt"].append(json.dumps(inputs.corrupt))
            out["bg_kinds"].append(json.dumps({k: kinds.count(k) for k in sorted(set(kinds))}))
            out["skipped_inputs"].append(json.dumps({"backgrounds": inputs.skipped_backgrounds,
                                                     "distractors": inputs.skipped_distractors}))
            out["peak_rss_mb"].append(peak_rss_mb())
        return {k: np.asarray(v) for k, v in out.items()}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux's ``ru_maxrss`` is in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_shard(out: str, shard: int, table: pa.Table | None, corrupt: list[str]) -> None:
    """``OUT/shards/shard-XXXXX.parquet``, or for a shard whose products are all corrupt
    ``shard-XXXXX.empty`` (the ids, JSON): done, but no parquet file without columns for
    readers of the folder to trip on."""
    if table is None:
        io.write_bytes(io.join(out, SHARD_DIR, shard_name(shard, EMPTY)), json.dumps({"corrupt": corrupt}).encode())
    else:
        io.write_parquet(table, io.join(out, SHARD_DIR, shard_name(shard)))


def sample_settings(resolved: dict) -> dict:
    """The part of a resolved synth config (as YAML reads it) that changes the samples."""
    settings = {k: resolved.get(k) for k in SAMPLE_KEYS}
    rooms = settings.pop("rooms") or {}
    if settings.get("rooms_per_shard"):  # the rooms section matters only when rooms are generated
        settings["rooms"] = {k: v for k, v in rooms.items() if k not in ROOMS_RESOURCE_KEYS}
    return settings


def check_existing_config(cfg: SynthConfig) -> None:
    """Refuse to resume into ``out`` when the samples there were made with other settings."""
    check_resume_config(cfg, cfg.out, sample_settings, holds="samples")


def pending_shards(cfg: SynthConfig, shards: list[dict]) -> list[dict]:
    """The shards not written yet (neither their parquet file nor their empty marker exists)."""
    folder = io.join(cfg.out, SHARD_DIR)
    done = {posixpath.basename(f) for f in io.list_files(folder, [".parquet", EMPTY])} if io.exists(folder) else set()
    return [s for s in shards if not {shard_name(s["shard"]), shard_name(s["shard"], EMPTY)} & done]


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
        # the most any one worker process held at once (each row: its worker's peak so far)
        "peak_worker_rss_mb": max((float(r["peak_rss_mb"]) for r in results), default=None),
    }


def write_contact_sheet(cfg: SynthConfig, columns: int = 6, tile: int = 160) -> str | None:
    """A PNG grid of the first samples: each tile is the image with its mask's outline."""
    import cv2

    from segsynth.sheet import grid, outline

    files = io.list_files(io.join(cfg.out, SHARD_DIR), [".parquet"])
    tiles = []
    for f in files:
        table = io.read_parquet(f, columns=["image", "mask"]).slice(0, cfg.contact_sheet - len(tiles))
        for img, mask in zip(table.column("image").to_pylist(), table.column("mask").to_pylist()):
            rgb = cv2.resize(io.decode_image(img), (tile, tile), interpolation=cv2.INTER_AREA)
            m = cv2.resize(io.decode_mask(mask), (tile, tile), interpolation=cv2.INTER_NEAREST)
            tiles.append(np.concatenate([outline(rgb, m, (255, 0, 255)), cv2.cvtColor(m, cv2.COLOR_GRAY2RGB)], axis=1))
        if len(tiles) >= cfg.contact_sheet:
            break
    if not tiles:
        return None
    sheet = grid(tiles, columns)
    path = io.join(cfg.out, CONTACT_SHEET)
    io.write_bytes(path, io.encode_png(sheet))
    return path
