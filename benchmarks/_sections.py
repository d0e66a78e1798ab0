"""Writing one benchmark's section of BENCHMARKS.md, leaving the other sections as they are."""
from __future__ import annotations

from pathlib import Path


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the section that starts with ``heading`` (e.g. ``## Rooms``) by ``text``, or append it.

    ``text`` includes the heading line itself.
    """
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(heading + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(heading))
        new = old[:start] + text.rstrip("\n") + "\n\n" + (old[end + 1:] if end >= 0 else "")
    path.write_text(new.rstrip("\n") + "\n")
