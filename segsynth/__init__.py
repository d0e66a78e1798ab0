"""segsynth: train a background-removal model for your own catalog from synthetic composites.

One package per stage (``cutouts``, ``rooms``, ``synth``, ``train``, ``evaluate``, ``serve``),
each with its config, its pure code and one Ray edge (``job.py``); shared modules beside them
(``config``, ``io``, ``rng``, ``split``, ``preprocess``, ``white``, ``model``, ``predict``,
``metrics``). See "How the code is laid out" in the README.
"""
__version__ = "0.1.0"
