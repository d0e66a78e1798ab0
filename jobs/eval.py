"""Evaluation as a Ray job: ``ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/eval.py --config configs/eval.yaml out=s3://bucket/eval``.

Inside a submitted job RAY_ADDRESS is set, so the job joins the cluster it was submitted to;
each model gets its own actor pool (``workers`` actors, ``gpus_per_worker`` GPUs each).
"""
import sys

from segsynth.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
