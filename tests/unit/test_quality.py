"""Clustering quality measures against hand-computed values and their invariances."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import xlogy
from scipy.stats import entropy
from scipy.stats.contingency import crosstab

from app.offline.quality import bcubed, contingency, nmi, pairwise, score_all

# Bagga & Baldwin (1998): classes A (5 items), B (2), C (5).
BB_TRUE = ["A"] * 5 + ["B"] * 2 + ["C"] * 5


def test_bcubed_bagga_baldwin_merge_b_into_c() -> None:
    # {A1..A5}, {B1, B2, C1..C5}: B items have precision 2/7, C items 5/7, recall is perfect.
    pred = [1] * 5 + [2] * 7
    p, r, f = bcubed(BB_TRUE, pred)
    assert p == pytest.approx((5 + 2 * 2 / 7 + 5 * 5 / 7) / 12) == pytest.approx(16 / 21)
    assert r == 1.0
    assert f == pytest.approx(2 * (16 / 21) / (16 / 21 + 1))


def test_bcubed_bagga_baldwin_merge_a_with_c() -> None:
    # {A1..A5, C1..C5}, {B1, B2}: merging two big classes hurts more (7/12).
    pred = [1] * 5 + [2] * 2 + [1] * 5
    p, r, _ = bcubed(BB_TRUE, pred)
    assert p == pytest.approx(7 / 12)
    assert r == 1.0


def test_bcubed_small_case_by_hand() -> None:
    p, r, f = bcubed([0, 0, 0, 1], [0, 0, 1, 1])
    assert p == pytest.approx((1 + 1 + 0.5 + 0.5) / 4)
    assert r == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1) / 4)
    assert f == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))


TRUE_6 = [0, 0, 0, 1, 1, 2]


def test_all_singletons_have_full_precision() -> None:
    p, r, _ = bcubed(TRUE_6, list(range(6)))
    assert p == 1.0
    assert r == pytest.approx((3 * (1 / 3) + 2 * (1 / 2) + 1) / 6)  # = 0.5
    pp, pr = pairwise(TRUE_6, list(range(6)))
    assert (pp, pr) == (1.0, 0.0)  # no pair put together: no false merge, nothing found


def test_one_big_cluster_has_full_recall() -> None:
    p, r, _ = bcubed(TRUE_6, [7] * 6)
    assert r == 1.0
    assert p == pytest.approx((3 * 3 / 6 + 2 * 2 / 6 + 1 / 6) / 6)  # = 14 / 36
    pp, pr = pairwise(TRUE_6, [7] * 6)
    assert pp == pytest.approx(4 / 15) and pr == 1.0


def test_perfect_prediction_scores_one_everywhere() -> None:
    scores = score_all(TRUE_6, ["a", "a", "a", "b", "b", "c"])
    assert scores == {
        "clusters": 3,
        "bcubed_precision": 1.0,
        "bcubed_recall": 1.0,
        "bcubed_f1": 1.0,
        "pairwise_precision": 1.0,
        "pairwise_recall": 1.0,
        "nmi": pytest.approx(1.0),
    }


def test_pairwise_by_hand() -> None:
    # cells (0,0)=2, (0,1)=1, (1,1)=2, (2,2)=1 -> 2 pairs together and right;
    # predicted pairs 1 + 3 = 4, true pairs 3 + 1 = 4.
    assert pairwise(TRUE_6, [0, 0, 1, 1, 1, 2]) == (0.5, 0.5)


def test_nmi_by_hand() -> None:
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_true = math.log(2)
    h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert nmi([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(mi / ((h_true + h_pred) / 2))
    assert nmi([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.343711, abs=1e-6)


def _scipy_nmi(a: np.ndarray, b: np.ndarray) -> float:
    table = crosstab(a, b).count.astype(float)
    joint = table / table.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    mutual = xlogy(joint, joint).sum() - xlogy(joint, outer).sum()
    return mutual / ((entropy(table.sum(axis=1)) + entropy(table.sum(axis=0))) / 2)


def test_nmi_matches_scipy_on_random_labels() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 30, 2000), rng.integers(0, 45, 2000)
    assert nmi(a, b) == pytest.approx(_scipy_nmi(a, b), rel=1e-9)
    c = np.where(rng.random(2000) < 0.8, a, b)
    assert nmi(a, c) == pytest.approx(_scipy_nmi(a, c), rel=1e-9)


def test_nmi_single_cluster_cases() -> None:
    assert nmi([1, 1, 1], ["x", "x", "x"]) == 1.0
    assert nmi([1, 1, 1], [1, 2, 3]) == 0.0
    assert nmi([1, 2, 3], [0, 0, 0]) == 0.0
    assert nmi([1, 2, 3], ["a", "b", "c"]) == pytest.approx(1.0)


def test_string_and_mixed_labels() -> None:
    assert bcubed(["p", "p", "q"], ["c1", "c1", "c2"]) == (1.0, 1.0, 1.0)
    assert bcubed(np.array(["p", "p", "q"]), np.array(["c1", "c1", "c2"])) == (1.0, 1.0, 1.0)
    # 1 and "1" are different clusters, not merged by a string conversion
    p, r, _ = bcubed([0, 0], [1, "1"])
    assert (p, r) == (1.0, 0.5)
    assert score_all([0, 0, 1], [(1, 2), (1, 2), None])["bcubed_f1"] == 1.0


def test_contingency_is_sparse_counts() -> None:
    c = contingency([0, 0, 1, 1, 1], ["a", "b", "b", "b", "c"])
    cells = {(int(r), int(k)): int(v) for r, k, v in zip(c.row, c.col, c.cell, strict=True)}
    assert cells == {(0, 0): 1, (0, 1): 1, (1, 1): 2, (1, 2): 1}
    assert c.true_size.tolist() == [2, 3] and c.pred_size.tolist() == [1, 3, 1] and c.n == 5


@pytest.mark.parametrize(("a", "b"), [([], []), ([1, 2], [1])])
def test_bad_input_is_refused(a: list[int], b: list[int]) -> None:
    with pytest.raises(ValueError):
        score_all(a, b)


labellings = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 6), min_size=n, max_size=n),
        st.lists(st.integers(0, 6), min_size=n, max_size=n),
        st.permutations(list(range(7))),
    )
)


@settings(max_examples=150, deadline=None)
@given(labellings)
def test_scores_ignore_label_names(case: tuple[list[int], list[int], list[int]]) -> None:
    y_true, y_pred, perm = case
    renamed_true = [f"person-{perm[v]}" for v in y_true]
    renamed_pred = [perm[v] * 1000 + 17 for v in y_pred]
    assert score_all(renamed_true, renamed_pred) == pytest.approx(score_all(y_true, y_pred))


@settings(max_examples=150, deadline=None)
@given(labellings)
def test_precision_and_recall_swap_with_the_labellings(case) -> None:
    y_true, y_pred, _ = case
    p, r, f = bcubed(y_true, y_pred)
    assert bcubed(y_pred, y_true) == pytest.approx((r, p, f))
    assert pairwise(y_pred, y_true) == pytest.approx(pairwise(y_true, y_pred)[::-1])
    assert 0.0 <= nmi(y_true, y_pred) <= 1.0
    assert nmi(y_pred, y_true) == pytest.approx(nmi(y_true, y_pred))


def test_scoring_100k_items_is_fast() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 10_000, 100_000)
    noisy = np.where(rng.random(y_true.size) < 0.9, y_true, rng.integers(0, 20_000, y_true.size))
    y_pred = np.char.add("cluster-", noisy.astype(str))
    start = time.process_time()
    scores = score_all(y_true, y_pred)
    assert time.process_time() - start < 1.0
    assert 0.85 < scores["bcubed_precision"] < 0.95 and scores["clusters"] > 10_000
