"""The review app's statistics against published numbers and small cases worked by hand:
Fleiss' (1971) kappa example as Wikipedia works it, Newcombe's (1998) Wilson intervals, the
textbook 385 items for +-5% at 95%, and Bradley-Terry's score equations."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from segsynth.review.results import (
    agreement,
    bradley_terry,
    fleiss_kappa,
    items_for_width,
    majority,
    summarize,
    wilson_interval,
    win_rates,
)

# Fleiss (1971) via Wikipedia "Fleiss' kappa": 10 items, 14 raters, 5 categories;
# P-bar = 0.378, P_e = 0.213, kappa = 0.210
FLEISS_TABLE = np.array([
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
])
CATEGORIES = ["c1", "c2", "c3", "c4", "c5"]


def answers_from_table(table, categories=CATEGORIES, prefix="item"):
    rows = []
    for i, counts in enumerate(table):
        r = 0
        for cat, k in zip(categories, counts):
            for _ in range(int(k)):
                rows.append({"item_id": f"{prefix}{i}", "annotator": f"r{r}", "choice": cat})
                r += 1
    return rows


def ans(item, who, choice, shown=None):
    row = {"item_id": item, "annotator": who, "choice": choice}
    if shown is not None:
        row["shown"] = list(shown)
    return row


def duels(a, b, a_wins, b_wins, ties=0, prefix=""):
    """Compare answers between two models: ``a_wins`` for a, ``b_wins`` for b, ``ties`` ties."""
    choices = [a] * a_wins + [b] * b_wins + ["tie"] * ties
    return [ans(f"{prefix}{a}-{b}-{i}", "p", c, [a, b] if i % 2 else [b, a]) for i, c in enumerate(choices)]


# --- majority ---------------------------------------------------------------------------------

def test_majority_counts_votes_and_reports_ties_as_none():
    rows = [ans("a", "x", "ours"), ans("a", "y", "ours"), ans("a", "z", "none"),
            ans("b", "x", "dis"), ans("b", "y", "ours"),
            ans("c", "x", "none")]
    out = majority(rows)
    assert list(out) == ["a", "b", "c"]
    assert out["a"] == {"choice": "ours", "votes": 2, "n": 3, "agreement": pytest.approx(2 / 3)}
    assert out["b"] == {"choice": None, "votes": 1, "n": 2, "agreement": 0.5}
    assert out["c"] == {"choice": "none", "votes": 1, "n": 1, "agreement": 1.0}
    assert majority([]) == {}


def test_answers_are_checked():
    with pytest.raises(ValueError, match="annotator"):
        majority([{"item_id": "a", "choice": "ours"}])
    with pytest.raises(ValueError, match="choice"):
        majority([{"item_id": "a", "annotator": "x", "choice": 3}])


# --- Fleiss' kappa ----------------------------------------------------------------------------

def test_fleiss_kappa_reproduces_fleiss_1971_example():
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.210, abs=5e-4)
    # a category nobody chose changes nothing
    padded = np.hstack([FLEISS_TABLE, np.zeros((10, 1), int)])
    assert fleiss_kappa(padded) == pytest.approx(fleiss_kappa(FLEISS_TABLE), abs=1e-12)


def test_fleiss_kappa_exact_small_cases():
    assert fleiss_kappa(np.array([[3, 0], [0, 3]])) == pytest.approx(1.0)  # perfect agreement
    # two raters always disagree: P_i = 0, P_e = 0.5 -> kappa = -1
    assert fleiss_kappa(np.array([[1, 1], [1, 1]])) == pytest.approx(-1.0)
    # P = (1 + 1/3) / 2 = 2/3, p = (4/6, 2/6), P_e = 5/9 -> kappa = (2/3 - 5/9) / (4/9) = 1/4
    assert fleiss_kappa(np.array([[3, 0], [1, 2]])) == pytest.approx(0.25)


def test_fleiss_kappa_rejects_bad_counts():
    with pytest.raises(ValueError, match=r"rows 2 \(3\)"):
        fleiss_kappa(np.array([[2, 2], [4, 0], [1, 2]]))
    with pytest.raises(ValueError, match="one category"):
        fleiss_kappa(np.array([[3, 0], [3, 0]]))
    with pytest.raises(ValueError, match="at least 2 raters"):
        fleiss_kappa(np.array([[1, 0], [0, 1]]))
    with pytest.raises(ValueError, match="integers"):
        fleiss_kappa(np.array([[1.5, 0.5], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        fleiss_kappa(np.array([1, 2, 3]))


def test_agreement_from_answers_matches_the_table():
    rows = answers_from_table(FLEISS_TABLE)
    out = agreement(rows)
    assert out["items"] == 10 and out["raters"] == 14
    assert out["kappa"] == pytest.approx(0.210, abs=5e-4)
    # items with an unusual number of raters are left out; an unused category changes nothing
    extra = [ans("odd", "x", "c1"), ans("odd", "y", "c2"), ans("lone", "x", "c3")]
    out2 = agreement(rows + extra, categories=CATEGORIES + ["c6"])
    assert out2 == {"kappa": pytest.approx(out["kappa"], abs=1e-12), "items": 10, "raters": 14}


def test_agreement_uses_the_most_common_rater_count():
    # three items with 2 raters (always agree), two with 3 raters (always split) -> the 2-rater items
    rows = [ans(f"p{i}", w, c) for i, c in enumerate("aba") for w in "xy"]
    rows += [ans(f"t{i}", w, c) for i in range(2) for w, c in zip("xyz", "aab")]
    out = agreement(rows)
    assert out == {"kappa": pytest.approx(1.0), "items": 3, "raters": 2}


def test_agreement_is_none_without_enough_items_or_variation():
    assert agreement([ans("a", "x", "ours"), ans("b", "x", "dis")]) == {"kappa": None, "items": 0, "raters": 0}
    assert agreement([ans("a", "x", "ours"), ans("a", "y", "dis")])["kappa"] is None  # one item
    same = [ans(i, w, "ours") for i in "abc" for w in "xy"]
    assert agreement(same) == {"kappa": None, "items": 3, "raters": 2}
    with pytest.raises(ValueError, match=r"\['dis'\]"):
        agreement([ans("a", "x", "dis")], categories=["ours", "none"])


# --- Wilson interval --------------------------------------------------------------------------

@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998), Table I, method 3 (score interval without continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe_1998(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.1611, abs=5e-5)  # mirror of 0/20
    with pytest.raises(ValueError, match="k <= n"):
        wilson_interval(3, 2)


# --- win rates --------------------------------------------------------------------------------

def test_win_rates_count_wins_ties_and_none():
    rows = [ans("1", "x", "ours", ["ours", "dis"]),
            ans("1", "y", "ours", ["dis", "ours"]),
            ans("2", "x", "dis", ["ours", "dis"]),
            ans("3", "x", "tie", ["ours", "dis"]),
            ans("4", "x", "none", ["ours", "dis", "u2net"]),
            ans("5", "x", "u2net", ["u2net", "dis"])]
    out = win_rates(rows, ["ours", "dis", "u2net", "never"])
    assert list(out) == ["ours", "dis", "u2net", "never"]
    ours = out["ours"]
    assert (ours["wins"], ours["shown"], ours["ties"], ours["none"]) == (2, 5, 1, 1)
    assert ours["rate"] == pytest.approx(0.4)
    assert (ours["low"], ours["high"]) == pytest.approx(wilson_interval(2, 5))
    dis = out["dis"]
    assert (dis["wins"], dis["shown"], dis["ties"], dis["none"], dis["rate"]) == (1, 6, 1, 1, pytest.approx(1 / 6))
    assert (out["u2net"]["wins"], out["u2net"]["shown"], out["u2net"]["none"]) == (1, 2, 1)
    assert out["never"] == {"wins": 0, "shown": 0, "ties": 0, "none": 0, "rate": None, "low": 0.0, "high": 1.0}


def test_win_rates_reject_bad_input():
    rows = [ans("1", "x", "ours", ["ours", "dis"])]
    with pytest.raises(ValueError, match="at least two models"):
        win_rates(rows, [])
    with pytest.raises(ValueError, match=r"\['dis'\].*valid"):
        win_rates(rows, ["ours", "u2net"])
    with pytest.raises(ValueError, match="not shown"):
        win_rates([ans("1", "x", "u2net", ["ours", "dis"])], ["ours", "dis", "u2net"])
    with pytest.raises(ValueError, match="shown"):
        win_rates([ans("1", "x", "ours")], ["ours", "dis"])
    with pytest.raises(ValueError, match="distinct"):
        win_rates([ans("1", "x", "ours", ["ours", "ours"])], ["ours", "dis"])


# --- Bradley-Terry ----------------------------------------------------------------------------

def test_bradley_terry_two_models_70_30():
    p = bradley_terry(duels("ours", "dis", 70, 30), ["ours", "dis"])
    assert sum(p.values()) == pytest.approx(1.0)
    # with two models the MLE ratio is the win ratio; the prior adds half a win to each side
    assert p["ours"] / p["dis"] == pytest.approx(70.5 / 30.5, rel=1e-6)
    assert p["ours"] / p["dis"] == pytest.approx(7 / 3, rel=0.02)


def test_bradley_terry_recovers_known_strengths():
    true = {"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.1}
    rng = np.random.default_rng(20240509)
    rows = []
    for x, y in itertools.combinations(true, 2):
        for i in range(300):
            winner = x if rng.random() < true[x] / (true[x] + true[y]) else y
            rows.append(ans(f"{x}{y}{i}", "p", winner, [x, y]))
    p = bradley_terry(rows, list(true))
    assert sorted(p, key=p.get, reverse=True) == ["a", "b", "c", "d"]
    for m in true:
        assert p[m] == pytest.approx(true[m], abs=0.03)


def test_bradley_terry_solves_the_score_equations():
    # the MLE satisfies W_i = sum_j n_ij p_i / (p_i + p_j); check it on uneven data with ties and
    # three-way answers, counting wins the documented way (prior: one tie per pair)
    models = ["a", "b", "c"]
    rows = duels("a", "b", 5, 2, ties=1) + duels("b", "c", 4, 4) + duels("a", "c", 1, 6, ties=2)
    rows += [ans("t1", "x", "c", ["a", "b", "c"]), ans("t2", "x", "none", ["a", "b", "c"])]
    p = bradley_terry(rows, models, tol=1e-13, iters=100000)
    # wins[(x, y)]: wins of x over y = outright wins + half of each tie (two-way "tie", three-way
    # "none") + half of the one prior tie; t1 ("c" of three) is a win of c over a and over b
    wins = {("a", "b"): 5 + 0.5 + 0.5 + 0.5, ("b", "a"): 2 + 0.5 + 0.5 + 0.5,
            ("b", "c"): 4 + 0.5 + 0.5, ("c", "b"): 4 + 1 + 0.5 + 0.5,
            ("a", "c"): 1 + 1 + 0.5 + 0.5, ("c", "a"): 6 + 1 + 1 + 0.5 + 0.5}
    for i in models:
        w = sum(wins[(i, j)] for j in models if j != i)
        expected = sum((wins[(i, j)] + wins[(j, i)]) * p[i] / (p[i] + p[j]) for j in models if j != i)
        assert w == pytest.approx(expected, rel=1e-8)


def test_bradley_terry_symmetric_and_zero_win_cases():
    cycle = duels("a", "b", 3, 1) + duels("b", "c", 3, 1) + duels("c", "a", 3, 1)
    p = bradley_terry(cycle, ["a", "b", "c"])
    assert list(p.values()) == pytest.approx([1 / 3] * 3)
    p = bradley_terry(duels("a", "b", 10, 0) + duels("a", "c", 10, 0), ["a", "b", "c"])
    assert 0 < p["b"] < 0.1 and p["b"] == pytest.approx(p["c"])
    with pytest.raises(ValueError, match="at least two models"):
        bradley_terry([], ["a"])


# --- sample size and summaries ----------------------------------------------------------------

def test_items_for_width():
    assert items_for_width(0.5, 0.1) == 385  # the classic +-5% at 95%: 384.16 -> 385
    assert items_for_width(0.2, 0.04, z=1.0) == 400  # exactly 400; floats give 400.00000000000006
    assert items_for_width(0.3, 0.1) == 323  # 3.8416 * 0.21 / 0.0025 = 322.69
    assert items_for_width(0.0, 0.1) == 0
    with pytest.raises(ValueError, match="proportion"):
        items_for_width(1.5, 0.1)


def test_summarize_pick_and_accept():
    rows = [ans("a", "x", "ours"), ans("a", "y", "ours"), ans("b", "x", "none"), ans("b", "y", "dis"),
            ans("c", "x", "dis"), ans("c", "y", "dis")]
    out = summarize("pick", rows)
    assert out["kind"] == "pick" and out["answers"] == 6 and out["items"] == 3
    assert out["counts"] == {"dis": 3, "ours": 2, "none": 1}
    assert out["majority_counts"] == {"ours": 1, "dis": 1} and out["no_majority"] == 1
    assert out["agreement"] == agreement(rows)
    acc = [ans("a", "x", "accept"), ans("a", "y", "accept"), ans("b", "x", "reject"), ans("b", "y", "reject")]
    out = summarize("accept", acc)
    assert out["majority_counts"] == {"accept": 1, "reject": 1}
    assert out["agreement"] == {"kappa": pytest.approx(1.0), "items": 2, "raters": 2}
    with pytest.raises(ValueError, match="accept"):
        summarize("accept", [ans("a", "x", "ours")])
    with pytest.raises(ValueError, match="valid: pick, accept, compare"):
        summarize("rank", rows)


def test_summarize_compare():
    rows = duels("ours", "dis", 70, 30)
    out = summarize("compare", rows, ["ours", "dis"])
    assert out["win_rates"]["ours"]["rate"] == pytest.approx(0.7)
    assert out["bradley_terry"] is None  # two models: the win rates say it
    assert out["items_for_width_0.1"] == items_for_width(0.7, 0.1) == 323  # 3.8416 * 0.21 / 0.0025
    assert out["counts"] == {"ours": 70, "dis": 30}
    three = rows + duels("ours", "u2net", 8, 2)
    out = summarize("compare", three, ["ours", "dis", "u2net"])
    assert set(out["bradley_terry"]) == {"ours", "dis", "u2net"}
    assert out["bradley_terry"]["ours"] == max(out["bradley_terry"].values())
    assert summarize("compare", three, ["u2net", "ours", "dis"])["items_for_width_0.1"] == items_for_width(0.2, 0.1)
    with pytest.raises(ValueError, match="needs models"):
        summarize("compare", rows)
