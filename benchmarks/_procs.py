"""This machine's processes from /proc (Linux), for benchmarks that account for CPU and memory,
and a sampler thread that reads them every few seconds while a job runs."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, NamedTuple

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Proc(NamedTuple):
    ppid: int
    cmdline: str
    user: int    # CPU time in clock ticks
    kernel: int
    rss: int     # bytes


def available() -> bool:
    return Path("/proc/stat").exists()


def proc_table() -> dict[int, Proc]:
    """``{pid: Proc}`` of every process now ({} where there is no /proc)."""
    table = {}
    if not available():
        return table
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
            cmd = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # ended meanwhile
            continue
        rest = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state, ppid, ...
        table[int(entry)] = Proc(int(rest[1]), cmd, int(rest[11]), int(rest[12]), int(rest[21]) * PAGE)
    return table


def below(table: dict[int, Proc], root: int) -> set[int]:
    """``root`` and its descendants in ``table`` (parents have lower pids unless pids wrapped)."""
    tree = {root}
    for pid in sorted(table):
        if table[pid].ppid in tree:
            tree.add(pid)
    return tree


def cpu_states() -> list[int]:
    """The machine's CPU time by state (user, nice, system, idle, iowait, irq, softirq), in ticks."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:8]]


class Sampler:
    """Calls ``sample()`` now and every ``every_s`` in a daemon thread while the context is open."""

    def __init__(self, sample: Callable[[], None], every_s: float):
        self.sample, self.every_s, self.stop = sample, every_s, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while True:
            self.sample()
            if self.stop.wait(self.every_s):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
