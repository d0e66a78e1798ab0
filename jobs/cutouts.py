"""Cutouts as a Ray job: ``ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/cutouts.py --config configs/cutouts.yaml out=s3://bucket/cutouts``.

Inside a submitted job RAY_ADDRESS is set, so the job joins the cluster it was submitted to; the
extraction actors (and a teacher model, when configured) spread over its workers.
"""
import sys

from segsynth.cli import main

if __name__ == "__main__":
    sys.exit(main(["cutouts", *sys.argv[1:]]))
