"""Deferred decisions: a window of observations is grouped before any of it is decided.

Deciding each observation alone lets an outlier image of a person start a cluster of its own,
and lets two young clusters of two people meet before either has the evidence to keep them
apart: MERGE is the only repair an event can express, so neither mistake is ever undone. With
``improved_mode.deferral_ms`` the observations of one window of event time (multiples of
``deferral_ms``, so every mode and batch size cuts the same windows) are first grouped among
themselves by average linkage, and each group is then decided as one (docs/deferral.md):
a visit's images carry each other.

Pure: the callers (``app.worker.window_gate``, ``fvc evaluate``) hand the engine whole windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from app.engine.types import Observation

T = TypeVar("T")


def window_of(time: int, deferral_ms: int) -> int:
    """The window an event time falls in.

    >>> window_of(999, 500), window_of(1_000, 500), window_of(-1, 500)
    (1, 2, -1)
    """
    return time // deferral_ms


def runs(times: list[int], deferral_ms: int, limit: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each window's observations, in the order given.

    A run is an observation and those after it of the same or an earlier window (late ones
    stay in the run they came in, as the worker's window gate hands them on,
    app/worker/window_gate.py), at most ``limit`` of them (``improved_mode.max_window_size``).
    A run's end depends only on what came since it began, so a batch of whole runs is cut the
    same way on its own as within the whole input, however the runs were packed.

    >>> runs([0, 10, 600, 400, 1_200], 500, 100)
    [(0, 2), (2, 4), (4, 5)]
    >>> runs([0, 10, 20, 600], 500, 2)
    [(0, 2), (2, 3), (3, 4)]
    """
    bounds = [0]
    newest = 0  # the window of the run's first observation
    for i, time in enumerate(times):
        window = time // deferral_ms
        if i and (window > newest or i - bounds[-1] >= limit):
            bounds.append(i)
        if i == bounds[-1]:
            newest = window
    bounds.append(len(times))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def batch_groups(
    units: np.ndarray,
    times: list[int],
    thresholds: list[float],
    deferral_ms: int,
    limit: int,
    window_threshold: float | None,
) -> list[list[int]]:
    """The groups of a batch of whole windows, window by window (rows of the batch).

    A window's rows are grouped at ``window_threshold``, or when it is None at the strictest
    ``reg_threshold`` of their streams. A row whose stream's threshold is 1.0 or more stays
    alone: such a stream makes every observation a cluster of its own.

    >>> u = np.array([[1, 0], [0.99, 0.14], [1, 0], [0, 1]], dtype=np.float32)
    >>> u /= np.linalg.norm(u, axis=1, keepdims=True)
    >>> batch_groups(u, [0, 10, 20, 150], [0.9, 0.9, 1.0, 0.9], 100, 64, None)
    [[0, 1], [2], [3]]
    """
    out: list[list[int]] = []
    for start, end in runs(times, deferral_ms, limit):
        rows = [r for r in range(start, end) if thresholds[r] < 1.0]
        found: list[list[int]] = [[r] for r in range(start, end) if thresholds[r] >= 1.0]
        if rows:
            threshold = window_threshold
            if threshold is None:
                threshold = max(thresholds[r] for r in rows)
            found += [[rows[i] for i in group] for group in groups(units[rows], threshold)]
        out += sorted(found, key=lambda group: group[0])
    return out


def pack(windows: Iterable[list[T]], size: int) -> Iterator[list[T]]:
    """Consecutive whole windows joined into batches of at most ``size`` (a bigger one alone).

    A batch of several windows decides exactly as they would one after another (the engine's
    batches always do), with one index search for all of them.

    >>> list(pack([[1, 2], [3], [4, 5, 6], [7]], 3))
    [[1, 2, 3], [4, 5, 6], [7]]
    """
    batch: list[T] = []
    for items in windows:
        if batch and len(batch) + len(items) > size:
            yield batch
            batch = []
        batch = batch + items if batch else list(items)
    if batch:
        yield batch


def batches(
    observations: Sequence[Observation], size: int, deferral_ms: int, limit: int
) -> Iterator[list[Observation]]:
    """Batches of ``size`` in order; with deferred decisions, of whole windows only.

    What ``fvc evaluate`` and the benchmarks hand the engine (a worker's window gate,
    app/worker/window_gate.py, hands windows on the same way).

    >>> obs = [Observation(np.ones(2, np.float32), "cam", str(t), t) for t in (0, 10, 600, 700)]
    >>> [[o.time for o in b] for b in batches(obs, 3, 500, 64)]
    [[0, 10], [600, 700]]
    >>> [[o.time for o in b] for b in batches(obs, 3, 0, 64)]
    [[0, 10, 600], [700]]
    """
    if deferral_ms:
        bounds = runs([o.time for o in observations], deferral_ms, limit)
        yield from pack((list(observations[start:end]) for start, end in bounds), size)
        return
    for start in range(0, len(observations), size):
        yield list(observations[start : start + size])


def groups(units: np.ndarray, threshold: float) -> list[list[int]]:
    """Rows of ``units`` grouped by average linkage at mean cosine similarity ``threshold``.

    Groups come in the order of their first row, each with its rows in order, so the result
    depends on the window's contents and order only. scipy's average linkage (O(n^2)) takes
    0.1 ms for 32 observations and 15 ms for 1,024; the cut is read off its merges directly
    (they come in rising distance), which costs less than ``fcluster``'s checks.

    >>> u = np.array([[1, 0], [0, 1], [0.99, 0.14], [0.1, 0.99]], dtype=np.float32)
    >>> groups(u / np.linalg.norm(u, axis=1, keepdims=True), 0.9)
    [[0, 2], [1, 3]]
    """
    n = len(units)
    if n < 2:
        return [list(range(n))]
    # condensed first (the upper triangle, diagonal left out), then float64 as linkage wants:
    # half the values to convert, and no n x n float64 temporaries
    distance = squareform(units @ units.T, checks=False).astype(np.float64)
    np.subtract(1.0, distance, out=distance)
    np.clip(distance, 0.0, 2.0, out=distance)
    merges = linkage(distance, method="average")
    parent = list(range(2 * n - 1))
    cut = 1.0 - threshold
    for step, (a, b, height) in enumerate(merges[:, :3].tolist()):
        if height > cut:
            break
        parent[int(a)] = parent[int(b)] = n + step
    for node in range(2 * n - 2, -1, -1):  # a parent's index is above its child's: resolved
        parent[node] = parent[parent[node]]  # first, so one pass gives every node its root
    members: dict[int, list[int]] = {}
    for row in range(n):
        members.setdefault(parent[row], []).append(row)
    return sorted(members.values(), key=lambda rows: rows[0])


__all__ = ["batch_groups", "batches", "groups", "pack", "runs", "window_of"]
