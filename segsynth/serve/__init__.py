"""The serving stage: a model as a batched background-removal HTTP endpoint.

``config`` (ServeConfig), ``uploads`` (decoding uploads, rendering cutouts), ``service`` (the
FastAPI routes), ``remove`` (``segsynth remove``: files in-process or through an endpoint),
``job`` (the Ray Serve deployment: the only module importing Ray).
"""
