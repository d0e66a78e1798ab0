"""The training stage: the FPN model on synthetic (and real) data.

``config`` (TrainConfig and its parts), ``data`` (split, mixing, decoding), ``loop`` (the
per-worker loop, plain torch), ``export`` (ONNX/TorchScript), ``job`` (Ray Train DDP: the only
module importing Ray). The model itself (:mod:`segsynth.model`) is shared with the predictors.
"""
