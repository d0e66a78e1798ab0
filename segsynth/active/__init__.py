"""Active learning: find where the model fails on real photos, pseudo-label, accept, train again.

``signals`` (failure signals without truth, a near-duplicate hash), ``pool`` (the unlabelled
photos), ``score`` (the per-photo work), ``select`` (category ranking and the review queue),
``review`` (the pick task and the auto-accept policy), ``harvest`` (accepted masks -> training
data), ``report`` (the round-over-round table); ``job`` is the Ray edge and the command.
"""
