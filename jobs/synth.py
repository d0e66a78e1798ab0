"""Synthesis as a Ray job: ``ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/synth.py --config configs/synth.yaml out=s3://bucket/synth``.

Inside a submitted job RAY_ADDRESS is set, so the job joins the cluster it was submitted to.
"""
import sys

from segsynth.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
