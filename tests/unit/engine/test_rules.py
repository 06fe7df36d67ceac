"""The update rules give a row the same bits alone as among others, and track the accumulator.

The engine decides a batch with array operations (app/engine/plan.py) or one observation at a
time, and both must leave each cluster with the same unit and norm, to the bit.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine import rules

METHODS = st.sampled_from(list(rules.METHODS))


def rows(seed: int, n: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    units, norms = rules.normalized(rng.normal(size=(n, dim)) * rng.uniform(0.1, 40.0, (n, 1)))
    observed, _ = rules.normalized(rng.normal(size=(n, dim)))
    return units, norms, observed, rng.integers(1, 6, n)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), dim=st.integers(1, 2048),
       method=METHODS, alpha=st.floats(0.01, 0.99))
def test_a_row_has_the_same_bits_alone_and_among_others(seed, n, dim, method, alpha) -> None:
    units, norms, observed, counts = rows(seed, n, dim)
    many_units, many_norms = rules.updated_rows(method, units, norms, observed, counts, alpha)
    first_units, first_norms = rules.initial_rows(method, observed, counts)
    for i in range(n):
        unit, norm = rules.updated(method, units[i], float(norms[i]), observed[i],
                                   int(counts[i]), alpha)
        assert np.array_equal(unit, many_units[i]) and norm == many_norms[i]
        unit, norm = rules.initial(method, observed[i], int(counts[i]))
        assert np.array_equal(unit, first_units[i]) and norm == first_norms[i]
    older = (units, norms, counts)
    younger = (observed, np.full(n, 2.0), counts + 1)
    merged_units, merged_norms = rules.merged_rows(method, older, younger)
    for i in range(n):
        unit, norm = rules.merged(method, (units[i], float(norms[i]), int(counts[i])),
                                  (observed[i], 2.0, int(counts[i]) + 1))
        assert np.array_equal(unit, merged_units[i]) and norm == merged_norms[i]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 60), method=METHODS,
       alpha=st.floats(0.01, 0.99))
def test_unit_and_norm_follow_the_accumulator(seed, steps, method, alpha) -> None:
    """Kept as direction and length, the accumulator is the float64 one within float32 rounding."""
    rng = np.random.default_rng(seed)
    observed, _ = rules.normalized(rng.normal(size=(steps, 16)) + 2.0)
    counts = rng.integers(1, 4, steps)
    unit, norm = rules.initial(method, observed[0], int(counts[0]))
    exact = observed[0].astype(np.float64) * (counts[0] if method == "SIMPLE_AVERAGE" else 1)
    for u, c in zip(observed[1:], counts[1:].tolist(), strict=True):
        unit, norm = rules.updated(method, unit, norm, u, c, alpha)
        if method == "SIMPLE_AVERAGE":
            exact = exact + c * u
        elif method == "EXP_AVERAGE":
            w = 1 - (1 - alpha) ** c
            exact = (1 - w) * exact + w * u
        else:
            exact = u.astype(np.float64)
    np.testing.assert_allclose(unit, exact / np.linalg.norm(exact), atol=1e-5)
    assert abs(norm - np.linalg.norm(exact)) <= 1e-5 * max(1.0, np.linalg.norm(exact))
    assert unit.dtype == np.float32


def test_a_zero_accumulator_stays_zero() -> None:
    unit, norm = rules.updated("EXP_AVERAGE", np.array([1.0, 0.0], np.float32), 1.0,
                               np.array([-1.0, 0.0], np.float32), 1, 0.5)
    assert unit.tolist() == [0.0, 0.0] and norm == 0.0
