"""Statistics for the review app: majority answers, agreement, win rates, Bradley-Terry.

Pure functions over plain answer rows; numpy and the standard library only, so an export or a
report can call them without Ray or torch.

An answer is one person's answer to one item (skips are not answers and are not passed in)::

    {"item_id": "a1", "annotator": "ana", "choice": "ours"}                    # pick / accept
    {"item_id": "c7", "annotator": "ben", "choice": "tie", "shown": ["dis", "ours"]}  # compare

``choice`` is a candidate's name (a model name such as ``"ours"`` or ``"dis"``), ``"none"`` (no
candidate fits; in a compare task: all shown are bad), ``"tie"`` (compare tasks) or
``"accept"``/``"reject"`` (accept tasks). ``shown`` (compare tasks only) lists the model names
shown for the item, in any order. Every answer counts once as given: if the app lets one person
answer an item twice, keep one of the two before calling these functions.

    majority(answers)                 # per item: the majority choice and its share of the votes
    agreement(answers)                # Fleiss' kappa over the items with the usual number of raters
    win_rates(answers, models)        # per model: wins / times shown, with a Wilson interval
    bradley_terry(answers, models)    # per model: a strength, summing to 1
    summarize(kind, answers, models)  # what an export or a report shows

Conventions:

- In compare tasks ``"tie"`` and ``"none"`` are not a win for any shown model
  (:func:`win_rates`); :func:`bradley_terry` counts both as a tie, half a win to each member of
  every pair of shown models, as LMSYS's Chatbot Arena counts "tie" and "both bad".
- Bradley-Terry strengths sum to 1, so ``p[a] / (p[a] + p[b])`` is the chance that ``a`` is
  preferred to ``b``.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

TIE = "tie"
NONE = "none"
KINDS = ("pick", "accept", "compare")
ACCEPT_CHOICES = ("accept", "reject")


def _check_answers(answers: Iterable[Mapping[str, Any]], compare: bool = False) -> list[Mapping[str, Any]]:
    """The answers as a list, each checked for string ``item_id``, ``annotator`` and ``choice``
    (and, when ``compare``, a ``shown`` list of at least two distinct names that holds the choice
    unless the choice is ``"tie"`` or ``"none"``)."""
    rows = list(answers)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"answer {i} must be a dict with item_id, annotator and choice, got {type(row).__name__}")
        for key in ("item_id", "annotator", "choice"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"answer {i} needs a string {key!r}, got {row.get(key)!r}: {dict(row)}")
        if compare:
            shown = row.get("shown")
            if not isinstance(shown, (list, tuple)) or not all(isinstance(s, str) for s in shown):
                raise ValueError(f"compare answer {i} needs 'shown', a list of model names, got {shown!r}")
            if len(set(shown)) != len(shown) or len(shown) < 2:
                raise ValueError(f"compare answer {i} must show at least two distinct models, got {list(shown)}")
            if row["choice"] not in shown and row["choice"] not in (TIE, NONE):
                raise ValueError(f"compare answer {i} chose {row['choice']!r}, which was not shown; "
                                 f"valid: {sorted(shown)}, {TIE!r}, {NONE!r}")
    return rows


def _check_models(models: Sequence[str], answers: list[Mapping[str, Any]]) -> list[str]:
    """``models`` as a list of at least two distinct names, none reserved, covering every shown name."""
    if isinstance(models, str):
        raise ValueError(f"models must be a list of model names, got the string {models!r}")
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"a comparison needs at least two models, got {models}")
    if len(set(models)) != len(models):
        raise ValueError(f"model names must be distinct, got {models}")
    reserved = [m for m in models if m in (TIE, NONE)]
    if reserved:
        raise ValueError(f"{reserved} cannot be model names: {TIE!r} and {NONE!r} are answers")
    known = set(models)
    unknown = sorted({s for row in answers for s in row["shown"]} - known)
    if unknown:
        raise ValueError(f"answers show models {unknown} that are not in models; valid: {models}")
    return models


def majority(answers: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The majority answer of every item.

    Returns ``{item_id: {"choice": str | None, "votes": int, "n": int, "agreement": float}}``
    in order of the items' first answer: ``choice`` is the most chosen answer (``None`` when two
    or more choices share the most votes), ``votes`` its number of votes (also on a tie), ``n``
    the item's number of answers and ``agreement`` = ``votes / n``. ``"none"`` and ``"tie"`` are
    choices like any other. No answers give ``{}``.
    """
    rows = _check_answers(answers)
    by_item: dict[str, Counter] = {}
    for row in rows:
        by_item.setdefault(row["item_id"], Counter())[row["choice"]] += 1
    out: dict[str, dict[str, Any]] = {}
    for item, counts in by_item.items():
        ranked = counts.most_common()
        votes = ranked[0][1]
        n = sum(counts.values())
        top = [c for c, v in ranked if v == votes]
        out[item] = {"choice": top[0] if len(top) == 1 else None, "votes": votes, "n": n, "agreement": votes / n}
    return out


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa (Fleiss 1971) of ``counts``, an ``(items, categories)`` array of integers:
    how many raters put each item in each category.

    Every item needs the same number of raters ``n >= 2`` (the row sums). With
    ``P_i = (sum_j c_ij^2 - n) / (n (n - 1))``, ``p_j = sum_i c_ij / (items * n)``,
    ``P = mean(P_i)`` and ``P_e = sum_j p_j^2``, kappa is ``(P - P_e) / (1 - P_e)``: 1 for
    perfect agreement, 0 for the agreement chance gives, negative below that.

    Raises ``ValueError`` for rows with unequal rater counts (naming them), fewer than 2 raters,
    negative or non-integer counts, and when every rating falls in one category (``P_e = 1``:
    no variation, so kappa is undefined).
    """
    c = np.asarray(counts)
    if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
        raise ValueError(f"counts must be an (items, categories) array with at least one item, got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.number) or np.issubdtype(c.dtype, np.complexfloating):
        raise ValueError(f"counts must be numbers, got dtype {c.dtype}")
    if not np.all(np.isfinite(c)) or np.any(c < 0) or np.any(c != np.round(c)):
        raise ValueError("counts must be non-negative integers (raters per item and category)")
    c = c.astype(np.float64)
    raters = c.sum(axis=1)
    values, freq = np.unique(raters, return_counts=True)
    n = float(values[np.argmax(freq)])  # the most common row sum; the others are the odd ones
    odd = np.flatnonzero(raters != n)
    if odd.size:
        shown = ", ".join(f"{i} ({int(raters[i])})" for i in odd[:10]) + (" ..." if odd.size > 10 else "")
        raise ValueError(f"Fleiss' kappa needs the same number of raters for every item: most rows have "
                         f"{int(n)}, rows {shown} differ (row index (raters))")
    if n < 2:
        raise ValueError(f"Fleiss' kappa needs at least 2 raters per item, got {int(n)}")
    p_item = ((c * c).sum(axis=1) - n) / (n * (n - 1))
    p_cat = c.sum(axis=0) / (c.shape[0] * n)
    p_bar = float(p_item.mean())
    p_e = float((p_cat * p_cat).sum())
    if math.isclose(p_e, 1.0):
        raise ValueError("Fleiss' kappa is undefined when every rating falls in one category (no variation)")
    return (p_bar - p_e) / (1.0 - p_e)


def agreement(answers: Iterable[Mapping[str, Any]], categories: Sequence[str] | None = None) -> dict[str, Any]:
    """Fleiss' kappa among the people who answered the same items.

    Fleiss' kappa needs one number of raters for every item, so only the items with the most
    common number of answers (at least 2) are used; on a tie between two such numbers, the
    larger. ``categories`` are the possible choices (default: the choices that occur); a choice
    outside them is an error.

    Returns ``{"kappa": float | None, "items": int, "raters": int}``: ``items`` is the number of
    items used and ``raters`` their number of answers each (0 and 0 when no item has two answers).
    ``kappa`` is ``None`` when fewer than 2 items can be used, or when those items show no
    variation to measure (every answer the same choice, where kappa is undefined).
    """
    rows = _check_answers(answers)
    if categories is not None:
        if isinstance(categories, str):
            raise ValueError(f"categories must be a list of choices, got the string {categories!r}")
        categories = list(categories)
        if len(set(categories)) != len(categories):
            raise ValueError(f"categories must be distinct, got {categories}")
        stray = sorted({row["choice"] for row in rows} - set(categories))
        if stray:
            raise ValueError(f"answers hold choices {stray} that are not in categories {categories}")
    else:
        categories = sorted({row["choice"] for row in rows})
    by_item: dict[str, Counter] = {}
    for row in rows:
        by_item.setdefault(row["item_id"], Counter())[row["choice"]] += 1
    sizes = Counter(sum(c.values()) for c in by_item.values())
    sizes = {k: v for k, v in sizes.items() if k >= 2}
    if not sizes:
        return {"kappa": None, "items": 0, "raters": 0}
    raters = max(sizes, key=lambda k: (sizes[k], k))
    used = [c for c in by_item.values() if sum(c.values()) == raters]
    out = {"kappa": None, "items": len(used), "raters": raters}
    if len(used) < 2:
        return out
    index = {name: j for j, name in enumerate(categories)}
    counts = np.zeros((len(used), len(categories)), dtype=np.int64)
    for i, c in enumerate(used):
        for choice, k in c.items():
            counts[i, index[choice]] = k
    if np.count_nonzero(counts.sum(axis=0)) < 2:  # one category only: kappa undefined
        return out
    out["kappa"] = fleiss_kappa(counts)
    return out


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` for ``k`` successes in ``n`` trials (Wilson 1927,
    without continuity correction; ``z = 1.96`` for 95%). ``n = 0`` gives ``(0.0, 1.0)``."""
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise ValueError(f"k and n must be whole numbers, got k={k!r}, n={n!r}")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not z > 0:
        raise ValueError(f"z must be positive, got {z}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # at k = 0 or k = n the bound is exactly 0 or 1; min/max only remove rounding error
    return (max(0.0, center - half), min(1.0, center + half))


def win_rates(answers: Iterable[Mapping[str, Any]], models: Sequence[str], z: float = 1.96) -> dict[str, dict[str, Any]]:
    """Win rate of every model in compare answers.

    Returns ``{model: {"wins": int, "shown": int, "ties": int, "none": int, "rate": float | None,
    "low": float, "high": float}}`` in the order of ``models``: ``shown`` counts the answers that
    showed the model, ``wins`` those that chose it, ``ties`` and ``none`` those (among the shown)
    answered ``"tie"`` or ``"none"``; both are not a win for any shown model. ``rate`` is
    ``wins / shown`` (``None`` when never shown) and ``low``/``high`` its Wilson interval
    (``(0.0, 1.0)`` when never shown).

    Every name in an answer's ``shown`` must be in ``models`` (at least two distinct names).
    """
    rows = _check_answers(answers, compare=True)
    models = _check_models(models, rows)
    stats = {m: {"wins": 0, "shown": 0, "ties": 0, "none": 0} for m in models}
    for row in rows:
        for m in row["shown"]:
            s = stats[m]
            s["shown"] += 1
            if row["choice"] == m:
                s["wins"] += 1
            elif row["choice"] == TIE:
                s["ties"] += 1
            elif row["choice"] == NONE:
                s["none"] += 1
    for s in stats.values():
        s["rate"] = s["wins"] / s["shown"] if s["shown"] else None
        s["low"], s["high"] = wilson_interval(s["wins"], s["shown"], z)
    return stats


def bradley_terry(answers: Iterable[Mapping[str, Any]], models: Sequence[str], iters: int = 1000,
                  tol: float = 1e-9, prior: float = 1.0) -> dict[str, float]:
    """Bradley-Terry strengths of ``models`` from compare answers, summing to 1.

    Pairwise outcomes: an answer choosing ``X`` among ``shown`` is a win of ``X`` over every other
    shown model; ``"tie"`` and ``"none"`` give half a win to each member of every pair of shown
    models. ``prior`` virtual ties (default 1) are added between every two models, so a model with
    no wins keeps a small positive strength and a never-shown model sits in the middle.

    Fitted with Hunter's (2004) MM algorithm: ``p_i <- W_i / sum_j n_ij / (p_i + p_j)``, with
    ``W_i`` the wins of ``i`` and ``n_ij`` the comparisons of ``i`` and ``j``, normalised to sum 1
    after each step, until no strength moves by more than ``tol`` (at most ``iters`` steps; a
    warning is logged if it has not settled). ``p[a] / (p[a] + p[b])`` is the modelled chance
    that ``a`` is preferred to ``b``.

    Returns ``{model: strength}`` in the order of ``models``.
    """
    rows = _check_answers(answers, compare=True)
    models = _check_models(models, rows)
    if not prior > 0:
        raise ValueError(f"prior must be positive (virtual ties per pair of models), got {prior}")
    if iters < 1 or not tol > 0:
        raise ValueError(f"need iters >= 1 and tol > 0, got iters={iters}, tol={tol}")
    index = {m: i for i, m in enumerate(models)}
    m = len(models)
    wins = np.full((m, m), prior / 2.0)  # wins[i, j]: wins of i over j, starting from the prior ties
    np.fill_diagonal(wins, 0.0)
    for row in rows:
        shown = [index[s] for s in row["shown"]]
        if row["choice"] in (TIE, NONE):
            for a in shown:
                for b in shown:
                    if a != b:
                        wins[a, b] += 0.5
        else:
            w = index[row["choice"]]
            for b in shown:
                if b != w:
                    wins[w, b] += 1.0
    total = wins.sum(axis=1)
    games = wins + wins.T
    p = np.full(m, 1.0 / m)
    for _ in range(iters):
        new = total / (games / (p[:, None] + p[None, :])).sum(axis=1)
        new /= new.sum()
        done = np.max(np.abs(new - p)) < tol
        p = new
        if done:
            break
    else:
        logger.warning("Bradley-Terry did not settle to tol=%g in %d iterations", tol, iters)
    return {name: float(p[i]) for name, i in index.items()}


def items_for_width(p: float, width: float, z: float = 1.96) -> int:
    """Items needed so that a proportion near ``p`` has a normal-approximation interval of total
    width ``width``: ``ceil(z^2 p (1 - p) / (width / 2)^2)`` (385 for p = 0.5, width 0.1, 95%).
    It is 0 at ``p`` = 0 or 1, where the approximation has no width; ``p = 0.5`` is the worst case.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a proportion in 0..1, got {p}")
    if not 0.0 < width <= 1.0:
        raise ValueError(f"width must be in (0, 1], got {width}")
    if not z > 0:
        raise ValueError(f"z must be positive, got {z}")
    need = z * z * p * (1.0 - p) / (width / 2.0) ** 2
    return int(math.ceil(need - 1e-9))  # the tolerance keeps e.g. 400.00000000000006 at 400


def summarize(kind: str, answers: Iterable[Mapping[str, Any]], models: Sequence[str] | None = None) -> dict[str, Any]:
    """What an export or a report shows for one task kind.

    Every kind returns ``"kind"``, ``"answers"`` (number of answers), ``"items"`` (number of items
    with an answer), ``"counts"`` (``{choice: answers}``, most chosen first) and ``"agreement"``
    (:func:`agreement`).

    ``"pick"`` and ``"accept"`` add ``"majority_counts"`` (``{choice: items whose majority is that
    choice}``, most first) and ``"no_majority"`` (items with a tie between top choices). Accept
    answers must be ``"accept"`` or ``"reject"``, and agreement uses both as categories.

    ``"compare"`` needs ``models`` and adds ``"win_rates"`` (:func:`win_rates`),
    ``"bradley_terry"`` (:func:`bradley_terry`; ``None`` with only two models, where the win
    rates say the same) and ``"items_for_width_0.1"``: the items needed for a 95% interval of
    width 0.1 on ``models[0]``'s win rate, at its observed rate (0.5, the worst case, when it was
    never shown). Put the model the study is about first.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; valid: {', '.join(KINDS)}")
    rows = _check_answers(answers, compare=(kind == "compare"))
    counts = dict(Counter(row["choice"] for row in rows).most_common())
    out: dict[str, Any] = {"kind": kind, "answers": len(rows), "items": len({row["item_id"] for row in rows}),
                           "counts": counts}
    if kind in ("pick", "accept"):
        categories = None
        if kind == "accept":
            stray = sorted(set(counts) - set(ACCEPT_CHOICES))
            if stray:
                raise ValueError(f"accept answers must be one of {list(ACCEPT_CHOICES)}, got {stray}")
            categories = list(ACCEPT_CHOICES)
        per_item = majority(rows)
        winners = Counter(v["choice"] for v in per_item.values() if v["choice"] is not None)
        out["majority_counts"] = dict(winners.most_common())
        out["no_majority"] = sum(v["choice"] is None for v in per_item.values())
        out["agreement"] = agreement(rows, categories)
        return out
    if models is None:
        raise ValueError("summarize('compare', ...) needs models, the first being the one the study is about, "
                         "e.g. models=['ours', 'dis']")
    rates = win_rates(rows, models)
    models = list(models)
    first = rates[models[0]]["rate"]
    out["win_rates"] = rates
    out["bradley_terry"] = bradley_terry(rows, models) if len(models) > 2 else None
    out["agreement"] = agreement(rows)
    out["items_for_width_0.1"] = items_for_width(0.5 if first is None else first, 0.1)
    return out
