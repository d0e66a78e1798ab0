"""Resumable parts (segsynth.parts) and the cutouts and rooms stages' pure part code, no Ray: the
plan, which parts are still to make, the streaming writer (row groups, atomic), the config check
on resume, and combining parts into the manifest and the background library."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segsynth import io
from segsynth.config import ConfigError, check_resume_config, save_config
from segsynth.parts import (ParquetStreamWriter, part_keys, part_path, pending_parts, plan_parts, read_part,
                            write_part, written_parts)

SCHEMA = pa.schema([("k", pa.string()), ("v", pa.int32())])


def _table(start: int, n: int) -> pa.Table:
    return pa.table({"k": [f"k{i:03d}" for i in range(start, start + n)], "v": list(range(start, start + n)),
                     "extra": [0] * n})


def test_plan_names_and_what_is_still_to_make(tmp_path):
    out = str(tmp_path)
    assert plan_parts(5, 2) == [range(0, 2), range(2, 4), range(4, 5)] and plan_parts(4, 4) == [range(0, 4)]
    with pytest.raises(ValueError, match="part_size"):
        plan_parts(3, 0)
    assert part_path(out, 7).endswith(os.path.join("parts", "part-00007.parquet"))
    assert written_parts(out) == set()  # no folder yet
    keys = [["a", "b"], ["c", "d"], ["e"]]
    write_part(_table(0, 2), out, 0, keys=keys[0])
    write_part(_table(2, 2), out, 1, keys=["c", "x"])  # made from other items: made again
    (tmp_path / "parts" / "part-00002.parquet.123.tmp").write_bytes(b"half")  # a crashed write
    (tmp_path / "parts" / "notes.parquet").write_bytes(b"")
    assert written_parts(out) == {0, 1}
    assert part_keys(out, 0) == ["a", "b"]
    assert pending_parts(out, keys) == [1, 2]
    assert read_part(out, 0, columns=["v"]).column("v").to_pylist() == [0, 1]


def test_stream_writer_writes_row_groups_of_fixed_size(tmp_path):
    path = str(tmp_path / "sub" / "all.parquet")
    with ParquetStreamWriter(path, SCHEMA, row_group_rows=64) as w:
        for start, n in ((0, 50), (50, 0), (50, 30), (80, 70)):
            w.write(_table(start, n))
    f = pq.ParquetFile(path)
    assert [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)] == [64, 64, 22]
    table = io.read_parquet(path)
    assert table.schema == SCHEMA and table.column("v").to_pylist() == list(range(150))
    assert os.listdir(tmp_path / "sub") == ["all.parquet"]  # no temp file left


def test_stream_writer_failure_leaves_the_old_file_and_no_half_one(tmp_path):
    path = str(tmp_path / "all.parquet")
    io.write_parquet(_table(0, 3).select(["k", "v"]).cast(SCHEMA), path)
    with pytest.raises(RuntimeError, match="boom"), ParquetStreamWriter(path, SCHEMA, row_group_rows=2) as w:
        w.write(_table(10, 5))
        raise RuntimeError("boom")
    assert io.read_parquet(path).column("v").to_pylist() == [0, 1, 2]
    assert os.listdir(tmp_path) == ["all.parquet"]
    with ParquetStreamWriter(path, SCHEMA) as w:  # nothing written: an empty file with the schema
        pass
    assert io.read_parquet(path).num_rows == 0


def test_parts_on_an_object_store(s3_bucket):
    """moto's S3 server (no Ray): parts listed in one go, the combined file appears on close, and
    a failed combine leaves no object."""
    out = f"{s3_bucket}/run/cutouts"
    assert written_parts(out) == set()
    write_part(_table(0, 2), out, 0, keys=["a", "b"])
    write_part(_table(2, 2), out, 3, keys=["c", "d"])
    assert written_parts(out) == {0, 3} and part_keys(out, 3) == ["c", "d"]
    assert pending_parts(out, [["a", "b"], ["x"]]) == [1]
    path = f"{out}/all.parquet"
    with ParquetStreamWriter(path, SCHEMA, row_group_rows=3) as w:
        w.write(read_part(out, 0))
        w.write(read_part(out, 3))
    assert io.read_parquet(path).column("v").to_pylist() == [0, 1, 2, 3]
    failed = f"{out}/failed.parquet"
    with pytest.raises(RuntimeError, match="boom"), ParquetStreamWriter(failed, SCHEMA) as w:
        w.write(_table(0, 100))
        raise RuntimeError("boom")
    assert not io.exists(failed)


@dataclasses.dataclass(frozen=True)
class _Pool:
    size: int = 1
    threads: int = 2


@dataclasses.dataclass(frozen=True)
class _Cfg:
    out: str = ""
    seed: int = 0
    workers: int = 1
    pool: _Pool = _Pool()


def _settings(resolved: dict) -> dict:
    s = {k: v for k, v in resolved.items() if k not in ("out", "workers")}
    s["pool"] = {k: v for k, v in s["pool"].items() if k != "threads"}
    return s


def test_resume_config_refuses_other_output_settings(tmp_path):
    cfg = _Cfg(out=str(tmp_path))
    check_resume_config(cfg, cfg.out, _settings)  # no config.yaml yet: nothing to compare
    save_config(cfg, cfg.out)
    check_resume_config(dataclasses.replace(cfg, workers=8, pool=_Pool(threads=9)), cfg.out, _settings)
    with pytest.raises(ConfigError, match=r"holds things made with a different seed; use a new out"):
        check_resume_config(dataclasses.replace(cfg, seed=1), cfg.out, _settings, holds="things")
    with pytest.raises(ConfigError, match="different pool"):
        check_resume_config(dataclasses.replace(cfg, pool=_Pool(size=2)), cfg.out, _settings)


# ----------------------------------------------------------------------------- cutouts
def _result(cid: str, status: str, part: int, category: str = "chair") -> dict:
    written = status == "written"
    return {"cutout_id": cid, "category": category, "source": f"/p/{cid}.jpg", "source_kind": "catalog",
            "status": status, "quality": 0.8 if written else 0.1, "width": 4 if written else 0,
            "height": 3 if written else 0, "border_white": float("nan") if status == "corrupt" else 0.9,
            "rgba": io.encode_png(np.full((3, 4, 4), 200, np.uint8)) if written else b"",
            "reason": "" if written else f"{status} reason", "part": part}


def test_cutout_parts_are_written_in_order_and_combined_into_the_manifest(tmp_path):
    from segsynth.cutouts import manifest as m

    out = str(tmp_path)
    statuses = ["written", "not_white", "written", "corrupt", "written", "low_quality", "written"]
    rows = [_result(f"c{i}", s, i // 3, category="lamp" if i == 4 else "chair") for i, s in enumerate(statuses)]
    collector = m.PartCollector(out, {0: ["c0", "c1", "c2"], 1: ["c3", "c4", "c5"], 2: ["c6"]})
    for r in rows:
        collector.add(r)
    assert written_parts(out) == {0, 1}  # part 2 waits for the end of the stream
    assert collector.finish() == [0, 1, 2] and part_keys(out, 1) == ["c3", "c4", "c5"]
    counts = m.combine_parts(out, 3, write_png=True)
    manifest = io.read_parquet(io.join(out, m.MANIFEST))
    assert manifest.schema == m.MANIFEST_SCHEMA
    assert manifest.column("cutout_id").to_pylist() == ["c0", "c2", "c4", "c6"]  # input order
    assert (tmp_path / "png" / "c4.png").read_bytes() == rows[4]["rgba"]
    assert counts.statuses == {"written": 4, "not_white": 1, "corrupt": 1, "low_quality": 1}
    assert counts.per_category == {"chair": 3, "lamp": 1} and counts.per_kind == {"catalog": 4}
    assert counts.corrupt == ["/p/c3.jpg"] and [r["cutout_id"] for r in counts.rejects] == ["c1", "c3", "c5"]
    assert counts.rejects[0]["reason"] == "not_white reason"


def test_cutout_parts_refuse_results_out_of_input_order(tmp_path):
    from segsynth.cutouts.manifest import PartCollector

    collector = PartCollector(str(tmp_path), {0: ["c0"], 1: ["c1"]})
    collector.add(_result("c1", "written", 1))
    with pytest.raises(RuntimeError, match="input order"):
        collector.add(_result("c0", "written", 0))
    with pytest.raises(RuntimeError, match=r"no results came back for parts \[0\]"):
        PartCollector(str(tmp_path / "b"), {0: ["c0"]}).finish()


def test_cutout_output_settings_leave_out_pool_sizes():
    from segsynth.config import to_dict
    from segsynth.cutouts.config import CutoutsConfig, SourceConfig
    from segsynth.cutouts.manifest import output_settings

    cfg = CutoutsConfig(sources=(SourceConfig(path="x"),))
    same = dataclasses.replace(cfg, out="elsewhere", workers=9, batch_size=3, write_png=True,
                               teacher=dataclasses.replace(cfg.teacher, threads=4, num_gpus=1.0))
    assert output_settings(to_dict(same)) == output_settings(to_dict(cfg))
    for change in ({"part_size": 8}, {"min_quality": 0.5}, {"png_compression": 9}, {"seed": 1}):
        assert output_settings(to_dict(dataclasses.replace(cfg, **change))) != output_settings(to_dict(cfg))


# ----------------------------------------------------------------------------- rooms
def _room(index: int, blank: bool = False, phash: int | None = None) -> dict:
    return {"bg_id": f"sd-0-{index:06d}", "image": bytes([index]) * 10, "width": np.int32(8), "height": np.int32(8),
            "prompt": f"room {index}", "negative_prompt": "", "seed": np.int64(index), "model": "m",
            "phash": np.uint64(phash if phash is not None else 0xFF << (8 * index)), "index": np.int64(index),
            "blank": np.bool_(blank)}


def test_room_parts_combine_like_one_pass_over_the_library(tmp_path):
    from segsynth.rooms.config import RoomsConfig
    from segsynth.rooms.library import LIBRARY_SCHEMA, combine_parts, output_settings, write_room_part
    from segsynth.rooms.prompts import dedupe

    cfg = RoomsConfig(out=str(tmp_path), count=7, part_size=3, dedupe_max_distance=4, write_jpegs=True)
    rooms = [_room(0), _room(1, blank=True), _room(2), _room(3, phash=int(_room(0)["phash"])), _room(4),
             _room(5, phash=int(_room(2)["phash"]) ^ 1), _room(6)]
    for part, indices in enumerate(plan_parts(cfg.count, cfg.part_size)):
        write_room_part(cfg, part, [rooms[i] for i in reversed(indices)])  # any arrival order
    counts = combine_parts(cfg, 3)
    table = io.read_parquet(io.join(cfg.out, "backgrounds.parquet"))
    fine = [r for r in rooms if not r["blank"]]
    expected = [r["bg_id"] for r, ok in zip(fine, dedupe([int(r["phash"]) for r in fine], 4)) if ok]
    assert table.schema == LIBRARY_SCHEMA and table.column("bg_id").to_pylist() == expected
    assert expected == ["sd-0-000000", "sd-0-000002", "sd-0-000004", "sd-0-000006"]  # duplicates across parts
    assert (counts.generated, counts.kept, counts.dropped_blank, counts.dropped_duplicate) == (7, 4, 1, 2)
    assert (tmp_path / "jpg" / "sd-0-000004.jpg").read_bytes() == bytes([4]) * 10
    resolved = {"out": "a", "workers": 1, "write_jpegs": False, "count": 7, "steps": 2}
    assert output_settings(resolved) == output_settings({**resolved, "out": "b", "workers": 4, "write_jpegs": True})
    for change in ({"count": 8}, {"batch_size": 4}):  # batch_size: a batch of another size changes pixels a little
        assert output_settings({**resolved, "batch_size": 2}) != output_settings({**resolved, "batch_size": 2, **change})


def test_one_atomic_output_serves_write_bytes_and_the_stream_writer(tmp_path, s3_bucket):
    """io.AtomicOutput: whole or nothing, on local disk and on an object store; two writers of one
    file in one process (two threads, or two streams) keep apart temp files and the last commit wins."""
    import threading

    path = str(tmp_path / "x.bin")
    io.write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="boom"), io.AtomicOutput(path) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert io.read_bytes(path) == b"old" and os.listdir(tmp_path) == ["x.bin"]
    first, second = io.AtomicOutput(path), io.AtomicOutput(path)
    first.stream.write(b"first")
    second.stream.write(b"second")
    first.commit()
    second.commit()
    assert io.read_bytes(path) == b"second" and os.listdir(tmp_path) == ["x.bin"]
    threads = [threading.Thread(target=io.write_bytes, args=(path, bytes([65 + i]) * 100_000)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = io.read_bytes(path)
    assert len(data) == 100_000 and len(set(data)) == 1 and os.listdir(tmp_path) == ["x.bin"]

    remote = f"{s3_bucket}/run/x.bin"
    with pytest.raises(RuntimeError, match="boom"), io.AtomicOutput(remote) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert not io.exists(remote)
    io.write_bytes(remote, b"whole")
    assert io.read_bytes(remote) == b"whole"
