"""segsynth: train a background-removal model for your own catalog from synthetic composites.

One package per stage (``cutouts``, ``rooms``, ``synth``, ``train``, ``evaluate``, ``serve``,
``review``, ``active``), each with its config, its pure code and one Ray edge (``job.py``); shared
modules beside them (``config``, ``io``, ``rng``, ``split``, ``preprocess``, ``white``, ``model``,
``predict``, ``metrics``). See docs/development.md, "How the code is laid out".

The Python API, like rembg's: ``from segsynth import remove, new_session`` (see
:mod:`segsynth.serve.api`); it is imported on first use, so ``import segsynth`` stays light.
"""
__version__ = "0.1.0"
__all__ = ["remove", "new_session", "__version__"]


def __getattr__(name: str):
    if name in ("remove", "new_session"):
        from segsynth.serve import api

        return getattr(api, name)
    raise AttributeError(f"module 'segsynth' has no attribute {name!r}")
