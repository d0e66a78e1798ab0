"""``segsynth review export TASK_DIR --out DIR``: answers to parquet and CSV, results, and the
accepted masks as a labelled folder.

Writes ``DIR/answers.parquet`` and ``DIR/answers.csv`` (one row per current answer: ``item``
(the stem), ``annotator``, ``choice`` (what it means: a candidate's name, ``none``, ``tie``,
``skip``), ``key`` (what was pressed), ``version``, ``shown``, ``created_at``, ``latency_ms``,
``category``, ``item_id``; ``segsynth eval`` reads it as ``preferences``; in the CSV a text cell
that a spreadsheet would take for a formula, e.g. an annotator named ``=2+3``, starts with ``'``,
the parquet keeps every value as given), ``DIR/results.json``
(majority per item, agreement, win rates and ranking for a study: :mod:`segsynth.review.results`)
and, for pick and accept tasks, the labelled folder ``DIR/images/``, ``DIR/masks/``,
``DIR/categories.csv`` of the items whose majority chose a candidate, which training
(``data: [{path: DIR, kind: labelled}]``) and the cutouts stage (``kind: pairs``) read directly.
"""
from __future__ import annotations

import csv
import io as _pyio
import json
import logging
import shutil
from pathlib import Path

from segsynth import io
from segsynth.review import results as R
from segsynth.review.build import MEDIA
from segsynth.review.store import Store

log = logging.getLogger(__name__)

ANSWER_COLUMNS = ("item", "annotator", "choice", "key", "version", "shown", "created_at", "latency_ms", "category", "item_id")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what Excel, LibreOffice and Sheets read as a formula (OWASP)


def spreadsheet_safe(value):
    """``value`` for a CSV cell: text a spreadsheet would evaluate gets a leading ``'`` (shown as
    text, the quote hidden); numbers and other text as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def answer_rows(store: Store) -> list[dict]:
    """Current answers (skips included) in the export's columns."""
    return [{"item": a["stem"], "annotator": a["annotator"], "choice": a["meaning"], "key": a["choice"],
             "version": a["version"] or "", "shown": "|".join(a["shown"]), "created_at": a["created_at"],
             "latency_ms": a["latency_ms"], "category": a["category"], "item_id": a["item_id"]}
            for a in store.answers()]


def task_results(store: Store) -> dict:
    """What :func:`segsynth.review.results.summarize` makes of the task's answers (skips left out)."""
    rows = [{"item_id": a["item_id"], "annotator": a["annotator"], "choice": a["meaning"], "shown": a["shown"]}
            for a in store.answers() if a["choice"] != "skip"]
    if store.kind == "accept":
        rows = [{**r, "choice": "reject" if r["choice"] == "none" else "accept"} for r in rows]
    models = list(store.meta["candidates"]) if store.kind == "compare" else None
    if not rows:
        return {"kind": store.kind, "answers": 0, "items": 0}
    out = {**R.summarize(store.kind, rows, models), "majority": R.majority(rows)}
    if "items_for_width_0.1" in out:  # how many more items (beyond those answered) that interval needs
        out["items_more_for_width_0.1"] = max(0, out["items_for_width_0.1"] - out["items"])
    return out


def export(task_dir: str, out: str) -> dict:
    """Write the export of ``task_dir`` to ``out``; returns a summary."""
    io.require_input(task_dir, "TASK_DIR", "folder")
    store = Store(task_dir)
    io.require_output(out)
    dest = Path(out)
    rows = answer_rows(store)
    io.write_parquet(rows if rows else _empty_table(), str(dest / "answers.parquet"))
    buf = _pyio.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ANSWER_COLUMNS))
    w.writeheader()
    w.writerows({k: spreadsheet_safe(v) for k, v in r.items()} for r in rows)
    (dest / "answers.csv").write_text(buf.getvalue())
    res = task_results(store)
    (dest / "results.json").write_text(json.dumps({**res, "flags": store.flags(), "progress": store.progress()},
                                                  indent=2, default=str))
    accepted = _write_labelled(store, dest, res.get("majority", {})) if store.kind in ("pick", "accept") else 0
    summary = {"out": str(dest), "answers": len([r for r in rows if r["key"] != "skip"]), "items": res.get("items", 0),
               "accepted": accepted, "answers_csv": str(dest / "answers.csv")}
    log.debug("review export: %s", summary)
    return summary


def _empty_table():
    import pyarrow as pa

    return pa.table({c: pa.array([], pa.string()) for c in ANSWER_COLUMNS})


def _write_labelled(store: Store, dest: Path, majority: dict) -> int:
    """The items whose majority chose a candidate: photo, that candidate's mask, category."""
    media = store.folder / MEDIA
    cats, n = [], 0
    for item_id, m in majority.items():
        choice = m.get("choice")
        if choice in (None, "none", "reject", "tie"):
            continue
        it = store.item(item_id)
        cands = store.candidates(item_id)
        if store.kind == "accept":
            choice = next(iter(cands.values()))["name"]
        cand = next((c for c in cands.values() if c["name"] == choice), None)
        if cand is None:
            continue
        (dest / "images").mkdir(parents=True, exist_ok=True)
        (dest / "masks").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(it["image"], dest / "images" / (it["stem"] + Path(it["image"]).suffix.lower()))
        shutil.copyfile(media / item_id / f"{cand['cand_id']}.png", dest / "masks" / f"{it['stem']}.png")
        cats.append((it["stem"], it["category"] or "unknown", choice))
        n += 1
    if cats:
        with open(dest / "categories.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["stem", "category", "candidate"])
            w.writerows(cats)
    return n
