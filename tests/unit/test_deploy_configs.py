"""cluster.yaml and deploy/kuberay/: what `ray up`, KubeRay or Ray Serve would refuse or misplace,
checked offline (no cloud, no Kubernetes, no Ray cluster).

- cluster.yaml passes Ray's own launcher schema; its head runs no workload; a CPU node type and a
  GPU node type scale from 0; it runs the pinned Ray and Python and installs segsynth.
- What each stage's production config (configs/<stage>.yaml) asks Ray for fits the node types
  of cluster.yaml and of the RayJob's cluster, and the Serve deployments fit their clusters.
- The RayJob runs the pipeline entry; the RayService's serveConfigV2 builds: its application is
  imported and built the way Serve's controller and `serve build` do it (ServeConfig rejects an
  unknown arg), its deployment options are valid and sane, and it matches serve/config.yaml.
- No credential is written into any of these files.

`serve build serve.app:build` itself refuses an application builder ("Expected ... to be an
Application but got <class 'function'>"), so the build below calls what it and the controller
call: import_attr, call_user_app_builder_with_args_if_necessary, build_app, deployment_to_schema.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from segsynth.cli import STAGES
from segsynth.config import load_config
from segsynth.serve.config import ServeConfig

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
KUBERAY = REPO / "deploy" / "kuberay"
DOCKERFILE = KUBERAY / "Dockerfile"
SERVE_CONFIG = REPO / "serve" / "config.yaml"
IMAGE_ROOT = "/home/ray/segsynth"  # where deploy/kuberay/Dockerfile puts the checkout
PIPELINE_SCRIPT, PIPELINE_CONFIG = "jobs/pipeline.py", "configs/pipeline.yaml"
PIPELINE_ENTRYPOINT = f"python {PIPELINE_SCRIPT} --config {PIPELINE_CONFIG}"
# a serve stage config needs a model; the resources do not depend on which
STAGE_OVERRIDES = {"serve": ["model=s3://YOUR-BUCKET/segsynth/train/best"]}


# ---------------------------------------------------------------- pins and files

def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def ray_pin() -> str:
    """pyproject's ``ray[...]==X`` pin."""
    for req in _pyproject()["project"]["optional-dependencies"]["ray"]:
        m = re.fullmatch(r"ray(\[[^\]]*\])?==([0-9.]+)", req.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError("pyproject.toml: no ray==X pin in the ray extra")


def python_tag() -> str:
    """``py311`` for ``requires-python = ">=3.11"``: the images run the oldest supported Python."""
    m = re.fullmatch(r">=\s*3\.(\d+)", _pyproject()["project"]["requires-python"].strip())
    assert m, "requires-python is expected as '>=3.N'"
    return f"py3{m.group(1)}"


def cluster_yaml() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def kuberay_manifests() -> dict[str, dict]:
    """kind -> manifest, from every YAML file in deploy/kuberay/ (one of each kind)."""
    found: dict[str, dict] = {}
    files = sorted([*KUBERAY.glob("*.yaml"), *KUBERAY.glob("*.yml")])
    assert files, f"no manifests in {KUBERAY}"
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc.get("apiVersion") == "ray.io/v1", f"{path.name}: apiVersion {doc.get('apiVersion')}"
                assert doc["kind"] not in found, f"two {doc['kind']} manifests in {KUBERAY}"
                found[doc["kind"]] = doc
    assert {"RayJob", "RayService"} <= set(found), f"deploy/kuberay/ holds {sorted(found)}"
    return found


def rayjob_cluster() -> dict:
    return kuberay_manifests()["RayJob"]["spec"]["rayClusterSpec"]


def rayservice_cluster() -> dict:
    return kuberay_manifests()["RayService"]["spec"]["rayClusterConfig"]


def rayservice_serve_config() -> dict:
    return yaml.safe_load(kuberay_manifests()["RayService"]["spec"]["serveConfigV2"])


def serve_config_yaml() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


# ---------------------------------------------------------------- node types and what runs on them

@dataclasses.dataclass
class NodeType:
    name: str
    resources: dict[str, float]
    max_count: int  # nodes (pods) of this type at most; 1 for the head


@dataclasses.dataclass
class Demand:
    label: str
    bundle: dict[str, float]  # per actor / worker / replica
    count: int  # at once


def _quantity(value: Any) -> float:
    """A Kubernetes CPU or count quantity: 8, "8", "500m"."""
    text = str(value).strip()
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def cluster_yaml_node_types(cfg: dict) -> list[NodeType]:
    return [NodeType(name, {k: float(v) for k, v in (t.get("resources") or {}).items()},
                     1 if name == cfg["head_node_type"] else int(t["max_workers"]))
            for name, t in cfg["available_node_types"].items()]


def _group_resources(group: dict) -> dict[str, float]:
    """What Ray sees in a KubeRay group's pods: rayStartParams, else the Ray container's limits."""
    params = group.get("rayStartParams") or {}
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    return {"CPU": _quantity(params.get("num-cpus", limits.get("cpu", 0))),
            "GPU": _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))}


def kuberay_node_types(spec: dict) -> list[NodeType]:
    return [NodeType("head", _group_resources(spec["headGroupSpec"]), 1),
            *(NodeType(g["groupName"], _group_resources(g), int(g["maxReplicas"])) for g in spec["workerGroupSpecs"])]


# What each stage's job asks Ray for, per actor or worker, and how many at once: mirrors the
# resource arguments in segsynth/<stage>/job.py; the numbers come from the stage's config.
def _cutouts(c) -> list[Demand]:
    t = c.teacher
    return [Demand("cutouts: extraction actors", {"CPU": float(t.threads or 1) if t.path else 1.0,
                                                  "GPU": t.num_gpus if t.path else 0.0}, c.workers)]


def _synth(c) -> list[Demand]:
    # the room actors only run with rooms_per_shard > 0; a cluster should take them either way
    return [Demand("synth: compositing actors", {"CPU": c.cpus_per_worker}, c.max_workers),
            Demand("synth: on-the-fly room actors", {"CPU": c.rooms.num_cpus, "GPU": c.rooms.num_gpus},
                   c.rooms.workers)]


def _rooms(c) -> list[Demand]:
    return [Demand("rooms: diffusion actors", {"CPU": c.num_cpus, "GPU": c.num_gpus}, c.workers)]


def _train(c) -> list[Demand]:
    # Ray Train places all workers at once (resources_per_worker in segsynth/train/job.py)
    return [Demand("train: DDP workers", {"CPU": c.worker_cpus, "GPU": 1.0 if c.use_gpu else 0.0}, c.num_workers)]


def _model_actors(stage: str) -> Callable:
    return lambda c: [Demand(f"{stage}: model actors", {"CPU": c.cpus_per_worker, "GPU": c.gpus_per_worker}, c.workers)]


def _serve(c) -> list[Demand]:
    replicas = int(c.autoscaling["max_replicas"]) if c.autoscaling else c.num_replicas
    return [Demand("serve: replicas (segsynth serve)", {"CPU": c.num_cpus, "GPU": c.num_gpus}, replicas)]


# stage -> its resource rule; the config classes come from segsynth.cli.STAGES (plus active)
RESOURCE_RULES: dict[str, Callable] = {"cutouts": _cutouts, "synth": _synth, "rooms": _rooms, "train": _train,
                                       "eval": _model_actors("eval"), "active": _model_actors("active"),
                                       "serve": _serve}
CHAINS = ("demo", "pipeline")  # chains of the stages below: they ask Ray for nothing of their own
CONFIG_CLASSES = {**{s: (m, c) for s, (m, c, _, _) in STAGES.items() if s not in CHAINS},
                  "active": ("segsynth.active.config", "ActiveConfig")}  # a command, not in STAGES


def stage_demands(stages: set[str] | None = None) -> list[Demand]:
    demands = []
    for stage, rule in RESOURCE_RULES.items():
        if stages is not None and stage not in stages:
            continue
        module, cls = CONFIG_CLASSES[stage]
        cfg = load_config(getattr(importlib.import_module(module), cls), REPO / "configs" / f"{stage}.yaml",
                          STAGE_OVERRIDES.get(stage, []))
        demands += rule(cfg)
    return demands


def placement_problems(demands: list[Demand], node_types: list[NodeType]) -> list[str]:
    """Each demand's bundle fits in one node of some type, CPU-only work fits a node without
    GPUs (so it never wakes a GPU node), and the types at their maximum hold ``count`` bundles."""
    offered = ", ".join(f"{n.name} {n.resources} x{n.max_count}" for n in node_types)
    problems = []
    for d in demands:
        need = {k: float(v) for k, v in d.bundle.items() if v and v > 0}
        if not need:
            continue
        fits = [n for n in node_types if all(n.resources.get(k, 0.0) >= v for k, v in need.items())]
        if not fits:
            problems.append(f"{d.label}: no node type offers {need} on one node (offered: {offered})")
            continue
        if "GPU" not in need and all(n.resources.get("GPU", 0.0) > 0 for n in fits):
            problems.append(f"{d.label}: needs no GPU, yet only GPU node types fit {need}")
        slots = sum(n.max_count * min(math.floor(n.resources.get(k, 0.0) / v + 1e-9) for k, v in need.items())
                    for n in fits)
        if slots < d.count:
            problems.append(f"{d.label}: {d.count} x {need} at once, the node types hold {slots} (offered: {offered})")
    return problems


# ---------------------------------------------------------------- Serve, built the way Serve builds it

def _serve_overrides(args: dict) -> tuple[str | None, list[str]]:
    """``args`` as segsynth.serve.job.app_builder passes them to load_config."""
    args = dict(args)
    config = args.pop("config", None)
    return config, [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items()]


def _in_repo(args: dict) -> dict:
    """Args written for the image (/home/ray/segsynth/...) pointed at this checkout instead."""
    return {k: str(REPO) + v[len(IMAGE_ROOT):] if isinstance(v, str) and v.startswith(IMAGE_ROOT + "/") else v
            for k, v in args.items()}


def resolved_serve_config(app: dict) -> ServeConfig:
    config, overrides = _serve_overrides(_in_repo(app.get("args") or {}))
    return load_config(ServeConfig, config, overrides)


def build_deployments(app: dict) -> dict[str, dict]:
    """name -> the deployment options the application's code sets, as `serve build` writes them."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app
    from ray.serve.deployment import deployment_to_schema

    built = build_app(call_user_app_builder_with_args_if_necessary(import_attr(app["import_path"]),
                                                                   _in_repo(app.get("args") or {})),
                      name=app["name"])
    built.validate_single_fastapi_ingress()
    return {d.name: deployment_to_schema(d).model_dump(exclude_unset=True) for d in built.deployments}


def effective_deployments(app: dict) -> dict[str, dict]:
    """The built options with the config's ``deployments:`` applied as Serve applies them: listed
    options replace the code's, ray_actor_options as a whole, and autoscaling_config replaces
    num_replicas. Validated by Serve's DeploymentSchema."""
    from ray.serve.schema import DeploymentSchema

    built = build_deployments(app)
    for override in app.get("deployments") or []:
        name = override["name"]
        assert name in built, f"deployments: {name!r} is not in the app (it has {sorted(built)})"
        merged = {**copy.deepcopy(built[name]), **override}
        if "autoscaling_config" in override:
            merged.pop("num_replicas", None)
        built[name] = DeploymentSchema.model_validate(merged).model_dump(exclude_unset=True)
    return built


def serve_demands(app: dict, label: str) -> list[Demand]:
    demands = []
    for name, opts in effective_deployments(app).items():
        scaling = opts.get("autoscaling_config")
        replicas = int(scaling["max_replicas"]) if scaling else int(opts.get("num_replicas", 1))
        actor = opts.get("ray_actor_options") or {}
        demands.append(Demand(f"{label}: {name} replicas", {"CPU": float(actor.get("num_cpus", 1)),
                                                            "GPU": float(actor.get("num_gpus", 0))}, replicas))
    return demands


@pytest.fixture
def in_repo(monkeypatch):
    """serve.app imports from the checkout and relative config paths start there, as in `serve run`."""
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.delenv("SEGSYNTH_AUTH_TOKEN", raising=False)


# ---------------------------------------------------------------- cluster.yaml

def test_cluster_yaml_passes_the_ray_launchers_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cluster_yaml()))  # what `ray up` checks before it calls the cloud


def test_cluster_yaml_head_runs_no_workload():
    cfg = cluster_yaml()
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU"), head["resources"]
    assert head["min_workers"] == 0 and head["max_workers"] == 0


def test_cluster_yaml_has_cpu_and_gpu_node_types_from_zero():
    cfg = cluster_yaml()
    workers = {name: t for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"]}
    cpu = [n for n, t in workers.items() if t["resources"].get("CPU", 0) > 0 and not t["resources"].get("GPU")]
    gpu = [n for n, t in workers.items() if t["resources"].get("GPU", 0) > 0]
    assert cpu and gpu, f"want a CPU-only and a GPU node type, have {workers}"
    for name in cpu + gpu:
        assert workers[name]["min_workers"] == 0 < workers[name]["max_workers"], f"{name}: scale from 0"
    assert cfg["max_workers"] >= sum(t["max_workers"] for t in workers.values()), \
        "the cluster-wide max_workers caps the node types below their own max_workers"


def test_cluster_yaml_runs_the_pinned_ray_and_python():
    cfg, pin, py = cluster_yaml(), ray_pin(), python_tag()
    assert cfg["docker"]["image"] == f"rayproject/ray:{pin}-{py}"
    for name, t in cfg["available_node_types"].items():
        if (t.get("resources") or {}).get("GPU"):
            assert t["docker"]["worker_image"] == f"rayproject/ray:{pin}-{py}-gpu", f"{name}: the CUDA image"


def test_cluster_yaml_setup_installs_segsynth_with_its_pins():
    cfg = cluster_yaml()
    mounts = {src: dst for dst, src in cfg["file_mounts"].items()}
    assert "." in mounts, "the checkout is mounted on every node"
    target = mounts["."].replace("~", "$HOME", 1)
    installs = [c for c in cfg["setup_commands"] if re.search(r"\bpip install\b", c) and target in c]
    assert installs, f"no setup command installs the mounted checkout ({target}): {cfg['setup_commands']}"
    extras = re.search(re.escape(target) + r"\[([^\]]*)\]", installs[0])
    assert extras, f"{installs[0]}: name the extras (their pins are pyproject's)"
    extras = {e.strip() for e in extras.group(1).split(",")}
    assert extras <= set(_pyproject()["project"]["optional-dependencies"]), extras
    assert "all" in extras or {"ray", "torch", "serve"} <= extras, f"missing extras: {extras}"
    # the mount copies the checkout but not what .gitignore lists (.venv, outputs: gigabytes)
    assert ".gitignore" in cfg.get("rsync_filter", [])
    ignored = (REPO / ".gitignore").read_text().split()
    assert ".venv/" in ignored and "outputs/" in ignored


# ---------------------------------------------------------------- resources: stages against node types

def test_every_stage_has_a_resource_rule():
    assert set(RESOURCE_RULES) == set(CONFIG_CLASSES), "a new stage: add what its job asks Ray for"
    assert any(d.bundle.get("GPU") for d in stage_demands()), "the production configs request GPUs"


def test_stage_demands_fit_cluster_yaml(in_repo):
    demands = stage_demands() + serve_demands(serve_config_yaml()["applications"][0], "serve/config.yaml")
    assert not placement_problems(demands, cluster_yaml_node_types(cluster_yaml()))


def test_stage_demands_fit_the_rayjob_cluster():
    demands = stage_demands(set(RESOURCE_RULES) - {"serve"})  # the endpoint is the RayService's
    assert not placement_problems(demands, kuberay_node_types(rayjob_cluster()))


def test_rayservice_deployments_fit_its_cluster(in_repo):
    demands = serve_demands(rayservice_serve_config()["applications"][0], "RayService")
    assert any(d.bundle["GPU"] for d in demands), "the RayService replicas run on GPUs"
    assert not placement_problems(demands, kuberay_node_types(rayservice_cluster()))


def test_placement_problems_catch_what_does_not_fit():
    nodes = [NodeType("head", {"CPU": 0}, 1), NodeType("cpu", {"CPU": 16}, 2), NodeType("gpu", {"CPU": 8, "GPU": 1}, 2)]
    assert not placement_problems([Demand("ok", {"CPU": 4, "GPU": 1}, 2), Demand("ok", {"CPU": 1}, 40)], nodes)
    assert placement_problems([Demand("big", {"CPU": 4, "GPU": 2}, 1)], nodes)
    assert placement_problems([Demand("many", {"CPU": 4, "GPU": 1}, 3)], nodes)
    assert placement_problems([Demand("custom", {"CPU": 1, "TPU": 1}, 1)], nodes)
    assert placement_problems([Demand("cpu on gpu", {"CPU": 12}, 1)],
                              [NodeType("head", {"CPU": 0}, 1), NodeType("gpu", {"CPU": 16, "GPU": 1}, 1)])


# ---------------------------------------------------------------- KubeRay

@pytest.mark.parametrize("kind", ["RayJob", "RayService"])
def test_kuberay_cluster_shape(kind):
    spec = rayjob_cluster() if kind == "RayJob" else rayservice_cluster()
    assert spec["rayVersion"] == ray_pin()
    assert spec.get("enableInTreeAutoscaling") is True
    head = spec["headGroupSpec"]
    assert str(head["rayStartParams"].get("num-cpus")) == "0", "the head runs no workload"
    assert not _group_resources(head)["GPU"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = [g for g in groups.values() if _group_resources(g)["GPU"] > 0]
    assert gpu, f"{kind}: no GPU worker group"
    if kind == "RayJob":
        cpu = [g for g in groups.values() if _group_resources(g)["CPU"] > 0 and not _group_resources(g)["GPU"]]
        assert cpu, "RayJob: no CPU worker group for synthesis"
        gpu += cpu
    for g in gpu:
        assert g["minReplicas"] == 0 and g.get("replicas", 0) == 0 < g["maxReplicas"], f"{g['groupName']}: from 0"


def _containers(spec: dict) -> Iterator[dict]:
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        yield from group["template"]["spec"]["containers"]


def test_kuberay_images_are_the_dockerfiles_and_pin_ray_and_python():
    images = {c["image"] for spec in (rayjob_cluster(), rayservice_cluster()) for c in _containers(spec)}
    assert len(images) == 1, f"one image for every pod: {images}"
    tag = images.pop().rsplit(":", 1)[1]
    assert f"ray{ray_pin()}" in tag and python_tag() in tag, tag
    text = DOCKERFILE.read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray_pin())}-{python_tag()}-gpu\s*$", text, re.M)
    install = re.search(r"^RUN pip install .*?-e \"?\.\[([^\]]*)\]", text, re.M)
    assert install, "the Dockerfile installs the checkout with extras"
    assert {"ray", "serve"} <= {e.strip() for e in install.group(1).split(",")}
    assert re.search(rf"^WORKDIR {IMAGE_ROOT}\s*$", text, re.M)
    assert re.search(rf"^ENV PYTHONPATH={IMAGE_ROOT}\s*$", text, re.M), "serve.app must import in every worker"
    for folder in ("segsynth", "jobs", "serve", "configs"):
        assert re.search(rf"^COPY .*\b{folder} {folder}\s*$", text, re.M), f"the image lacks {folder}/"


def test_rayjob_runs_the_pipeline_entry():
    job = kuberay_manifests()["RayJob"]["spec"]
    assert job["entrypoint"].split() == PIPELINE_ENTRYPOINT.split()
    assert yaml.safe_load(job["runtimeEnvYAML"])["working_dir"] == IMAGE_ROOT
    # jobs/pipeline.py and configs/pipeline.yaml come with another change: until they exist only
    # the entrypoint's text is checked; once they do, they must be where the entrypoint says.
    script, config = REPO / PIPELINE_SCRIPT, REPO / PIPELINE_CONFIG
    if script.exists():
        compile(script.read_text(), str(script), "exec")
        assert config.is_file(), f"{PIPELINE_ENTRYPOINT}: {PIPELINE_CONFIG} is missing"


# ---------------------------------------------------------------- the RayService's Serve application

def test_rayservice_serve_config_builds(in_repo):
    from ray.serve.schema import ServeDeploySchema

    serve_cfg = rayservice_serve_config()
    ServeDeploySchema.model_validate(serve_cfg)
    [app] = serve_cfg["applications"]
    assert "auth_token" not in (app.get("args") or {}), "the token comes from the pod's secret, never the config"
    cfg = resolved_serve_config(app)  # ServeConfig: an unknown key or a wrong type fails here
    cfg.check_inputs()
    deployments = effective_deployments(app)  # imports serve.app:build and builds the app
    assert app["route_prefix"] == cfg.route_prefix
    assert serve_cfg["http_options"]["port"] == cfg.port
    assert serve_cfg["http_options"]["host"] == "0.0.0.0", "other pods must reach the proxy"
    head = rayservice_cluster()["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "serve", "containerPort": cfg.port} in head["ports"]
    for name, opts in deployments.items():
        scaling = opts.get("autoscaling_config")
        assert scaling, f"{name}: no autoscaling_config"
        assert 0 <= scaling["min_replicas"] <= scaling["max_replicas"] and scaling["max_replicas"] >= 1, scaling
        assert opts["max_ongoing_requests"] >= cfg.max_batch_size, \
            f"{name}: max_ongoing_requests below max_batch_size={cfg.max_batch_size}: batches never fill"
        assert scaling.get("target_ongoing_requests", 2) <= opts["max_ongoing_requests"], scaling


def test_rayservice_matches_serve_config_yaml(in_repo):
    """The two configs of one app must not drift: same application, same args and deployments."""
    ours, theirs = rayservice_serve_config()["applications"][0], serve_config_yaml()["applications"][0]
    for key in ("name", "import_path", "route_prefix"):
        assert ours[key] == theirs[key], key
    assert set(ours["args"]) == set(theirs["args"])
    assert resolved_serve_config(theirs).app_name == resolved_serve_config(ours).app_name
    assert {d["name"]: set(d) for d in ours["deployments"]} == {d["name"]: set(d) for d in theirs["deployments"]}
    assert set(effective_deployments(ours)) == set(effective_deployments(theirs))
    assert rayservice_serve_config()["http_options"]["port"] == serve_config_yaml()["http_options"]["port"]


# ---------------------------------------------------------------- no inlined secrets

SECRET_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{20,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub tokens
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),  # Hugging Face tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{20,}"),
    # NAME=value assignments of secret-looking names in commands and docker options
    re.compile(r"(?i)\b[A-Z_]*(SECRET|PASSWORD|TOKEN|ACCESS_KEY)[A-Z_]*=(?!\$)\S+"),
]
SECRET_NAME = re.compile(r"(?i)(secret|password|passwd|token|api_?key|access_key|credential)")


def _nodes(node: Any, path: str = "", key: Any = None) -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every node, the key being the nearest mapping key above it;
    embedded YAML (serveConfigV2, runtimeEnvYAML) is walked too."""
    if key in ("serveConfigV2", "runtimeEnvYAML") and isinstance(node, str):
        node = yaml.safe_load(node)
    yield path, key, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _nodes(v, f"{path}.{k}", k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _nodes(v, f"{path}[{i}]", key)


def secret_problems(doc: Any, where: str) -> list[str]:
    problems = []
    for path, key, value in _nodes(doc):
        if isinstance(value, str):
            problems += [f"{where}{path}: looks like a credential" for p in SECRET_PATTERNS if p.search(value)]
            if isinstance(key, str) and SECRET_NAME.search(key) and value.strip():
                problems.append(f"{where}{path}: a secret-looking key with an inline value")
        if key == "env" and isinstance(value, list) and all(isinstance(e, dict) for e in value):
            for entry in value:
                if SECRET_NAME.search(entry.get("name", "")) and ("value" in entry or
                                                                  "secretKeyRef" not in (entry.get("valueFrom") or {})):
                    problems.append(f"{where}{path}: {entry['name']} must come from valueFrom.secretKeyRef")
    return problems


def test_no_secret_is_inlined():
    problems = secret_problems(cluster_yaml(), "cluster.yaml")
    problems += secret_problems(serve_config_yaml(), "serve/config.yaml")
    for kind, doc in kuberay_manifests().items():
        problems += secret_problems(doc, kind)
    problems += [f"Dockerfile: {line}" for line in DOCKERFILE.read_text().splitlines()
                 if not line.startswith("#") and any(p.search(line) for p in SECRET_PATTERNS)]
    assert not problems


def test_secret_scan_catches_inlined_credentials():
    key_id = "AKIA" + "Q" * 16  # built here, so the test file holds no key-shaped string
    assert secret_problems({"run_options": [f"--env AWS_ACCESS_KEY_ID={key_id}"]}, "x")
    assert secret_problems({"setup_commands": ["export AWS_SECRET_ACCESS_KEY=" + "a" * 40]}, "x")
    assert secret_problems({"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "whatever"}]}, "x")
    assert secret_problems({"serveConfigV2": "applications:\n- args: {auth_token: hunter2}\n"}, "x")
    assert not secret_problems({"env": [{"name": "SEGSYNTH_AUTH_TOKEN",
                                         "valueFrom": {"secretKeyRef": {"name": "t", "key": "token"}}}]}, "x")


def test_cluster_configs_set_the_lean_serve_path():
    """The env that segsynth.ray_env sets for a local Ray is set on the cluster's nodes too."""
    from segsynth.ray_env import SERVE_ENV

    service = (REPO / "deploy" / "kuberay" / "rayservice-endpoint.yaml").read_text()
    cluster = (REPO / "cluster.yaml").read_text()
    for key, value in SERVE_ENV.items():
        assert f"name: {key}\n                  value: \"{value}\"" in service, key
        assert f"--env {key}={value}" in cluster, key
