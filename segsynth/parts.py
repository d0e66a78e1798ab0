"""Stage outputs written in fixed parts, so a failed or cancelled run resumes where it stopped.

A stage splits its items into a fixed plan of parts (:func:`plan_parts`: ``part_size`` items
each, in a fixed order), writes each finished part atomically to
``OUT/parts/part-XXXXX.parquet`` (:func:`write_part`), and on a re-run does only the parts not
written yet (:func:`written_parts`; :func:`segsynth.config.check_resume_config` refuses an
``out`` made with other settings). At the end it combines the parts into its one output file,
one part at a time, with :class:`ParquetStreamWriter`. ``segsynth cutouts`` and ``segsynth
rooms`` work this way (``segsynth synth`` keeps its shards as they are).

A part file names the items it was made from (``keys``, in its parquet metadata), so a part made
from other items (the sources changed since) can be told apart without reading its rows
(:func:`part_keys`).
"""
from __future__ import annotations

import json
import logging
import posixpath
import re

import pyarrow as pa
import pyarrow.parquet as pq

from segsynth import io

log = logging.getLogger(__name__)

PARTS_DIR = "parts"

_PART_NAME = re.compile(r"part-(\d+)\.parquet")
_KEYS = b"segsynth.part_keys"


def plan_parts(n_items: int, part_size: int) -> list[range]:
    """The fixed plan: the item indices of each part, ``[range(0, s), range(s, 2s), ...]``."""
    if part_size < 1:
        raise ValueError(f"part_size must be at least 1, got {part_size}")
    return [range(i, min(i + part_size, n_items)) for i in range(0, n_items, part_size)]


def part_path(out: str, index: int) -> str:
    return io.join(out, PARTS_DIR, f"part-{index:05d}.parquet")


def written_parts(out: str) -> set[int]:
    """Indices of the parts in ``OUT/parts`` (one listing, also on an object store)."""
    try:
        files = io.list_files(io.join(out, PARTS_DIR), [".parquet"])
    except FileNotFoundError:  # no folder yet: nothing written
        return set()
    return {int(m.group(1)) for f in files if (m := _PART_NAME.fullmatch(posixpath.basename(f)))}


def write_part(table: pa.Table, out: str, index: int, keys: list[str] | None = None) -> str:
    """Write part ``index`` in one go (atomic on local disk; an object appears whole); ``keys``
    names the items it was made from (read back by :func:`part_keys`)."""
    if keys is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _KEYS: json.dumps(keys).encode()})
    path = part_path(out, index)
    io.write_parquet(table, path)
    return path


def part_keys(out: str, index: int) -> list[str] | None:
    """The ``keys`` part ``index`` was written with (its parquet footer only); None without."""
    fs, p = io.resolve(part_path(out, index))
    meta = pq.read_schema(p, filesystem=fs).metadata or {}
    return json.loads(meta[_KEYS]) if _KEYS in meta else None


def pending_parts(out: str, keys: list[list[str]], written: set[int] | None = None) -> list[int]:
    """The parts of a plan still to make, in order: those not written (``written``: from
    :func:`written_parts` when None), and those written from other items than ``keys[i]`` (the
    sources changed since), which are made again."""
    written = written_parts(out) if written is None else written
    todo = []
    for i, k in enumerate(keys):
        if i in written and part_keys(out, i) == list(k):
            continue
        if i in written:
            log.info("%s holds other items than the plan's (the sources changed since); making it again",
                     part_path(out, i))
        todo.append(i)
    return todo


def read_part(out: str, index: int, columns: list[str] | None = None) -> pa.Table:
    return io.read_parquet(part_path(out, index), columns=columns)


class ParquetStreamWriter:
    """One parquet file written table by table in row groups of ``row_group_rows`` rows.

    Memory is one incoming table plus one group, however large the file; a reader that wants a
    few rows reads their groups only. :meth:`write` takes the schema's columns of a table and
    casts them to the schema's types. The file appears whole on :meth:`close` or not at all
    (:class:`segsynth.io.AtomicOutput`: a failed run leaves no half file); :meth:`abort` stops and
    leaves none. As a context manager, an exception inside aborts.
    """

    def __init__(self, path: str, schema: pa.Schema, row_group_rows: int = 64):
        if row_group_rows < 1:
            raise ValueError(f"row_group_rows must be at least 1, got {row_group_rows}")
        self.path, self.schema, self.row_group_rows = str(path), schema, row_group_rows
        self.rows_written = 0
        self._out = io.AtomicOutput(path)
        try:
            self._writer = pq.ParquetWriter(self._out.stream, schema)
        except BaseException:
            self._out.abort()
            raise
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._closed = False

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._buffer.append(table.select(self.schema.names).cast(self.schema))
        self._buffered += table.num_rows
        while self._buffered >= self.row_group_rows:
            self._flush(self.row_group_rows)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self._buffer)
        self._writer.write_table(table.slice(0, n), row_group_size=n)
        self.rows_written += n
        rest = table.slice(n)
        self._buffer, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._buffered:
                self._flush(self._buffered)
            self._writer.close()
        except BaseException:
            self.abort()
            raise
        self._out.commit()
        self._closed = True

    def abort(self) -> None:
        """Stop and leave no file (no-op after :meth:`close`)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        finally:
            self._out.abort()

    def __enter__(self) -> "ParquetStreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
