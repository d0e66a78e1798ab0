"""segsynth.train.malloc: a training step's large blocks are reused, not faulted in again."""
import json
import os
import subprocess
import sys

import pytest

from segsynth.train import malloc

# allocate and free a 64 MiB block 12 times (a step's activations), in the main thread or in
# another one (Ray Train's train function runs in one); print the minor page faults it took
PROBE = """
import json, resource, sys, threading
import numpy as np
from segsynth.train import malloc
np._core.multiarray._set_madvise_hugepage(False)  # numpy's huge pages would hide the faults
if sys.argv[1] == "tune":
    assert malloc.tune()
def work(out):
    np.ones(1 << 20)  # the thread's arena exists before the blocks, as in a Ray worker
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(12):
        a = np.ones(8 << 20)  # 64 MiB, written: every page touched
        del a
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
out = []
if sys.argv[2] == "thread":
    t = threading.Thread(target=work, args=(out,)); t.start(); t.join()
else:
    work(out)
print(json.dumps({"faults": out[0], "describe": malloc.describe()}))
"""


def _faults(mode: str, where: str, env: dict | None = None) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, where], capture_output=True, text=True, check=True,
                         env={**full, **(env or {})}, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tuned_settings_reuse_large_blocks_in_main_thread_and_worker_thread():
    pages = (64 << 20) // 4096  # one block's pages
    default_main, default_thread = _faults("default", "main"), _faults("default", "thread")
    # glibc's defaults: every block is mmapped, faulted in, and unmapped again
    assert default_main["faults"] > 8 * pages and default_thread["faults"] > 8 * pages
    assert default_main["describe"] == "default"
    # mallopt in a running process: the main thread reuses its heap
    tuned = _faults("tune", "main")
    assert tuned["faults"] < 3 * pages and tuned["describe"] == "tuned by mallopt"
    # a process started with ENV (a Ray training worker): a thread on the main arena reuses it too
    started = _faults("default", "thread", env=malloc.ENV)
    assert started["faults"] < 3 * pages and started["describe"] == "tuned at process start"
