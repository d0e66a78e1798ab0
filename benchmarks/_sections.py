"""Writing one benchmark's section of BENCHMARKS.md, leaving the other sections as they are."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

# The real dev pairs the CPU recipe's ``best/`` was not selected on (it selects on ECSSD dev 1-50):
# (label, folder under DATA/eval, stems; None: all pairs). Benchmarks report on these.
HELD_OUT = (("ecssd_51-100", "ecssd_dev", "51-100"), ("pascal_s_1-100", "pascal_s_dev", None))


def held_out_pairs(data: str | Path) -> list[tuple[str, list[dict]]]:
    """``[(label, items)]`` of :data:`HELD_OUT` in the shared data folder ``data``; items as
    :func:`segsynth.io.labelled_folder` returns them (``stem, image, mask, category``)."""
    from segsynth import io

    return [(label, io.labelled_folder(Path(data) / "eval" / folder, stems)) for label, folder, stems in HELD_OUT]


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


def publish(results: dict, section: Callable[[dict], str], heading: str, save_to: Path | None = None,
            write: bool = False) -> str:
    """A benchmark's ending: save ``results`` as JSON (when ``save_to``), print ``section(results)``
    and, with ``write``, put it into BENCHMARKS.md in place of the old section."""
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_text(json.dumps(results, indent=2, default=float))
    text = section(results)
    print(text)
    if write:
        write_section(Path(__file__).resolve().parents[1] / "BENCHMARKS.md", heading, text)
    return text


def finish(args, run: Callable[[object], dict], section: Callable[[dict], str], heading: str) -> int:
    """The common ``main`` ending: with ``--section-only``, render the section from the saved
    ``--results``; otherwise ``run(args)``, save the results there and render them
    (``--write``: into BENCHMARKS.md)."""
    if args.section_only:
        publish(json.loads(Path(args.results).read_text()), section, heading, write=args.write)
    else:
        publish(run(args), section, heading, save_to=Path(args.results), write=args.write)
    return 0
