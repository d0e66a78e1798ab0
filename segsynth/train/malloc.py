"""glibc malloc settings for a training process (``train.malloc: tuned``, the default).

A CPU training step allocates and frees tens of MB of activations and gradients. With glibc's
defaults each of those large blocks is mmapped, freed back to the kernel and faulted in (and
zeroed) again at the next step. A thread other than the main one (Ray Train runs the train
function in one) is worse off: its arena is a 64 MB heap, so the large blocks always go to mmap.
BENCHMARKS.md "Training overhead" has what the settings buy. The tuned settings keep freed
memory in one heap for the next step: every thread on the main arena, no mmap below 1 GiB, no
trimming below 4 GiB, 256 MiB of headroom per heap growth. The price is that the process keeps
its peak heap instead of returning it between steps (the steps reuse it).

glibc reads the ``MALLOC_*`` variables when a process starts: Ray's training workers get them
through their runtime environment (:data:`ENV`). A process that is already running
(:func:`segsynth.train.local.run_local`, a notebook) gets the thresholds with ``mallopt`` (:func:`tune`); its threads
keep the arenas they already have.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

ARENA_MAX = 1
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 4 << 30
TOP_PAD = 256 << 20

# what a worker process starts with (glibc's environment names; the trailing "_" is theirs)
ENV = {"MALLOC_ARENA_MAX": str(ARENA_MAX), "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
       "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD), "MALLOC_TOP_PAD_": str(TOP_PAD)}

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8

_applied = False  # tune() succeeded in this process


def tune() -> bool:
    """Apply the tuned settings to this running process with ``mallopt`` (once: later calls
    return at once); False where the C library has no mallopt (not glibc: musl, macOS), which then
    keeps its own allocator."""
    global _applied
    if _applied:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: the allocator keeps its defaults")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # every setting is tried, one refusal does not skip the rest
    ok = all([mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, ARENA_MAX), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        # mallopt takes an int: 4 GiB does not fit, the largest int (2 GiB) does the same job
        (_M_TRIM_THRESHOLD, min(TRIM_THRESHOLD, 2**31 - 1)), (_M_TOP_PAD, TOP_PAD))])
    if not ok:
        log.warning("glibc refused a malloc setting: training keeps the allocator's defaults for it")
    _applied = ok
    return ok


def started_tuned() -> bool:
    """Whether this process started with :data:`ENV` (what a Ray training worker should have)."""
    return all(os.environ.get(k) == v for k, v in ENV.items())


def describe() -> str:
    """How this process's allocator is set, for the model card: ``tuned at process start`` (a Ray
    training worker), ``tuned by mallopt`` (a running process: the thresholds, not the arenas its
    threads already had) or ``default``."""
    if started_tuned():
        return "tuned at process start"
    return "tuned by mallopt" if _applied else "default"
