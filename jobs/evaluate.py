"""The old name of ``jobs/eval.py`` (``segsynth eval``), kept so existing ``ray job submit``
scripts keep working; new scripts use ``jobs/eval.py``."""
import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("eval.py")), run_name="__main__")
