"""How long the test suite takes and where the time goes, measured in one run: the "Test suite"
section of BENCHMARKS.md.

    python benchmarks/test_suite.py --write            # ~12 min on 2 cores: the suite, then the fast set

Runs what ``make test`` runs (``pytest -q -ra``, the Makefile's environment) and what
``make test-fast`` runs (``-m "not ray and not slow and not browser"``), one after the other,
each with a JUnit XML report; the wall time of each is the time of its ``pytest`` process, and
each test's time is its setup, call and teardown (a fixture shared by a module or the session is
paid by the first test that uses it). Targets (the house issue): the suite in at most 10 minutes,
the fast set under 2. Run it alone: anything else on the cores is in the figures.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _sections import finish  # noqa: E402

HEADING = "## Test suite"
FAST_MARKS = "not ray and not slow and not browser"  # the Makefile's test-fast
TARGETS = {"full_s": 600.0, "fast_s": 120.0}
ENV = {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
       "SEGSYNTH_DATA": str(REPO.parent / "shared" / "data")}  # the Makefile's exports (kept when already set)


def junit_cases(path: Path) -> list[dict]:
    """``[{"test": "tests/unit/test_x.py::test_y", "file", "seconds", "outcome"}]`` from a JUnit XML report."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        file = "/".join(m for m in module if not m[:1].isupper()) + ".py"  # a class name starts upper-case
        outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        out.append({"test": f"{file}::{case.get('name')}", "file": file, "seconds": float(case.get("time", 0.0)),
                    "outcome": outcome})
    return out


def run_pytest(args: list[str], xml: Path) -> dict:
    env = {**ENV, **os.environ}
    cmd = [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", f"--junitxml={xml}", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cases = junit_cases(xml) if xml.is_file() else []
    counts = collections.Counter(c["outcome"] for c in cases)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    return {"args": args, "wall_s": round(wall, 1), "returncode": proc.returncode, "summary": tail[0],
            "tests": len(cases), "passed": counts["passed"], "failed": counts["failed"], "skipped": counts["skipped"],
            "cases": cases}


def digest(run: dict, top: int) -> dict:
    """The run's slowest tests and files, with their share of the summed test time."""
    cases = run.pop("cases")
    total = sum(c["seconds"] for c in cases) or 1e-9
    slow = sorted(cases, key=lambda c: -c["seconds"])[:top]
    by_file = collections.defaultdict(float)
    for c in cases:
        by_file[c["file"]] += c["seconds"]
    files = sorted(by_file.items(), key=lambda kv: -kv[1])[:top]
    run.update(test_s=round(total, 1),
               slowest=[{"test": c["test"], "seconds": round(c["seconds"], 1), "share": round(c["seconds"] / total, 3)}
                        for c in slow],
               slowest_share=round(sum(c["seconds"] for c in slow) / total, 3),
               files=[{"file": f, "seconds": round(s, 1), "share": round(s / total, 3)} for f, s in files])
    return run


def measure(args: argparse.Namespace) -> dict:
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="segsynth-suite-") as tmp:
        full = digest(run_pytest([], Path(tmp) / "full.xml"), args.top)
        fast = digest(run_pytest(["-m", FAST_MARKS], Path(tmp) / "fast.xml"), args.top)
    return {"command": "python benchmarks/test_suite.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(), "load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            "targets": TARGETS, "full": full, "fast": fast, "top": args.top}


def verdict(seconds: float, target: float) -> str:
    return f"**met** ({seconds} s)" if seconds <= target else f"**missed** by {round(seconds - target, 1)} s ({seconds} s)"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60)} s"


def section(r: dict) -> str:
    full, fast, t = r["full"], r["fast"], r["targets"]
    lines = [HEADING, "",
             f"`{r['command']}` ({r['date']}; {r['cores']} cores, one-minute load average {r['load_avg'][0]} at the "
             f"start and {r['load_avg'][1]} at the end). The suite is what `make test` runs (`pytest -q -ra`), the fast "
             f"set what `make test-fast` runs (`-m \"{FAST_MARKS}\"`); one after the other, the wall time of each "
             "`pytest` process.", "",
             "| run | tests | passed | failed | skipped | wall | summed test time |", "|---|---|---|---|---|---|---|"]
    for name, run in (("suite (`make test`)", full), ("fast set (`make test-fast`)", fast)):
        lines.append(f"| {name} | {run['tests']} | {run['passed']} | {run['failed']} | {run['skipped']} | "
                     f"{_minutes(run['wall_s'])} | {run['test_s']} s |")
    lines += ["",
              f"- Target, the suite in at most {t['full_s']} s: {verdict(full['wall_s'], t['full_s'])}.",
              f"- Target, the fast set under {t['fast_s']} s: {verdict(fast['wall_s'], t['fast_s'])}."]
    if full["failed"] or fast["failed"]:
        lines.append(f"- Failures: {full['failed']} in the suite, {fast['failed']} in the fast set ({full['summary']}).")
    lines += ["", "The suite's slowest tests (setup, call and teardown; a shared fixture is "
                  f"paid by its first test), {round(100 * full['slowest_share'], 1)}% of its summed test time:", "",
              "| test | s | share |", "|---|---|---|"]
    lines += [f"| `{c['test']}` | {c['seconds']} | {round(100 * c['share'], 1)}% |" for c in full["slowest"]]
    lines += ["", "By file (the slowest):", "", "| file | s | share |", "|---|---|---|"]
    lines += [f"| `{f['file']}` | {f['seconds']} | {round(100 * f['share'], 1)}% |" for f in full["files"]]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--top", type=int, default=15, help="slowest tests and files listed (default 15)")
    p.add_argument("--results", default=str(REPO / "outputs" / "bench" / "test_suite.json"))
    p.add_argument("--section-only", action="store_true", help="render the section from --results without measuring")
    p.add_argument("--write", action="store_true", help=f"rewrite the '{HEADING}' section of BENCHMARKS.md")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return finish(args, measure, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
