"""The background library on disk: ``OUT/backgrounds.parquet`` (see :data:`LIBRARY_COLUMNS`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from segsynth import io
from segsynth.rooms.config import LIBRARY_FILENAME, RoomsConfig


def write_library(cfg: RoomsConfig, rows: list[dict]) -> None:
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
