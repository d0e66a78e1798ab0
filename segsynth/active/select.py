"""Category ranking and selection: where the model fails most, and which photos people see.

Both are deterministic: the same scores, config and seed give the same ranking and queue
(ties break by category name and photo key; the control slice comes from a seeded generator).
"""
from __future__ import annotations

import csv
import io as _pyio
import logging
import math
from collections import Counter, defaultdict
from typing import Iterable, Mapping

import numpy as np

from segsynth import io
from segsynth.active.config import SelectConfig
from segsynth.active.pool import split_categories
from segsynth.active.signals import hamming
from segsynth.rng import rng_for

log = logging.getLogger(__name__)

RANKING_COLUMNS = ("rank", "category", "n", "mean", "share_above", "max")
QUEUE_COLUMNS = ("key", "stem", "source", "category", "selected_for", "slice", "score", "image", "phash")


def _scored(rows: Iterable[Mapping]) -> list[Mapping]:
    return [r for r in rows if r.get("score") is not None and math.isfinite(float(r["score"]))]


def category_ranking(rows: Iterable[Mapping], threshold: float = 0.3, min_count: int = 3,
                     rank_by: str = "mean") -> list[dict]:
    """Scores per category, worst first: ``{rank, category, n, mean, share_above, max}``.

    A photo counts for each of its categories (a room shows many); photos without a score
    (unreadable, skipped as white) count for none; categories with fewer than ``min_count``
    scored photos are left out (their mean says little).
    """
    if rank_by not in ("mean", "share_above"):
        raise ValueError(f"rank_by must be 'mean' or 'share_above', got {rank_by!r}")
    per: dict[str, list[float]] = defaultdict(list)
    for r in _scored(rows):
        for c in split_categories(r.get("category")):
            per[c].append(float(r["score"]))
    table = []
    for c, v in per.items():
        if len(v) < min_count:
            continue
        a = np.asarray(v)
        table.append({"category": c, "n": len(v), "mean": math.fsum(v) / len(v),  # exact: the same in any row order
                      "share_above": float((a >= threshold).mean()), "max": float(a.max())})
    table.sort(key=lambda t: (-t[rank_by], -t["mean"], t["category"]))
    for i, t in enumerate(table):
        t["rank"] = i + 1
    return [{k: t[k] for k in RANKING_COLUMNS} for t in table]


def write_ranking(ranking: list[dict], folder: str, top: int = 25, threshold: float | None = None) -> dict[str, str]:
    """``ranking.csv`` (every ranked category) and ``ranking.png`` (the ``top`` worst: mean score
    per category, labelled with how many photos it has and the share at or above ``threshold``)."""
    buf = _pyio.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RANKING_COLUMNS))
    w.writeheader()
    w.writerows(ranking)
    io.write_bytes(io.join(folder, "ranking.csv"), buf.getvalue().encode())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ranking[:top][::-1]  # worst at the top of a horizontal bar chart
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * max(4, len(shown)) + 1.2))
    y = np.arange(len(shown))
    means = [t["mean"] for t in shown]
    ax.barh(y, means, color="#c0392b")
    ax.set_yticks(y, [f"{t['category']} (n={t['n']})" for t in shown], fontsize=8)
    if shown:
        lo = max(0.0, min(means) - 0.1)
        ax.set_xlim(lo, min(1.0, max(means) + 0.12))
        if threshold is not None:
            for yi, t in zip(y, shown):
                ax.text(t["mean"] + 0.005, yi, f"{t['share_above']:.0%} >= {threshold}", va="center", fontsize=7)
    ax.set_xlabel("mean failure score (higher: the model is more likely wrong)")
    ax.set_title("Categories by failure score, worst first")
    fig.tight_layout()
    buf2 = _pyio.BytesIO()
    fig.savefig(buf2, format="png", dpi=110)
    plt.close(fig)
    io.write_bytes(io.join(folder, "ranking.png"), buf2.getvalue())
    return {"csv": io.join(folder, "ranking.csv"), "png": io.join(folder, "ranking.png")}


def select(rows: Iterable[Mapping], ranking: list[dict], cfg: SelectConfig, seed: int = 0,
           exclude: Iterable[str] = ()) -> tuple[list[dict], dict]:
    """The review queue: the top ``cfg.top_n`` photos by score from the ``cfg.worst_categories``
    worst categories (not on white, at most ``per_category_cap`` per category, near-duplicates
    of an earlier pick left out), then a random control slice of ``control_fraction`` of that
    many photos from the rest of the pool (not on white, not near-duplicates). Photos whose key
    is in ``exclude`` (reviewed in an earlier round) are left out. Returns (queue rows with
    ``slice`` = ``selected`` or ``control``, counts of what was left out)."""
    rows = _scored(rows)
    exclude = set(exclude)
    worst = [t["category"] for t in ranking[: cfg.worst_categories]]
    order = {c: i for i, c in enumerate(worst)}
    stats = Counter()
    eligible = []
    for r in rows:
        if bool(r.get("white_bg")):
            stats["white_background"] += 1
            continue
        if r["key"] in exclude:
            stats["reviewed_before"] += 1
            continue
        eligible.append(r)
    picked: list[dict] = []
    hashes: list[str] = []
    per_cat: Counter = Counter()

    def is_duplicate(r: Mapping) -> bool:
        h = str(r.get("phash") or "")
        return bool(h) and any(hamming(h, o) <= cfg.dup_max_hamming for o in hashes)

    for r in sorted(eligible, key=lambda r: (-float(r["score"]), str(r["key"]))):
        if len(picked) >= cfg.top_n:
            break
        mine = sorted((c for c in split_categories(r.get("category")) if c in order), key=order.get)
        if not mine:
            continue
        target = next((c for c in mine if per_cat[c] < cfg.per_category_cap), None)
        if target is None:
            stats["category_cap"] += 1
            continue
        if is_duplicate(r):
            stats["near_duplicate"] += 1
            continue
        per_cat[target] += 1
        hashes.append(str(r.get("phash") or ""))
        picked.append(_queue_row(r, target, "selected"))
    n_control = math.ceil(cfg.control_fraction * len(picked)) if cfg.control_fraction > 0 else 0
    chosen = {q["key"] for q in picked}
    rest = sorted((r for r in eligible if r["key"] not in chosen), key=lambda r: str(r["key"]))
    control: list[dict] = []
    for i in rng_for(seed, "active-control").permutation(len(rest)):
        if len(control) >= n_control:
            break
        r = rest[int(i)]
        if is_duplicate(r):
            continue
        hashes.append(str(r.get("phash") or ""))
        control.append(_queue_row(r, "", "control"))
    return picked + control, {"worst_categories": worst, **stats, "selected": len(picked), "control": len(control)}


def _queue_row(r: Mapping, target: str, slice_: str) -> dict:
    return {"key": str(r["key"]), "stem": str(r["stem"]), "source": str(r.get("source", "")),
            "category": str(r.get("category", "")), "selected_for": target, "slice": slice_,
            "score": float(r["score"]), "image": str(r["image"]), "phash": str(r.get("phash") or "")}
