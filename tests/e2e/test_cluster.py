"""Multi-node Ray on this machine: the synthesis job unchanged on two nodes, the whole pipeline
submitted with ``ray job submit`` to a head started with ``ray start``, and a node that dies in
the middle of synthesis or of training.

Nodes started with ``ray start`` are real separate nodes (own raylet, object store, temp dir and
process group): killing a node's process tree is what a machine that dies looks like to Ray.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent  # this venv's `ray` and `segsynth`: a node's `python` is this one too
OBJECT_STORE = 150 * 2**20  # the smallest Ray accepts is 75 MiB; tiny jobs need little

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


def write_cutouts(folder: Path, n: int = 4) -> list[str]:
    """``n`` flat-coloured box cutouts in a manifest (``folder/manifest.parquet``); their ids."""
    import numpy as np

    from segsynth import io

    rows = []
    for i in range(n):
        cat = ["chair", "lamp", "plant", "table"][i % 4]
        rgba = np.zeros((30 + 4 * i, 26, 4), np.uint8)
        rgba[..., :3] = (50 * (i % 5), 120, 200 - 40 * (i % 5))
        rgba[3:-3, 3:-3, 3] = 255
        rows.append({"cutout_id": f"t/{cat}{i}", "category": cat, "source": cat, "source_kind": "rgba",
                     "width": 26, "height": rgba.shape[0], "quality": 1.0, "rgba": io.encode_png(rgba)})
    io.write_parquet(rows, str(folder / "manifest.parquet"))
    return [r["cutout_id"] for r in rows]


def test_synth_job_runs_unchanged_on_two_nodes(repo, tmp_path):
    from segsynth import io

    write_cutouts(tmp_path / "cutouts")
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


# --------------------------------------------------------------------------- nodes started with `ray start`
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pgid: int) -> set[int]:
    """The processes of process group ``pgid`` and all their descendants (a raylet's workers run
    in process groups of their own), from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
            table[int(entry)] = (int(fields[1]), int(fields[2]))
    tree = {pid for pid, (_, group) in table.items() if group == pgid}
    while True:
        children = {pid for pid, (parent, _) in table.items() if parent in tree} - tree
        if not children:
            return tree
        tree |= children


def signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Node:
    name: str
    pgid: int     # `ray start` ran as the leader of this process group; the node's daemons stay in it
    temp_dir: Path
    node_id: str = ""  # Ray's, once it has joined
    dead: bool = False


class RayNodes:
    """A Ray cluster of nodes started with ``ray start`` on this machine, each with its own temp
    dir and ports, in process groups of their own: :meth:`kill` is a machine dying."""

    def __init__(self, root: Path, logs: Path):
        self.root, self.logs = root, logs
        self.nodes: list[Node] = []
        self.port = self.dashboard_port = None
        # what a cluster's nodes have in their environment: the venv first on PATH (a job's
        # `python`), no hub, no usage stats; Ray notices a dead node within a few seconds
        # (health checks every second instead of every 3)
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
                    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "1000",
                    "RAY_raylet_start_wait_time_s": "120"}  # a busy 2-core machine can take more than 30 s
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, args: list[str]) -> Node:
        temp = self.root / name  # short: Ray's socket paths below it must stay under 107 characters
        log = self.logs / f"ray-start-{name}.log"
        self.logs.mkdir(parents=True, exist_ok=True)
        cmd = [str(BIN / "ray"), "start", f"--temp-dir={temp}", "--node-ip-address=127.0.0.1",
               "--min-worker-port=0", "--max-worker-port=0",  # any free port, not the shared default range
               f"--dashboard-agent-listen-port={free_port()}", f"--object-store-memory={OBJECT_STORE}", *args]
        with log.open("wb") as f:
            proc = subprocess.Popen(cmd, env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, proc.pid, temp)
        self.nodes.append(node)  # before it is up: a start that fails half-way is cleaned up too
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            code = "timeout"
        if code != 0:
            raise RuntimeError(f"ray start ({name}) failed ({code}):\n{log.read_text()[-3000:]}")
        known = {n.node_id for n in self.nodes}
        joined = [n.node_id for n in self.wait_for_nodes(sum(not n.dead for n in self.nodes)) if n.node_id not in known]
        assert len(joined) == 1, joined
        node.node_id = joined[0]
        return node

    def start_head(self, num_cpus: int) -> Node:
        self.port, self.dashboard_port = free_port(), free_port()
        return self._start("h", ["--head", f"--port={self.port}", f"--num-cpus={num_cpus}",
                                 "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                                 f"--ray-client-server-port={free_port()}"])

    def add_node(self, num_cpus: int) -> Node:
        return self._start(f"n{len(self.nodes)}", [f"--address={self.address}", f"--num-cpus={num_cpus}"])

    def alive_nodes(self) -> list:
        from ray.util.state import list_nodes

        return list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)

    def wait_for_nodes(self, n: int, timeout: float = 60) -> list:
        deadline, error = time.monotonic() + timeout, None
        while True:
            try:
                alive = self.alive_nodes()
            except Exception as e:  # the dashboard's API comes up a little after `ray start` returns
                alive, error = [], e
            if len(alive) == n:
                return alive
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(alive)} Ray nodes alive after {timeout} s, expected {n} (last error: {error})")
            time.sleep(1)

    def kill(self, node: Node) -> None:
        """SIGKILL every process of the node at once (raylet, object store, workers): a machine dies."""
        signal_all(process_tree(node.pgid), signal.SIGKILL)
        node.dead = True

    def shutdown(self) -> None:
        pids = set().union(*(process_tree(n.pgid) for n in self.nodes)) if self.nodes else set()
        signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path("/proc", str(p)).exists() for p in pids):
            time.sleep(0.2)
        signal_all(pids, signal.SIGKILL)


@pytest.fixture
def ray_nodes(tmp_path):
    """:class:`RayNodes` whose processes are all gone after the test, pass or fail; their logs
    are copied to ``tmp_path/ray-logs``."""
    root = Path(tempfile.mkdtemp(prefix="ss-", dir="/tmp"))  # tmp_path is too long for Ray's sockets
    nodes = RayNodes(root, tmp_path / "ray-logs")
    try:
        yield nodes
    finally:
        nodes.shutdown()
        for node in nodes.nodes:
            logs = node.temp_dir / "session_latest" / "logs"
            if logs.is_dir():
                shutil.copytree(logs, tmp_path / "ray-logs" / node.name, ignore_dangling_symlinks=True,
                                dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- `ray job submit`
def test_pipeline_submitted_as_a_ray_job(ray_nodes, repo, tmp_path):
    """The command of docs/operations.md: ``ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml --
    python jobs/pipeline.py ...`` to a head started with ``ray start`` and one more node, with the
    demo chain made tiny. The job succeeds, every step's output is complete, and the uploaded
    working dir holds the code but none of what .gitignore and runtime_env.yaml leave out."""
    import yaml
    from ray.job_submission import JobStatus, JobSubmissionClient

    from segsynth.testing import tiny_chain_overrides

    head = ray_nodes.start_head(num_cpus=2)
    ray_nodes.add_node(num_cpus=2)
    out = tmp_path / "out"
    overrides = tiny_chain_overrides(12)
    # a variable in the job's runtime env is in its driver's environment too: init_ray must not
    # forward it again (Ray refuses a job whose driver sets one of the job's variables)
    runtime_env = yaml.safe_load((repo / "jobs" / "runtime_env.yaml").read_text())
    runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), "HF_HUB_OFFLINE": "1"}
    env_file = tmp_path / "runtime_env.yaml"
    env_file.write_text(yaml.safe_dump(runtime_env))
    job_id = f"segsynth-test-{os.getpid()}-{time.time_ns()}"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_nodes.dashboard, "--submission-id", job_id,
           "--working-dir", ".", "--runtime-env", str(env_file), "--",
           "python", "jobs/pipeline.py", "--config", "configs/demo/pipeline.yaml",
           f"paths={{outputs/demo: {out}}}", f"overrides={json.dumps(overrides)}"]
    proc = subprocess.run(cmd, cwd=repo, env=ray_nodes.env, capture_output=True, text=True, timeout=480)
    logs = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert JobSubmissionClient(ray_nodes.dashboard).get_job_status(job_id) == JobStatus.SUCCEEDED, logs
    assert proc.returncode == 0, logs

    for step in ("cutouts", "synth", "train", "eval"):
        assert (out / step / "summary.json").is_file(), step
    synth = json.loads((out / "synth" / "summary.json").read_text())
    assert synth["samples_written"] == 24
    train = json.loads((out / "train" / "summary.json").read_text())
    assert train["steps"] == 2 and train["best"] == str(out / "train" / "best")
    assert (out / "model.onnx").stat().st_size > 10_000 and (out / "model.json").is_file()  # export: file and card
    uploaded = [p for p in (head.temp_dir / "session_latest" / "runtime_resources" / "working_dir_files").iterdir()
                if p.is_dir()]
    assert len(uploaded) == 1 and (uploaded[0] / "jobs" / "pipeline.py").is_file(), uploaded
    assert not [name for name in (".git", ".venv", "outputs", "tests", "docs") if (uploaded[0] / name).exists()]


# --------------------------------------------------------------------------- a node dies mid-synthesis
def shard_files(folder: Path) -> dict[str, str]:
    """``{name: sha256}`` of the finished shards in ``folder`` (a writer's temp files are not shards)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("shard-*.parquet"))}


def wait_for(what: str, ready, proc: subprocess.Popen, log: Path, timeout: float = 300, every: float = 0.2):
    """Poll ``ready()`` until it returns something truthy; fail if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while not (got := ready()):
        if proc.poll() is not None:
            pytest.fail(f"the job ended ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s:\n{log.read_text()[-4000:]}")
        time.sleep(every)
    return got


@pytest.fixture
def run_job(repo, tmp_path):
    """``start(name, *argv) -> (Popen, log)``: a command in its own process group, killed at the end if still running."""
    procs = []

    def start(name: str, *argv: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as f:
            procs.append(subprocess.Popen(list(argv), cwd=repo, stdout=f, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        return procs[-1], log

    yield start
    for proc in procs:
        if proc.poll() is None:
            signal_all(process_tree(proc.pid), signal.SIGKILL)
            proc.wait()


def test_synth_completes_when_a_node_dies(ray_nodes, run_job, tmp_path):
    """Synthesis on two nodes; the node holding two of the three compositing actors is killed once
    it has made a shard. The job ends with exit 0 and a complete dataset: every planned sample
    exactly once, and the shards written before the kill unchanged.

    What Ray Data does (its defaults, nothing set by segsynth): the calls in flight on the dead
    actors are retried on them once restarted (``max_restarts=-1``, ``max_task_retries=-1``); the
    survivor has no free CPU for them until the pool has handed out every shard and lets its idle
    actor go, then they restart there and make their shards again."""
    from ray.util.state import list_tasks

    from segsynth import io

    ray_nodes.start_head(num_cpus=1)  # room for one compositing actor of 1 CPU ...
    node = ray_nodes.add_node(num_cpus=2)  # ... the other two land here
    ids = write_cutouts(tmp_path / "cutouts", n=4)
    per_cutout, shard_size = 128, 8  # long enough that the state API reports a finished call before the end
    out = tmp_path / "synth"
    started = time.monotonic()
    proc, log = run_job("synth", str(BIN / "segsynth"), "synth", "--address", ray_nodes.address,
                        f"cutouts={tmp_path / 'cutouts'}", f"out={out}", "size=512", f"samples_per_cutout={per_cutout}",
                        f"shard_size={shard_size}", "contact_sheet=0", "workers=3", "cpus_per_worker=1")
    n_shards = len(ids) * per_cutout // shard_size

    def made_on_node() -> list:  # the compositing actors' finished calls on the node
        tasks = list_tasks(address=ray_nodes.dashboard, filters=[("node_id", "=", node.node_id), ("state", "=", "FINISHED")],
                           limit=10_000, raise_on_missing_output=False)
        return [t for t in tasks if t.name.endswith("NodeShardWriter)).submit")]  # not the actors' __init__

    wait_for("a shard made on the node", made_on_node, proc, log)
    before = shard_files(out / "shards")
    ray_nodes.kill(node)
    killed = time.monotonic()
    assert len(before) < n_shards, "the job ended before the node was killed: make it longer"
    code = proc.wait(timeout=400)
    assert code == 0, log.read_text()[-4000:]

    after = shard_files(out / "shards")
    assert len(after) == n_shards
    assert {name: after[name] for name in before} == before  # written before the kill: unchanged
    got = io.read_parquet(str(out / "shards"), columns=["sample_id"]).column("sample_id").to_pylist()
    assert sorted(got) == sorted(f"{c}#{k}" for c in ids for k in range(per_cutout))  # each exactly once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples_written"] == len(got) and summary["shards_written"] == n_shards
    print(f"killed the node after {killed - started:.0f} s with {len(before)}/{n_shards} shards written; "
          f"done {time.monotonic() - killed:.0f} s later; samples per node {summary['samples_per_node']}")


# --------------------------------------------------------------------------- a node dies mid-training
def test_training_resumes_when_a_node_dies(ray_nodes, run_job, repo, tmp_path):
    """Two DDP workers, one per node (2 CPUs each, 3 per node); once a checkpoint is registered
    the node of one worker is killed. Ray Train restarts the worker group from that checkpoint
    (``max_failures``) and training ends with every requested step. The survivor alone cannot hold
    two workers, so a fresh node joins after the kill, as an autoscaler (cluster.yaml, KubeRay)
    replaces a lost node."""
    from ray.util.state import list_actors

    from segsynth.testing import tiny_chain_overrides

    ray_nodes.start_head(num_cpus=3)
    node = ray_nodes.add_node(num_cpus=3)
    write_cutouts(tmp_path / "cutouts", n=6)
    synth, out, name = tmp_path / "synth", tmp_path / "train", "kill"
    proc, log = run_job("synth", str(BIN / "segsynth"), "synth", "--address", ray_nodes.address,
                        f"cutouts={tmp_path / 'cutouts'}", f"out={synth}", "size=64", "samples_per_cutout=24",
                        "shard_size=8", "contact_sheet=0", "workers=2")
    assert proc.wait(timeout=240) == 0, log.read_text()[-4000:]

    epochs, steps_per_epoch = 2, 8
    proc, log = run_job("train", str(BIN / "segsynth"), "train", "--address", ray_nodes.address,
                        "--config", "configs/demo/train.yaml", *tiny_chain_overrides()["train"],
                        f"data=[{{path: {synth}, kind: synthetic}}]", f"out={out}", f"name={name}",
                        "num_workers=2", "cpus_per_worker=2", f"epochs={epochs}", f"max_steps_per_epoch={steps_per_epoch}",
                        "val_max_samples=8", "checkpoint_every_steps=2", "max_failures=2")
    snapshot = out / name / "checkpoint_manager_snapshot.json"  # Ray Train writes it once a checkpoint is registered

    def workers_on_node() -> list:
        actors = list_actors(address=ray_nodes.dashboard, filters=[("node_id", "=", node.node_id), ("state", "=", "ALIVE")],
                             raise_on_missing_output=False)
        return [a for a in actors if "TrainWorker" in (a.class_name or "")]

    wait_for("a registered checkpoint", lambda: snapshot.is_file() and "checkpoint_step" in snapshot.read_text(),
             proc, log)
    assert workers_on_node(), "no training worker on the node to kill"
    ray_nodes.kill(node)
    ray_nodes.add_node(num_cpus=3)
    code = proc.wait(timeout=300)
    assert code == 0, log.read_text()[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == epochs * steps_per_epoch and summary["epochs"] == epochs
    resumed = summary["resumed_from_steps"]
    assert len(resumed) >= 2 and resumed[0] == 0 and resumed[-1] >= 2, resumed  # from a checkpoint, not from 0
    assert (out / "best" / "model_card.json").is_file()
    print(f"resumed from steps {resumed}")
