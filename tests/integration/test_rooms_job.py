"""Rooms on a local Ray with a tiny random-weight pipeline at 64 px: the actor stage writes the
background library, and the gated stream feeds a CPU stage in one pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

from segsynth import io
from segsynth.config import load_config
from segsynth.pipeline import rooms
from segsynth.rooms import RoomPromptConfig, make_prompts

pytestmark = [pytest.mark.ray]

LIBRARY = {"bg_id", "image", "width", "height", "prompt", "negative_prompt", "seed", "model"}


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> str:
    from segsynth.rooms import build_tiny_pipeline

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
    assert rooms.read_library(str(tmp_path / "rooms"))[0]["bg_id"] == rows[0]["bg_id"]


def test_rooms_stream_into_a_cpu_stage(ray_local, tiny_sd, tmp_path):
    def _mean_color(batch: dict) -> dict:  # nested: pickled by value (the test module is not importable by workers)
        """Stands in for the CPU compositing stage: decodes each room it is streamed."""
        return {"bg_id": batch["bg_id"], "mean": np.array([io.decode_image(b).mean() for b in batch["image"]])}

    cfg = _cfg(tiny_sd, tmp_path / "unused", "count=4", "prompts.method_prompt_fraction=1.0")
    stream = rooms.generate_rooms_dataset(cfg, start=10)
    out = stream.dataset.map_batches(_mean_color, batch_format="numpy", num_cpus=0.5, concurrency=1).take_all()
    counts = stream.counts()
    assert counts["generated"] == 4 and counts["kept"] == len(out) >= 2
    assert counts["kept"] + counts["dropped_blank"] + counts["dropped_duplicate"] == 4
    assert {r["bg_id"] for r in out} <= {f"sd-5-{i:06d}" for i in range(10, 14)}
    assert all(0 < r["mean"] < 255 for r in out)
    assert not (tmp_path / "unused").exists()  # streaming writes nothing
