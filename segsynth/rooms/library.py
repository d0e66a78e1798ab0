"""The background library on disk: ``OUT/backgrounds.parquet`` (see :data:`LIBRARY_COLUMNS`),
combined from the part files the rooms job writes as it goes (``OUT/parts``, :mod:`segsynth.parts`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segsynth import io
from segsynth.parts import ParquetStreamWriter, read_part, write_part
from segsynth.rooms.config import LIBRARY_FILENAME, RoomsConfig
from segsynth.rooms.prompts import dedupe

# the background-library contract (rooms.config.LIBRARY_COLUMNS) with its types
LIBRARY_SCHEMA = pa.schema([("bg_id", pa.string()), ("image", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
                            ("prompt", pa.string()), ("negative_prompt", pa.string()), ("seed", pa.int64()),
                            ("model", pa.string()), ("phash", pa.uint64())])


# a part file: the generator's rows for its prompts, blank ones too, sorted by index
PART_SCHEMA = pa.schema(list(LIBRARY_SCHEMA) + [("index", pa.int64()), ("blank", pa.bool_())])


# rows per library row group: a reader can fetch a few rooms without reading the rest
LIBRARY_ROW_GROUP = 64


# keys that only place or size the work or add files beside the library: a resumed run may change
# them (as segsynth.synth's ROOMS_RESOURCE_KEYS; batch_size is not one: a diffusion batch of
# another size changes the pixels a little)
RESUME_FREE_KEYS = ("out", "workers", "num_gpus", "num_cpus", "device", "write_jpegs")


def output_settings(resolved: dict) -> dict:
    """The settings of a resolved config (plain data) that change the rooms or the part plan;
    for :func:`segsynth.config.check_resume_config`."""
    return {k: v for k, v in resolved.items() if k not in RESUME_FREE_KEYS}


def write_room_part(cfg: RoomsConfig, index: int, rows: list[dict]) -> str:
    """Part ``index``'s raw generator rows (:data:`PART_SCHEMA`), sorted by prompt index, to
    ``OUT/parts`` in one atomic write."""
    rows = sorted(rows, key=lambda r: int(r["index"]))
    table = pa.table({name: [_py(r[name]) for r in rows] for name in PART_SCHEMA.names}, schema=PART_SCHEMA)
    return write_part(table, cfg.out, index)


@dataclass(frozen=True)
class LibraryCounts:
    """What went into the library, over all parts."""

    generated: int
    kept: int
    dropped_blank: int
    dropped_duplicate: int


def combine_parts(cfg: RoomsConfig, n_parts: int) -> LibraryCounts:
    """Parts ``0 .. n_parts - 1`` -> ``OUT/backgrounds.parquet`` (and ``OUT/jpg/`` with
    ``write_jpegs``): blank rooms dropped, near duplicates dropped over the whole library in
    index order (:func:`segsynth.rooms.prompts.dedupe`), rows in index order. One part in
    memory at a time: the quality gate reads the small columns first, then each part once."""
    gate = [read_part(cfg.out, i, columns=["index", "blank", "phash"]) for i in range(n_parts)]
    index = np.concatenate([t["index"].to_numpy() for t in gate]) if gate else np.zeros(0, np.int64)
    blank = np.concatenate([t["blank"].to_numpy(zero_copy_only=False) for t in gate]) if gate else np.zeros(0, bool)
    hashes = np.concatenate([t["phash"].to_numpy() for t in gate]) if gate else np.zeros(0, np.uint64)
    order = np.argsort(index, kind="stable")
    fine = [int(j) for j in order if not blank[j]]
    flags = dedupe([int(hashes[j]) for j in fine], cfg.dedupe_max_distance)
    keep = pa.array(sorted(int(index[j]) for j, ok in zip(fine, flags) if ok), pa.int64())
    with ParquetStreamWriter(io.join(cfg.out, LIBRARY_FILENAME), LIBRARY_SCHEMA, LIBRARY_ROW_GROUP) as writer:
        for i in range(n_parts):  # parts cover consecutive index ranges: part order is index order
            table = read_part(cfg.out, i).sort_by("index")
            table = table.filter(pc.is_in(table["index"], value_set=keep))
            writer.write(table)
            if cfg.write_jpegs:
                for bg_id, jpeg in zip(table["bg_id"].to_pylist(), table["image"].to_pylist()):
                    io.write_bytes(io.join(cfg.out, "jpg", f"{bg_id}.jpg"), jpeg)
            del table
    return LibraryCounts(generated=len(index), kept=len(keep), dropped_blank=int(blank.sum()),
                         dropped_duplicate=flags.count(False))


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def read_library(path: str) -> list[dict]:
    """Rows of a background library (``OUT`` folder or ``backgrounds.parquet``), as dicts."""
    uri = path if str(path).endswith(".parquet") else io.join(path, LIBRARY_FILENAME)
    if not io.exists(uri):
        raise FileNotFoundError(f"{uri} does not exist; write a background library with `segsynth rooms --config configs/rooms.yaml`")
    return io.read_parquet(uri).to_pylist()
