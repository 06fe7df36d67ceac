"""The update rules: how a cluster's accumulator absorbs observations and other clusters.

A cluster keeps its accumulator as a direction and a length: ``unit`` (float32, L2-normalised:
the representative the index searches and events carry) and ``norm`` (float, the accumulator's
L2 norm). The accumulator itself is ``unit * norm``: a weighted sum of the members' unit vectors
for SIMPLE_AVERAGE, their moving average for EXP_AVERAGE, the last one for USE_LAST. Keeping the
direction means one float32 copy per cluster serves the state, the index and the events.

Every rule works on rows (one row per cluster) in float64 and normalises each row on its own,
so a row's result has the same bits whether it is computed alone or with others: the engine
deciding one observation at a time and deciding a batch with array operations agree exactly.
Every function returns new arrays; none changes its inputs.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

USE_LAST = "USE_LAST"
SIMPLE_AVERAGE = "SIMPLE_AVERAGE"
EXP_AVERAGE = "EXP_AVERAGE"
METHODS = (USE_LAST, SIMPLE_AVERAGE, EXP_AVERAGE)

_Counts = TypeVar("_Counts", np.ndarray, np.float64)  # rows' counts, or one row's


def normalized(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each float32 row's direction and length (float64); a zero row stays zero.

    The squared length is the row's dot product with itself (``np.vecdot``, which runs the same
    loop on each row), its square root taken in float64: the same bits for a row whatever else
    is in ``states``.

    >>> u, n = normalized(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    >>> u.tolist(), n.tolist()
    ([[0.6000000238418579, 0.800000011920929], [0.0, 0.0]], [5.0, 0.0])
    """
    states = np.asarray(states, dtype=np.float32)
    norms = np.sqrt(np.vecdot(states, states).astype(np.float64))
    divisors = np.where(norms == 0.0, 1.0, norms).astype(np.float32)
    return states / divisors[:, None], norms


def initial_rows(
    method: str, units: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Direction and length of new clusters, each from its first (unit) observation.

    The direction is the observation's; the length is its count for SIMPLE_AVERAGE (a sum of
    ``count`` equal unit vectors), 1 otherwise.

    >>> u, n = initial_rows("SIMPLE_AVERAGE", np.array([[1.0, 0.0]], dtype=np.float32), [3])
    >>> u.tolist(), n.tolist()
    ([[1.0, 0.0]], [3.0])
    """
    if method == SIMPLE_AVERAGE:
        norms = np.asarray(counts, dtype=np.float64).copy()
    else:
        norms = np.ones(len(units), dtype=np.float64)
    return units.astype(np.float32, copy=True), norms


def updated_rows(
    method: str,
    units: np.ndarray,
    norms: np.ndarray,
    observed: np.ndarray,
    counts: np.ndarray,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Direction and length of clusters after each absorbs a unit observation (``counts`` times).

    SIMPLE_AVERAGE adds (a running sum, whose direction is the count-weighted mean);
    EXP_AVERAGE applies the moving average ``count`` times in closed form; USE_LAST replaces.
    The accumulator is rebuilt in float32 (``unit * norm``), as it was kept before.

    >>> u, n = updated_rows("EXP_AVERAGE", np.array([[1.0, 0.0]], dtype=np.float32), [1.0],
    ...                     np.array([[0.0, 1.0]], dtype=np.float32), [1], 0.5)
    >>> u.tolist(), round(float(n[0]), 6)
    ([[0.7071067690849304, 0.7071067690849304]], 0.707107)
    """
    if method == USE_LAST:
        return observed.astype(np.float32, copy=True), np.ones(len(observed), dtype=np.float64)
    before = units * _column(norms)
    if method == SIMPLE_AVERAGE:
        return normalized(before + observed * _column(counts))
    weights = _column(_weights(alpha, np.asarray(counts, dtype=np.float64)))
    return normalized((np.float32(1.0) - weights) * before + weights * observed)


def merged_rows(
    method: str,
    older: tuple[np.ndarray, np.ndarray, np.ndarray],
    younger: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Direction and length of merged pairs; each side is ``(units, norms, num_observations)``.

    For SIMPLE_AVERAGE the sums add (the mean of all members); otherwise the accumulators are
    averaged with the members' counts as weights.

    >>> a = (np.array([[1.0, 0.0]], dtype=np.float32), [1.0], [3])
    >>> b = (np.array([[0.0, 1.0]], dtype=np.float32), [1.0], [1])
    >>> u, n = merged_rows("EXP_AVERAGE", a, b)
    >>> round(float(n[0]), 6)  # the accumulator (0.75, 0.25)
    0.790569
    """
    state_a = older[0] * _column(older[1])
    state_b = younger[0] * _column(younger[1])
    if method == SIMPLE_AVERAGE:
        return normalized(state_a + state_b)
    n_a, n_b = _column(older[2]), _column(younger[2])
    return normalized((state_a * n_a + state_b * n_b) / (n_a + n_b))


def _column(values: np.ndarray | list[float] | list[int]) -> np.ndarray:
    """Per-row float32 factors, shaped to scale whole rows."""
    return np.asarray(values).astype(np.float32)[:, None]


def _weights(alpha: float, counts: _Counts) -> _Counts:
    """EXP_AVERAGE's weight of an observation counting ``counts`` times: ``1 - (1-a)^count``."""
    return 1.0 - (1.0 - alpha) ** counts


def initial(method: str, unit: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """``initial_rows`` of one observation."""
    return unit.astype(np.float32, copy=True), float(count) if method == SIMPLE_AVERAGE else 1.0


def updated(
    method: str, unit: np.ndarray, norm: float, observed: np.ndarray, count: int, alpha: float
) -> tuple[np.ndarray, float]:
    """``updated_rows`` of one cluster: the same operations on one vector, so the same bits.

    Written out rather than called through the rows' version: an observation decided alone
    (one at a time) pays for each array operation it starts.
    """
    if method == USE_LAST:
        return observed.astype(np.float32, copy=True), 1.0
    state = unit * np.float32(norm)
    if method == SIMPLE_AVERAGE:
        state += observed if count == 1 else observed * np.float32(count)  # x * 1 is x
    else:
        weight = np.float32(_weights(alpha, np.float64(count)))
        state *= np.float32(1.0) - weight
        state += weight * observed
    length = math.sqrt(float(np.vecdot(state, state)))
    if length == 0.0:
        return state, length
    state /= np.float32(length)
    return state, length


def merged(
    method: str, older: tuple[np.ndarray, float, int], younger: tuple[np.ndarray, float, int]
) -> tuple[np.ndarray, float]:
    """``merged_rows`` of one pair, each side ``(unit, norm, num_observations)``.

    Once per merge, rare enough for the rows' version to serve.
    """
    units, norms = merged_rows(method, _row(*older), _row(*younger))
    return units[0], float(norms[0])


def _row(unit: np.ndarray, norm: float, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return unit[None], np.array([norm]), np.array([count])


def coherence(method: str, norm: float, num_observations: int) -> float | None:
    """Mean cosine of a cluster's members to its representative, from the accumulator alone.

    The representative ``r`` is the accumulator's direction, and the accumulator is a weighted
    sum of the unit members ``u_i`` (weights ``w_i``): the observation counts for
    SIMPLE_AVERAGE (so ``sum w_i = n``), the moving average's weights for EXP_AVERAGE (they sum
    to 1, merges included). So ``sum w_i (u_i . r) / sum w_i = |state| / sum w_i``: exact, and
    O(1) per update because it needs only the accumulator's length. USE_LAST keeps no members,
    so it has no coherence (None).

    >>> round(coherence("SIMPLE_AVERAGE", float(np.sqrt(2.0)), 2), 6)  # two orthogonal members
    0.707107
    """
    if method == USE_LAST:
        return None
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
