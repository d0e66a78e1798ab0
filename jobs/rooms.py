"""Empty rooms as a Ray job: ``ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/rooms.py --config configs/rooms.yaml out=s3://bucket/rooms``.

Inside a submitted job RAY_ADDRESS is set, so the job joins the cluster it was submitted to; the
diffusion actors go to the GPU workers (``num_gpus`` per actor, ``workers`` actors).
"""
import sys

from segsynth.cli import main

if __name__ == "__main__":
    sys.exit(main(["rooms", *sys.argv[1:]]))
