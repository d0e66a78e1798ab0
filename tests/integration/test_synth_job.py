"""The Ray Data synthesis job on a local Ray: contract, determinism, resume, corrupt inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segsynth import io
from segsynth.config import ConfigError, load_config
from segsynth.synth import job as synth

pytestmark = [pytest.mark.ray]

CONTRACT = {"sample_id", "cutout_id", "category", "k", "seed", "image", "mask", "bg_kind", "bg_id",
            "placement", "scale", "shadow_type", "distractor_count", "distractor_ids", "bg_crop_px",
            "match_blur_px", "match_noise_std"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, ellipse_rgba):
    """A manifest of 5 cutouts (one corrupt) and a background folder (one corrupt file)."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    rows = []
    for i, cat in enumerate(["chair", "lamp", "plant", "table"]):
        rgba = ellipse_rgba(30 + 5 * i, 24 + 3 * i, (40 * i, 200 - 30 * i, 90))
        rows.append({"cutout_id": f"t/{cat}{i}", "category": cat, "source": f"{cat}.jpg", "source_kind": "rgba",
                     "width": rgba.shape[1], "height": rgba.shape[0], "quality": 1.0, "rgba": io.encode_png(rgba)})
    rows.append({"cutout_id": "t/broken", "category": "chair", "source": "broken.png", "source_kind": "rgba",
                 "width": 10, "height": 10, "quality": 1.0, "rgba": b"\x89PNG not really"})
    io.write_parquet(rows, str(root / "cutouts" / "manifest.parquet"))
    bgs = root / "rooms"
    bgs.mkdir()
    for i in range(3):
        (bgs / f"room{i}.jpg").write_bytes(io.encode_jpeg(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)))
    (bgs / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def _cfg(inputs, out, **kw):
    overrides = [f"cutouts={inputs / 'cutouts'}", f"backgrounds=[{inputs / 'rooms'}]", f"out={out}", "size=64",
                 "samples_per_cutout=3", "shard_size=4", "contact_sheet=6"]
    overrides += [f"{k}={v}" for k, v in kw.items()]
    return load_config(synth.SynthConfig, None, overrides)


def _rows(out):
    table = io.read_parquet(str(out / "shards"))
    return {r["sample_id"]: r for r in table.to_pylist()}


def test_job_contract_corrupt_inputs_and_determinism(ray_local, inputs, tmp_path):
    # every background kind, the rooms doubling as furnished scenes, matching on
    every_kind = {"scene_backgrounds": f"[{inputs / 'rooms'}]", "composite.match_prob": 0.7,
                  "composite.bg_weights": "{white: 1, solid: 1, noise: 1, floor_wall: 1, room: 1, scene: 1}"}
    summary = synth.run(_cfg(inputs, tmp_path / "a", workers=2, **every_kind))
    rows = _rows(tmp_path / "a")
    assert len(rows) == 4 * 3 and summary["samples_written"] == 12
    assert summary["corrupt_cutouts"] == ["t/broken"]
    assert any("zz_corrupt" in name for name in summary["skipped_backgrounds"])
    row = next(iter(rows.values()))
    assert CONTRACT <= set(row)
    assert io.decode_image(row["image"]).shape == (64, 64, 3)
    assert io.decode_mask(row["mask"]).shape == (64, 64)
    assert (tmp_path / "a" / "config.yaml").exists() and (tmp_path / "a" / "contact_sheet.png").exists()
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["samples_written"] == 12

    # one worker, other shard size: every sample bit-identical
    synth.run(_cfg(inputs, tmp_path / "b", workers="[1, 2]", shard_size=5, **every_kind))  # an autoscaling pool
    other = _rows(tmp_path / "b")
    assert other.keys() == rows.keys()
    for sid, r in rows.items():
        assert r["image"] == other[sid]["image"] and r["mask"] == other[sid]["mask"], sid


def test_rerun_skips_written_shards_and_refuses_other_settings(ray_local, inputs, tmp_path):
    out = tmp_path / "c"
    first = synth.run(_cfg(inputs, out))
    assert first["shards_written"] == first["shards"] == 4   # 5 cutouts x 3 / 4 per shard
    shard = out / "shards" / "shard-00001.parquet"
    shard.unlink()
    again = synth.run(_cfg(inputs, out))
    assert again["shards_written"] == 1 and again["shards_skipped"] == 3
    with pytest.raises(ConfigError, match="size"):
        synth.run(_cfg(inputs, out, size=96))
    # pool sizes and the unused rooms section change no sample: resuming with them is fine
    assert synth.run(_cfg(inputs, out, workers=1, **{"rooms.steps": 3}))["shards_written"] == 0


def test_cli_synth_writes_folders(ray_local, inputs, tmp_path):
    from segsynth.cli import main

    out = tmp_path / "d"
    code = main(["synth", f"cutouts={inputs / 'cutouts'}", f"out={out}", "size=48", "samples_per_cutout=1",
                 "write_folders=true", "contact_sheet=0", "workers=1"])
    assert code == 0
    assert len(list((out / "images").glob("*.jpg"))) == 4 and len(list((out / "masks").glob("*.png"))) == 4


def test_rooms_generated_on_the_fly_stream_into_compositing(ray_local, inputs, tmp_path):
    """GPU diffusion stage (here a tiny random pipeline on CPU) -> CPU compositing, one pipeline."""
    from segsynth.testing import build_tiny_pipeline

    model = build_tiny_pipeline(tmp_path / "tiny-sd")
    cfg = _cfg(inputs, tmp_path / "e", samples_per_cutout=2, shard_size=4, rooms_per_shard=2,
               **{"rooms.model": model, "rooms.size": 64, "rooms.steps": 2, "rooms.num_gpus": 0,
                  "rooms.workers": 1, "rooms.batch_size": 2, "backgrounds": "[]",
                  "composite.bg_weights": "{room: 1, scene: 1}"})
    summary = synth.run(cfg)
    rows = _rows(tmp_path / "e")
    assert summary["samples_written"] == len(rows) == 8
    generated = {r["bg_id"] for r in rows.values()}
    assert all(b.startswith("sd-") for b in generated), generated   # every composite names its generated room
    assert {r["bg_kind"] for r in rows.values()} <= {"room", "scene"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_terminal_is_quiet_and_the_rest_goes_to_logs(inputs, tmp_path):
    """`segsynth synth` in a fresh process with its own Ray: the terminal gets a few lines (the
    progress bar and the result), Ray's own output goes to OUT/logs; --json prints the summary."""
    import os
    import subprocess
    import sys

    import tempfile

    out = tmp_path / "quiet"
    ray_tmp = tempfile.mkdtemp(prefix="sq", dir="/tmp")  # Ray's socket paths must stay short
    Path(ray_tmp, "ray").mkdir()
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": ""}
    argv = [sys.executable, "-m", "segsynth.cli", "synth", f"cutouts={inputs / 'cutouts'}", f"out={out}", "size=48",
            "samples_per_cutout=1", "contact_sheet=0", "workers=1", "--json"]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=540)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["samples_written"] == 4  # --json: the whole summary on stdout
    shown = [line.split("\r")[-1] for line in r.stderr.split("\n") if line.split("\r")[-1].strip()]
    bars = [line for line in shown if "samples/s" in line or "s/samples" in line]
    others = [line for line in shown if line not in bars]
    assert bars and "5/5" in bars[-1], shown  # one progress bar, to the end
    assert len(others) == 3 and others[0].startswith("synth: 5 samples in 1 shards"), others  # the plan
    assert all("broken" in line for line in others[1:]), others  # the corrupt cutout, named
    assert not any(word in r.stderr for word in ("Running Dataset", "MapBatches", "ActorPool", "(pid=")), r.stderr
    log = (out / "logs" / "synth.log").read_text()
    assert "segsynth" in log and " ray" in log  # Ray's own records are in the stage's log file
    r = subprocess.run(argv[:-1], capture_output=True, text=True, env=env, timeout=540)  # resumes: nothing to do
    assert r.returncode == 0 and r.stderr.strip().splitlines()[-1].startswith("synth: 0 samples"), r.stderr


@pytest.mark.slow
def test_every_node_of_a_cluster_makes_rows(inputs, tmp_path):
    """Two Ray nodes on this machine (ray.cluster_utils.Cluster), one compositing actor fitting
    on each: the summary counts samples on both nodes, and the dataset is complete."""
    import ray
    import ray.data
    from ray.cluster_utils import Cluster

    from segsynth.ray_env import init_ray

    waited = ray.data.DataContext.get_current().wait_for_min_actors_s
    restart = ray.is_initialized()  # the session's local Ray: put back afterwards
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 100 * 2**20})
    cluster.add_node(num_cpus=2, object_store_memory=100 * 2**20)
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        cluster.wait_for_nodes()
        ray.data.DataContext.get_current().wait_for_min_actors_s = 120  # both actors up before any shard goes out
        # 1.5 CPUs per actor: one fits a 2-CPU node, and half a CPU stays free there for Ray Data's own tasks
        summary = synth.run(_cfg(inputs, tmp_path / "n", workers=2, cpus_per_worker=1.5))
    finally:
        ray.data.DataContext.get_current().wait_for_min_actors_s = waited
        ray.shutdown()
        cluster.shutdown()
        if restart:
            init_ray(num_cpus=4)
    nodes = summary["samples_per_node"]
    assert len(nodes) == 2 and all(n > 0 for n in nodes.values()), nodes
    assert sum(nodes.values()) == summary["samples_written"] == 12
    assert len(_rows(tmp_path / "n")) == 12
