"""The same synthesis job, unchanged, on a two-node Ray cluster (both nodes on this machine)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = textwrap.dedent("""
    import json, sys
    from ray.cluster_utils import Cluster
    from segsynth.cli import main

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 150 * 2**20})
    cluster.add_node(num_cpus=2, object_store_memory=150 * 2**20)
    cluster.wait_for_nodes()
    import ray
    # 4 compositing actors of 1 CPU each only fit when both nodes take some
    code = main(["synth", "--address", cluster.address, *sys.argv[1:], "workers=4", "cpus_per_worker=1"])
    ray.init(address=cluster.address, ignore_reinit_error=True)
    nodes = sum(1 for n in ray.nodes() if n["Alive"])
    ray.shutdown()
    cluster.shutdown()
    print("RESULT", json.dumps({"code": code, "nodes": nodes}))
""")


def test_synth_job_runs_unchanged_on_two_nodes(repo, tmp_path):
    import numpy as np

    from segsynth import io

    rows = []
    for i, cat in enumerate(["chair", "lamp", "plant", "table"]):
        rgba = np.zeros((30 + 4 * i, 26, 4), np.uint8)
        rgba[..., :3] = (50 * i, 120, 200 - 40 * i)
        rgba[3:-3, 3:-3, 3] = 255
        rows.append({"cutout_id": f"t/{cat}", "category": cat, "source": cat, "source_kind": "rgba",
                     "width": 26, "height": rgba.shape[0], "quality": 1.0, "rgba": io.encode_png(rgba)})
    io.write_parquet(rows, str(tmp_path / "cutouts" / "manifest.parquet"))
    out = tmp_path / "synth"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, f"cutouts={tmp_path / 'cutouts'}", f"out={out}", "size=48",
                           "samples_per_cutout=4", "shard_size=2", "contact_sheet=0"],
                          cwd=repo, capture_output=True, text=True, timeout=600)
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert result, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(result[-1].split(" ", 1)[1])
    assert got == {"code": 0, "nodes": 2}
    table = io.read_parquet(str(out / "shards"))
    assert table.num_rows == 16 and len(list((out / "shards").glob("*.parquet"))) == 8
