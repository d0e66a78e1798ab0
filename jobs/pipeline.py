"""The whole pipeline as one Ray job: ``ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/pipeline.py
--config configs/pipeline.yaml [key=value ...]``.

Runs ``segsynth pipeline``: cutouts -> rooms -> synth -> train -> eval -> export, skipping the
steps whose output is complete, so resubmitting a failed or stopped job resumes where it stopped.
Inside a submitted job RAY_ADDRESS is set, so every step joins the cluster it was submitted to.
"""
import sys

from segsynth.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
