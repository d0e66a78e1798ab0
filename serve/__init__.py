"""The Ray Serve application of segsynth (``serve run serve.app:build`` or ``serve/config.yaml``)."""
