"""segsynth: train a background-removal model for your own catalog from synthetic composites.

The numpy core (``cutouts``, ``synth``, ``metrics``, ``active``) imports without Ray or torch;
Ray lives in ``segsynth.pipeline``.
"""
__version__ = "0.1.0"
