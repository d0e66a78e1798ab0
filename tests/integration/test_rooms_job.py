"""Rooms on a local Ray with a tiny random-weight pipeline at 64 px: the actor stage writes the
background library, and the gated stream feeds a CPU stage in one pipeline."""
from __future__ import annotations

import json

import pytest

from segsynth import io
from segsynth.config import load_config
from segsynth.rooms import job as rooms
from segsynth.rooms.library import read_library
from segsynth.rooms.prompts import make_prompts

pytestmark = [pytest.mark.ray]

LIBRARY = {"bg_id", "image", "width", "height", "prompt", "negative_prompt", "seed", "model"}


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> str:
    from segsynth.testing import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


def _cfg(tiny_sd, out, *extra):
    return load_config(rooms.RoomsConfig, None, [f"out={out}", f"model={tiny_sd}", "count=3", "seed=5", "size=64",
                                                 "steps=2", "num_gpus=0", "workers=1", "batch_size=2", *extra])


def test_rooms_stage_writes_the_library(ray_local, tiny_sd, tmp_path):
    cfg = _cfg(tiny_sd, tmp_path / "rooms", "write_jpegs=true")
    summary = rooms.run(cfg)
    assert summary["generated"] == 3 and summary["kept"] + summary["dropped_blank"] + summary["dropped_duplicate"] == 3
    assert summary["kept"] >= 2  # random weights give coloured noise, neither blank nor duplicate
    assert json.loads((tmp_path / "rooms" / "summary.json").read_text())["dropped_blank"] == summary["dropped_blank"]
    assert (tmp_path / "rooms" / "config.yaml").is_file()
    table = io.read_parquet(str(tmp_path / "rooms" / "backgrounds.parquet"))
    assert LIBRARY <= set(table.column_names)
    rows = table.to_pylist()
    expected = {f"sd-5-{p.index:06d}": p for p in make_prompts(cfg.prompts, 3, seed=5)}
    assert [r["bg_id"] for r in rows] == sorted(r["bg_id"] for r in rows)
    for r in rows:
        p = expected[r["bg_id"]]
        assert (r["prompt"], r["negative_prompt"], r["seed"], r["model"]) == (p.prompt, p.negative_prompt, p.seed, tiny_sd)
        assert io.decode_image(r["image"]).shape == (64, 64, 3) and (r["width"], r["height"]) == (64, 64)
        assert (tmp_path / "rooms" / "jpg" / f"{r['bg_id']}.jpg").read_bytes() == r["image"]
    assert read_library(str(tmp_path / "rooms"))[0]["bg_id"] == rows[0]["bg_id"]


def test_rooms_stage_resumes_part_by_part(ray_local, tiny_sd, tmp_path, monkeypatch):
    """Parts of 2 prompts: a run that fails after its first part, run again, generates only the
    other parts and ends with the library and counts of a run that never failed. One prompt per
    diffusion call: which prompts share a batch changes pixels a little, and that is up to Ray."""
    from segsynth.config import ConfigError

    parts = ("count=6", "part_size=2", "batch_size=1")
    whole = rooms.run(_cfg(tiny_sd, tmp_path / "whole", *parts))
    assert (whole["parts"], whole["parts_written"], whole["parts_skipped"]) == (3, 3, 0)
    assert len(list((tmp_path / "whole" / "parts").iterdir())) == 3  # kept: a re-run only combines them

    out = tmp_path / "resumed"
    real, written = rooms.write_room_part, []

    def fail_on_the_second_part(cfg, index, rows):
        if written:
            raise RuntimeError("injected failure")
        written.append((index, len(rows)))
        return real(cfg, index, rows)

    monkeypatch.setattr(rooms, "write_room_part", fail_on_the_second_part)
    with pytest.raises(RuntimeError, match="injected failure"):
        rooms.run(_cfg(tiny_sd, out, *parts))
    (first, n), = written
    assert n == 2 and [p.name for p in (out / "parts").iterdir()] == [f"part-{first:05d}.parquet"]
    assert not (out / "summary.json").exists() and not (out / "backgrounds.parquet").exists()
    with pytest.raises(ConfigError, match="different steps"):
        rooms.run(_cfg(tiny_sd, out, *parts, "steps=3"))

    done = out / "parts" / f"part-{first:05d}.parquet"
    made_at = done.stat().st_mtime_ns
    written.clear()

    def spy(cfg, index, rows):
        assert done.stat().st_mtime_ns == made_at  # the part already written stays as it is
        written.append((index, len(rows)))
        return real(cfg, index, rows)

    monkeypatch.setattr(rooms, "write_room_part", spy)
    again = rooms.run(_cfg(tiny_sd, out, *parts, "write_jpegs=true"))  # no output setting
    assert sorted(written) == [(p, 2) for p in range(3) if p != first]  # only the missing parts were generated
    assert (again["parts"], again["parts_written"], again["parts_skipped"]) == (3, 2, 1)
    counts = ("requested", "generated", "kept", "dropped_blank", "dropped_duplicate", "parts")
    assert {k: again[k] for k in counts} == {k: whole[k] for k in counts}
    library, reference = (io.read_parquet(str(p / "backgrounds.parquet")) for p in (out, tmp_path / "whole"))
    assert library.equals(reference)
    assert json.loads((out / "summary.json").read_text()) == again
    assert len(list((out / "jpg").iterdir())) == again["kept"]  # the skipped part's rooms too
    written.clear()
    finished = rooms.run(_cfg(tiny_sd, out, *parts))  # a finished out: the parts are only combined again
    assert not written and (finished["parts_written"], finished["parts_skipped"]) == (0, 3)
    assert io.read_parquet(str(out / "backgrounds.parquet")).equals(reference)
