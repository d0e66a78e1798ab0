"""Active learning as a Ray job: ``ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/active.py
--config configs/demo/active.yaml [key=value ...]``.

Runs ``segsynth active round``: score -> select -> (auto-accept) and, once the round's review
task is answered, harvest -> train -> evaluate, into ``OUT/round-N/``; run it again after people
have answered in the review app (``segsynth review serve OUT/round-N/review``).
"""
import sys

from segsynth.cli import main

if __name__ == "__main__":
    sys.exit(main(["active", "round", *sys.argv[1:]]))
