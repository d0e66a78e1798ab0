"""The evaluation stage: models on labelled folders -> per-sample metrics and a report.

``config`` (EvalConfig), ``score`` (items, per-item prediction and metrics), ``report``,
``evalset`` (building a test set from a catalog), ``job`` (Ray Data: the only module importing Ray).
"""
