"""The old name of ``jobs/synth.py`` (``segsynth synth``), kept so existing ``ray job submit``
scripts keep working; new scripts use ``jobs/synth.py``."""
import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("synth.py")), run_name="__main__")
