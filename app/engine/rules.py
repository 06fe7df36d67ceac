"""The update rules: how a cluster's accumulator absorbs observations and other clusters.

Every function returns a new array; none changes its inputs, so earlier cluster versions stay
valid after a step.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np

USE_LAST = "USE_LAST"
SIMPLE_AVERAGE = "SIMPLE_AVERAGE"
EXP_AVERAGE = "EXP_AVERAGE"
METHODS = (USE_LAST, SIMPLE_AVERAGE, EXP_AVERAGE)


def initial_state(method: str, unit: np.ndarray, count: int) -> np.ndarray:
    """Accumulator of a new cluster from its first (unit) observation counting ``count`` times.

    >>> initial_state("SIMPLE_AVERAGE", np.array([1.0, 0.0], dtype=np.float32), 3).tolist()
    [3.0, 0.0]
    """
    if method == SIMPLE_AVERAGE:
        return (unit * np.float32(count)).astype(np.float32)
    return unit.astype(np.float32, copy=True)


def updated_state(
    method: str, state: np.ndarray, unit: np.ndarray, count: int, alpha: float
) -> np.ndarray:
    """Accumulator after absorbing a unit observation that counts ``count`` times.

    SIMPLE_AVERAGE adds (a running sum, whose direction is the count-weighted mean);
    EXP_AVERAGE applies the moving average ``count`` times in closed form; USE_LAST replaces.

    >>> s = np.array([1.0, 0.0], dtype=np.float32)
    >>> updated_state("EXP_AVERAGE", s, np.array([0.0, 1.0], dtype=np.float32), 1, 0.5).tolist()
    [0.5, 0.5]
    """
    if method == SIMPLE_AVERAGE:
        return state + unit if count == 1 else state + unit * np.float32(count)
    if method == EXP_AVERAGE:
        weight = np.float32(1.0 - (1.0 - alpha) ** count)
        return (np.float32(1.0) - weight) * state + weight * unit
    return unit.astype(np.float32, copy=True)


def initial_states(method: str, units: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``initial_state`` of many rows at once (the same bits as one at a time)."""
    if method == SIMPLE_AVERAGE:
        return units * counts.astype(np.float32)[:, None]
    return units.astype(np.float32, copy=True)


def updated_states(
    method: str, states: np.ndarray, units: np.ndarray, counts: np.ndarray, alpha: float
) -> np.ndarray:
    """``updated_state`` of many rows at once (the same bits as one at a time).

    >>> s = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    >>> u = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    >>> updated_states("SIMPLE_AVERAGE", s, u, np.array([1, 3]), 0.5).tolist()
    [[1.0, 1.0], [3.0, 2.0]]
    """
    if method == SIMPLE_AVERAGE:
        return states + units * counts.astype(np.float32)[:, None]
    if method == EXP_AVERAGE:
        weights = (1.0 - (1.0 - alpha) ** counts.astype(np.float64)).astype(np.float32)[:, None]
        return cast(np.ndarray, (np.float32(1.0) - weights) * states + weights * units)
    return units.astype(np.float32, copy=True)


def merged_state(
    method: str, state_a: np.ndarray, n_a: int, state_b: np.ndarray, n_b: int
) -> np.ndarray:
    """Accumulator of two merged clusters: the count-weighted mean of both.

    For SIMPLE_AVERAGE the sums add (the mean of all members); otherwise the states are averaged
    with weights ``n_a`` and ``n_b``.

    >>> a = np.array([1.0, 0.0], dtype=np.float32)
    >>> b = np.array([0.0, 1.0], dtype=np.float32)
    >>> merged_state("EXP_AVERAGE", a, 3, b, 1).tolist()
    [0.75, 0.25]
    """
    if method == SIMPLE_AVERAGE:
        # numpy types the sum of two arrays of unknown dtype as Any
        return cast(np.ndarray, state_a + state_b)
    total = np.float32(n_a + n_b)
    return (state_a * np.float32(n_a) + state_b * np.float32(n_b)) / total


def unit(state: np.ndarray) -> np.ndarray:
    """L2-normalised copy of an accumulator (zero stays zero)."""
    norm = math.sqrt(float(state.dot(state)))  # np.linalg.norm costs 3x more on one vector
    if norm == 0.0:
        return state.astype(np.float32, copy=True)
    return (state / np.float32(norm)).astype(np.float32, copy=False)


def unit_into(state: np.ndarray, out: np.ndarray) -> None:
    """``unit(state)`` written into ``out`` (a float32 row): the same bits, no new array."""
    norm = math.sqrt(float(state.dot(state)))
    if norm == 0.0:
        out[:] = state
    else:
        np.divide(state, np.float32(norm), out=out)


def units(states: np.ndarray) -> np.ndarray:
    """``unit`` of every row at once (float32): one pass instead of one call per cluster.

    >>> units(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    norms: np.ndarray = np.sqrt(np.einsum("ij,ij->i", states, states))
    norms[norms == 0.0] = 1.0
    return cast(np.ndarray, states / norms[:, None]).astype(np.float32, copy=False)


def coherence(method: str, state: np.ndarray, num_observations: int) -> float | None:
    """Mean cosine of a cluster's members to its representative, from the accumulator alone.

    The representative ``r`` is the accumulator's direction, and the accumulator is a weighted
    sum of the unit members ``u_i`` (weights ``w_i``): the observation counts for
    SIMPLE_AVERAGE (so ``sum w_i = n``), the moving average's weights for EXP_AVERAGE (they sum
    to 1, merges included). So ``sum w_i (u_i . r) / sum w_i = |state| / sum w_i``: exact, and
    O(1) per update because it needs nothing the cluster does not already keep. USE_LAST keeps
    no members, so it has no coherence (None).

    >>> s = np.array([1.0, 0.0], dtype=np.float32) + np.array([0.0, 1.0], dtype=np.float32)
    >>> round(coherence("SIMPLE_AVERAGE", s, 2), 6)  # two orthogonal members: cos 45 degrees
    0.707107
    """
    if method == USE_LAST:
        return None
    norm = math.sqrt(float(state.dot(state)))
    total = num_observations if method == SIMPLE_AVERAGE else 1.0
    return min(1.0, norm / total) if total > 0 else None


def combined_retention(a_ms: int, b_ms: int) -> int:
    """The larger of two retention periods, where 0 means forever and so wins.

    >>> combined_retention(1000, 0), combined_retention(1000, 5000)
    (0, 5000)
    """
    if a_ms == 0 or b_ms == 0:
        return 0
    return max(a_ms, b_ms)
