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
