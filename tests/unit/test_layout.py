"""The layout's rules, in one place (DESIGN.md, "Layout"): only the Ray edges import Ray, the
pure modules import without it (the numpy ones without torch too), and imports have no circles
and point one way: stage edge -> stage core -> shared."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "segsynth"
STAGES = ("cutouts", "rooms", "synth", "train", "evaluate", "serve", "review", "active")
RAY_FREE_STAGES = ("review",)  # stages without a Ray edge
# the only modules that may import Ray: one edge per stage, and the shared way to start it
RAY_EDGES = {f"segsynth.{s}.job" for s in STAGES if s not in RAY_FREE_STAGES} | {"segsynth.ray_env"}
# modules above the stages: they run stages and may import anything
ORCHESTRATORS = {"segsynth.cli", "segsynth.demo", "segsynth.testing", "segsynth"}  # (the root re-exports the API, lazily)
# pure modules that need neither Ray nor torch (numpy, OpenCV, pyarrow)
NUMPY_ONLY = ["segsynth.config", "segsynth.io", "segsynth.rng", "segsynth.split", "segsynth.preprocess",
              "segsynth.white", "segsynth.metrics", "segsynth.synth", "segsynth.synth.engine", "segsynth.synth.config",
              "segsynth.synth.shards", "segsynth.cutouts.extract", "segsynth.cutouts.config", "segsynth.cutouts.manifest",
              "segsynth.rooms.prompts", "segsynth.rooms.config", "segsynth.rooms.library", "segsynth.train.config",
              "segsynth.train.data", "segsynth.evaluate.config", "segsynth.evaluate.score", "segsynth.evaluate.report",
              "segsynth.serve.config", "segsynth.serve.uploads", "segsynth.active.config", "segsynth.active.signals",
              "segsynth.active.pool", "segsynth.active.select", "segsynth.active.score", "segsynth.active.harvest",
              "segsynth.active.report", "segsynth.refine"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
    return found


def internal_imports(name: str) -> set[str]:
    return {m for m in imports_of(name) if m in MODULES and m != name}


def stage_of(name: str) -> str | None:
    """``segsynth.train.loop`` -> ``train``; shared modules (``segsynth.io``) -> None."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_only_the_edges_import_ray():
    offenders = {m: sorted(i for i in imports_of(m) if i == "ray" or i.startswith("ray."))
                 for m in MODULES if m not in RAY_EDGES}
    offenders = {m: i for m, i in offenders.items() if i}
    assert not offenders, f"only {sorted(RAY_EDGES)} may import Ray; also importing it: {offenders}"


@pytest.mark.parametrize("blocked,modules", [
    ("ray", sorted(m for m in MODULES if m not in RAY_EDGES | ORCHESTRATORS)),
    ("torch", NUMPY_ONLY),
])
def test_pure_modules_import_without(blocked, modules):
    """In a fresh interpreter where ``blocked`` cannot be imported at all."""
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            f"import importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"loaded = [m for m in sys.modules if m == {blocked!r} or m.startswith({blocked!r} + '.')]\n"
            f"assert loaded == [{blocked!r}], loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_import_circles():
    graph = {m: internal_imports(m) for m in MODULES}
    # a package's __init__ may name its own modules (re-exports); that is not a dependency back
    graph = {m: {d for d in deps if not (MODULES[m].name == "__init__.py" and d.startswith(m + "."))}
             for m, deps in graph.items()}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        for d in sorted(graph[m]):
            if d in path:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in done:
                visit(d, path + [d])
        done.add(m)

    for m in sorted(graph):
        visit(m, [m])


def test_dependencies_point_one_way():
    """Shared modules import no stage; a stage's core imports no edge (its own or another's)."""
    wrong = []
    for m in MODULES:
        deps = internal_imports(m)
        if m in ORCHESTRATORS:
            continue
        if stage_of(m) is None and m not in RAY_EDGES:  # shared
            wrong += [f"{m} (shared) -> {d}" for d in deps if stage_of(d) is not None]
        elif m not in RAY_EDGES:  # a stage's core
            wrong += [f"{m} (core) -> {d}" for d in deps if d in RAY_EDGES and d != "segsynth.ray_env"]
    assert not wrong, "dependencies must point edge -> core -> shared:\n" + "\n".join(wrong)


def test_every_job_entry_is_named_after_the_command_it_runs():
    """``jobs/<stage>.py`` runs ``segsynth <stage>`` and nothing else: no second name for a stage."""
    from segsynth.cli import COMMANDS, STAGES as CLI_STAGES

    jobs = sorted((PACKAGE.parent / "jobs").glob("*.py"))
    assert jobs
    for path in jobs:
        calls = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)
                 and getattr(node.func, "id", None) == "main" and node.args and isinstance(node.args[0], ast.List)]
        assert len(calls) == 1, f"{path.name}: expected one main([...]) call of segsynth.cli"
        command = calls[0].args[0].elts[0].value
        assert command in CLI_STAGES or command in COMMANDS, f"{path.name} runs {command!r}, not a segsynth command"
        assert path.stem == command, f"{path.name} runs `segsynth {command}`: name it jobs/{command}.py"
