"""Training as a Ray job: ``ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/train.py --config configs/train.yaml out=s3://bucket/train``.

Inside a submitted job RAY_ADDRESS is set, so the job joins the cluster it was submitted to;
resubmitting with the same ``name`` and ``out`` resumes from the latest checkpoint.
"""
import sys

from segsynth.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
