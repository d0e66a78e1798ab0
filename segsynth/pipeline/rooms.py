"""``segsynth rooms``: empty rooms from Stable Diffusion -> a background library (Ray Data).

The stage is three Ray Data steps::

    range(count) --prompts (CPU tasks)--> RoomGenerator actors (GPU, one pipeline each) --> gate

and writes ``OUT/backgrounds.parquet`` (``bg_id, image`` JPEG bytes ``, width, height, prompt,
negative_prompt, seed, model, phash``), optional ``OUT/jpg/<bg_id>.jpg``, ``OUT/config.yaml`` and
``OUT/summary.json`` (``dropped_blank``, ``dropped_duplicate``, throughput).

Rooms generated on the fly inside ``segsynth synth`` (``rooms_per_shard``) use the same
:class:`RoomsConfig` and :class:`segsynth.rooms.RoomGenerator`, as a GPU stage streaming into the
CPU compositing stage (``segsynth.pipeline.synth.ShardRooms``).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segsynth import io
from segsynth.config import ConfigError, save_config
from segsynth.rooms import RoomPromptConfig, bg_id_for, dedupe, make_prompt, resolve_model

log = logging.getLogger(__name__)

LIBRARY_FILENAME = "backgrounds.parquet"
# the background-library contract (+ phash, to dedupe across libraries later)
LIBRARY_COLUMNS = ("bg_id", "image", "width", "height", "prompt", "negative_prompt", "seed", "model", "phash")
DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class RoomsConfig:
    """Config of ``segsynth rooms`` and of on-the-fly rooms in ``segsynth synth``."""

    out: str = "outputs/rooms"                       # folder or URI of the background library
    count: int = 1000                                # prompts to run (kept rooms are fewer: gate)
    seed: int = 0                                    # run seed: prompt i and its noise depend on (seed, i)
    size: int = 512                                  # square images, pixels (multiple of 8)
    steps: int = 30                                  # denoising steps
    guidance_scale: float = 7.5                      # classifier-free guidance
    model: str = "stabilityai/stable-diffusion-2-1-base"  # local pipeline folder or hub id
    device: str = "auto"                             # auto: cuda when the actor has a GPU, else cpu
    dtype: str = "auto"                              # auto: float16 on GPU, float32 on CPU
    num_gpus: float = 1.0                            # per actor; 0 runs the actors on CPU
    num_cpus: float = 1.0                            # per actor
    workers: int = 1                                 # actor pool size (one pipeline per actor)
    batch_size: int = 4                              # prompts per diffusion call
    write_jpegs: bool = False                        # also write OUT/jpg/<bg_id>.jpg
    jpeg_quality: int = 92
    blank_min_std: float = 4.0                       # gray std below this: near-uniform, dropped
    blank_black_level: float = 10.0                  # mean gray below this: black, dropped
    dedupe_max_distance: int = 4                     # phash bits; closer to a kept room: dropped
    prompts: RoomPromptConfig = field(default_factory=RoomPromptConfig)

    def check_inputs(self) -> None:
        if self.count < 1:
            raise ConfigError(f"count must be at least 1, got {self.count}")
        if self.size < 64 or self.size % 8:
            raise ConfigError(f"size must be a multiple of 8 and at least 64, got {self.size}; e.g. 512")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.workers < 1 or self.batch_size < 1:
            raise ConfigError(f"workers and batch_size must be at least 1, got {self.workers} and {self.batch_size}")
        if self.num_gpus < 0 or self.num_cpus < 0:
            raise ConfigError("num_gpus and num_cpus per actor must not be negative")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {list(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.device == "cuda" and self.num_gpus == 0:
            raise ConfigError("device: cuda needs num_gpus > 0 per actor (Ray hides GPUs from actors that reserve none)")
        if self.device == "cpu" and self.dtype == "float16":
            raise ConfigError("dtype: float16 on device: cpu is not supported; use dtype: auto or float32")
        if not self.model:
            raise ConfigError("model is empty; set a local pipeline folder or a hub id, e.g. stabilityai/stable-diffusion-2-1-base")
        if not 0 <= self.dedupe_max_distance <= 64:
            raise ConfigError(f"dedupe_max_distance is a number of bits of a 64-bit hash, got {self.dedupe_max_distance}")

    @property
    def actor_device(self) -> str:
        """The device an actor uses: ``auto`` means cuda only when the actor reserves a GPU."""
        if self.device == "auto":
            return "auto" if self.num_gpus > 0 else "cpu"
        return self.device


# --------------------------------------------------------------------------- dataset steps
def _prompt_batch(batch: dict[str, np.ndarray], prompts: RoomPromptConfig, seed: int, start: int) -> dict[str, np.ndarray]:
    items = [make_prompt(prompts, seed, start + int(i)) for i in batch["id"]]
    return {
        "bg_id": np.array([bg_id_for(seed, p.index) for p in items], dtype=object),
        "prompt": np.array([p.prompt for p in items], dtype=object),
        "negative_prompt": np.array([p.negative_prompt for p in items], dtype=object),
        "seed": np.array([p.seed for p in items], np.int64),
        "index": np.array([p.index for p in items], np.int64),
    }


def prompt_dataset(cfg: RoomsConfig, start: int = 0):
    """``cfg.count`` prompt rows (``bg_id, prompt, negative_prompt, seed, index``), built by
    cheap CPU tasks from ``(cfg.seed, index)``; no prompt list is held on the driver."""
    import ray.data

    return ray.data.range(cfg.count).map_batches(
        _prompt_batch, fn_kwargs={"prompts": cfg.prompts, "seed": cfg.seed, "start": start},
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

    from segsynth.rooms import RoomGenerator

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
    from segsynth.pipeline.ray_env import init_ray

    resolve_model(cfg.model)  # fail before Ray starts when the model cannot be found
    init_ray(address)
    t0 = time.time()
    rows = room_stage(prompt_dataset(cfg), cfg)
    kept: list[dict] = []
    generated = dropped_blank = 0
    for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(batch["bg_id"])):
            generated += 1
            if bool(batch["blank"][i]):
                dropped_blank += 1
                log.info("dropped blank room %s (prompt %r)", batch["bg_id"][i], str(batch["prompt"][i])[:60])
                continue
            kept.append({k: batch[k][i] for k in LIBRARY_COLUMNS + ("index",)})
    seconds = time.time() - t0
    kept.sort(key=lambda r: int(r["index"]))
    flags = dedupe([int(r["phash"]) for r in kept], cfg.dedupe_max_distance)
    dropped_duplicate = flags.count(False)
    kept = [r for r, ok in zip(kept, flags) if ok]
    _write_library(cfg, kept)
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
    log.info("rooms: kept %d of %d (dropped %d blank, %d near duplicates) -> %s",
             len(kept), generated, dropped_blank, dropped_duplicate, summary["library"])
    return summary


def _write_library(cfg: RoomsConfig, rows: list[dict]) -> None:
    import pyarrow as pa

    schema = pa.schema([("bg_id", pa.string()), ("image", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
                        ("prompt", pa.string()), ("negative_prompt", pa.string()), ("seed", pa.int64()),
                        ("model", pa.string()), ("phash", pa.uint64())])
    table = pa.table({name: [_py(r[name]) for r in rows] for name in schema.names}, schema=schema)
    io.write_parquet(table, io.join(cfg.out, LIBRARY_FILENAME))
    if cfg.write_jpegs:
        for r in rows:
            io.write_bytes(io.join(cfg.out, "jpg", f"{r['bg_id']}.jpg"), bytes(r["image"]))


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def read_library(path: str) -> list[dict]:
    """Rows of a background library (``OUT`` folder or ``backgrounds.parquet``), as dicts."""
    uri = path if str(path).endswith(".parquet") else io.join(path, LIBRARY_FILENAME)
    if not io.exists(uri):
        raise FileNotFoundError(f"{uri} does not exist; write a background library with `segsynth rooms --config configs/rooms.yaml`")
    return io.read_parquet(uri).to_pylist()
