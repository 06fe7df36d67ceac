"""A batch decided with array operations: which cluster each observation joins or creates.

The rule is the one-by-one rule (DESIGN.md section 4): an observation joins the most similar
cluster alive at its time when that similarity reaches its stream's threshold, and creates a
cluster otherwise; later observations of a batch see what earlier ones did. Deciding that one
observation at a time costs a search of the batch's own clusters per observation.

Here the batch is planned from its batch-start search alone. The plan gives every cluster the
batch touches a state after each touch (a *version*); one matrix product compares every
observation with every version, and each observation's choice is derived again from the
versions that exist, unchanged and alive, when it comes. The plan is right up to the first
observation whose derived choice differs from it: up to there each derivation saw only right
choices. That observation's derived choice is then right too, so the plan takes it and the
derived choices after it, and only what follows is derived again. Most batches need one or two
rounds; after ``MAX_ROUNDS`` the caller decides the rest one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.engine import rules
from app.engine.types import Cluster

MAX_ROUNDS = 8
ROW_BLOCK = 128  # rows per product: versions after a block's last row are not needed by it


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch's inputs, as arrays: row ``i`` is observation ``i``.

    ``thresholds`` is +inf where an observation may never join (a threshold of 1.0).
    ``size_discount`` is the improved mode's (app/engine/repair.py), None for the plain joins.
    ``known(slot)`` is the index's cluster at ``slot``; ``alive(slot, time)`` says
    whether it may still be joined at ``time``; ``exhaustive(row, excluded)`` is the best slot
    (and similarity) alive at that row's time over the whole index, ``excluded`` left out.
    """

    units: np.ndarray
    sims: np.ndarray
    slots: np.ndarray
    times: np.ndarray
    counts: np.ndarray
    thresholds: np.ndarray
    retentions: np.ndarray
    size: int
    method: str
    alpha: float
    known: Callable[[int], Cluster]
    alive: Callable[[int, int], bool] | None
    exhaustive: Callable[[int, set[int]], tuple[int, float]]
    size_discount: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The choices of a batch's first ``decided`` rows (the rest are left to the caller).

    ``targets[i]`` is an index slot, or ``size + j`` for the cluster row ``j`` created
    (``j == i`` when row ``i`` created it); ``sims[i]`` the similarity it was chosen at (-inf
    when there was no candidate); ``states[i]`` the accumulator row ``i`` left its cluster with.
    """

    targets: list[int]
    sims: list[float]
    states: np.ndarray
    decided: int


class _Versions:
    """Each row's touch of the plan: the state it leaves, its unit, last time and retention.

    Rows are computed a generation at a time: first every cluster's first touch in the batch
    (all at once), then every second touch, and so on, with the update rules on whole arrays.
    """

    def __init__(self, batch: Batch) -> None:
        rows, dim = batch.units.shape
        self.batch = batch
        self.states = np.zeros((rows, dim), dtype=np.float32)
        self.units = np.zeros((rows, dim), dtype=np.float32)
        self.last_time = np.zeros(rows, dtype=np.int64)
        self.retention = np.zeros(rows, dtype=np.int64)
        self.members = np.zeros(rows, dtype=np.int64)  # observations in the cluster after a row
        self._known: dict[int, Cluster] = {}

    def rebuild(self, targets: np.ndarray, start: int) -> None:
        """Versions of rows ``start`` on, after the plan changed there.

        A row whose guess names a cluster that no row before it creates (the plan was corrected
        before it) is planned to create its own.
        """
        b = self.batch
        _repair_guesses(targets, b.size, start)
        previous, generation = _chains(targets)
        rows = np.arange(start, len(targets))
        for g in range(int(generation[start:].max()) + 1 if len(rows) else 0):
            at = rows[generation[start:] == g]
            if len(at):
                self._touch(at, targets[at], previous[at])
        self.units[start:] = rules.units(self.states[start:])

    def _touch(self, at: np.ndarray, targets: np.ndarray, previous: np.ndarray) -> None:
        """States after rows ``at``, each the first touch of its cluster or after ``previous``."""
        b = self.batch
        units, counts, times = b.units[at], b.counts[at], b.times[at]
        created = targets == b.size + at
        before = np.zeros_like(units)
        last = np.zeros(len(at), dtype=np.int64)
        retention = np.zeros(len(at), dtype=np.int64)
        members = np.zeros(len(at), dtype=np.int64)
        chained = previous >= 0
        before[chained] = self.states[previous[chained]]
        last[chained] = self.last_time[previous[chained]]
        retention[chained] = self.retention[previous[chained]]
        members[chained] = self.members[previous[chained]]
        fresh = np.flatnonzero(~chained & ~created)
        if len(fresh):
            known = [self.cluster(slot) for slot in targets[fresh].tolist()]
            before[fresh] = np.stack([c.state for c in known])
            last[fresh] = [c.last_time for c in known]
            retention[fresh] = [c.retention_ms for c in known]
            members[fresh] = [c.num_observations for c in known]
        stream_retention = b.retentions[at]
        retention = np.where(
            (retention == 0) | (stream_retention == 0), 0, np.maximum(retention, stream_retention)
        )
        states = rules.updated_states(b.method, before, units, counts, b.alpha)
        states[created] = rules.initial_states(b.method, units[created], counts[created])
        self.states[at] = states
        self.last_time[at] = np.where(created, times, np.maximum(last, times))
        self.retention[at] = np.where(created, stream_retention, retention)
        self.members[at] = members + counts

    def cluster(self, slot: int) -> Cluster:
        """The index's cluster at ``slot``, as the batch found it."""
        known = self._known.get(slot)
        if known is None:
            known = self._known[slot] = self.batch.known(slot)
        return known


def _repair_guesses(targets: np.ndarray, size: int, start: int) -> None:
    """Rows that join a batch cluster whose creating row no longer creates it create their own.

    Fixing one row can make it the creator another row named, so this runs until it settles.
    """
    rows = np.arange(len(targets))
    while True:
        creator = targets - size
        joins_new = (targets >= size) & (creator != rows) & (rows >= start)
        made = np.zeros(len(targets), dtype=bool)
        valid = joins_new & (creator < rows)
        made[valid] = targets[np.where(valid, creator, 0)][valid] == targets[valid]
        bad = joins_new & ~made
        if not bad.any():
            return
        first = int(np.flatnonzero(bad)[0])
        targets[first] = size + first


def _chains(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the previous row touching the same cluster (-1: none) and how many did."""
    rows = len(targets)
    order = np.lexsort((np.arange(rows), targets))
    same = np.zeros(rows, dtype=bool)
    same[1:] = targets[order[1:]] == targets[order[:-1]]
    previous = np.full(rows, -1, dtype=np.int64)
    previous[order[same]] = order[np.flatnonzero(same) - 1]
    group_start = np.maximum.accumulate(np.where(same, 0, np.arange(rows)))
    generation = np.empty(rows, dtype=np.int64)
    generation[order] = np.arange(rows) - group_start
    return previous, generation


def decide(batch: Batch) -> Plan:
    """The one-by-one choices of the whole batch (see the module docstring)."""
    rows = len(batch.units)
    positions = np.arange(rows)
    hits = _Hits(batch)
    versions = _Versions(batch)
    targets, sims = _derive(batch, hits, 0, np.zeros(rows, np.int64), versions, None)
    products = np.full((rows, rows), -np.inf, dtype=np.float32)
    start = 1  # row 0 saw nothing of the batch: its choice is final
    for _ in range(MAX_ROUNDS):
        versions.rebuild(targets, start - 1)
        if start >= rows:
            return Plan(targets.tolist(), sims.tolist(), versions.states, rows)
        _products(batch.units, versions.units, products, start - 1)
        touches = (_next_touch(targets, positions), products)
        derived, derived_sims = _derive(batch, hits, start, targets, versions, touches)
        wrong = np.flatnonzero(derived[start:] != targets[start:])
        sims[start:] = derived_sims[start:]
        if len(wrong) == 0:
            return Plan(targets.tolist(), sims.tolist(), versions.states, rows)
        first = start + int(wrong[0])
        targets[first:] = derived[first:]
        start = first + 1
    versions.rebuild(targets, start - 1)  # the last corrected row's state
    return Plan(targets.tolist(), sims.tolist(), versions.states, start)


class _Hits:
    """The search's hits, with whether each is alive at its row's time, asked only when needed.

    A hit is asked about only when every hit before it in its row was touched or dead; the
    answer is kept, since a cluster untouched by the batch stays as it was.
    """

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.alive = np.where(batch.slots >= 0, -1 if batch.alive else 1, 0).astype(np.int8)

    def first_usable(self, start: int, untouched: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For rows ``start`` on: whether one is usable, and the column of the first one."""
        rows, columns = untouched.shape
        found = np.zeros(rows, dtype=bool)
        column = np.zeros(rows, dtype=np.int64)
        alive = self.alive[start:]
        for j in range(columns):
            ask = ~found & untouched[:, j]
            unknown = np.flatnonzero(ask & (alive[:, j] < 0))
            if len(unknown) and self.batch.alive is not None:
                slots, times = self.batch.slots, self.batch.times
                for i in unknown.tolist():
                    row = start + i
                    alive[i, j] = self.batch.alive(int(slots[row, j]), int(times[row]))
            usable = ask & (alive[:, j] > 0)
            column[usable] = j
            found |= usable
        return found, column


def _products(units: np.ndarray, versions: np.ndarray, out: np.ndarray, start: int) -> None:
    """``out[r, i] = units[r] . versions[i]`` for versions ``i >= start`` and rows ``r > i``."""
    rows = len(units)
    for lo in range(start + 1, rows, ROW_BLOCK):
        hi = min(rows, lo + ROW_BLOCK)
        np.matmul(units[lo:hi], versions[start:hi].T, out=out[lo:hi, start:hi])


def _next_touch(targets: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For each row, the next row that touches the same cluster (``len(targets)``: none)."""
    order = np.lexsort((positions, targets))
    nexts = np.full(len(targets), len(targets), dtype=np.int64)
    same = targets[order[1:]] == targets[order[:-1]]
    nexts[order[:-1][same]] = order[1:][same]
    return nexts


def _derive(
    batch: Batch,
    hits: _Hits,
    start: int,
    targets: np.ndarray,
    versions: _Versions,
    touches: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's choice given the plan ``targets`` for the rows before it (rows >= start).

    Returns the choices and their similarities for every row (rows before ``start`` keep the
    plan's). ``touches`` is each row's next touch of the same cluster and the products of rows
    with versions; without them the batch's own touches are ignored: the batch-start plan.
    """
    rows, size = len(batch.units), batch.size
    here = np.arange(start, rows)
    slots = batch.slots[start:]
    wins = np.zeros(len(here), dtype=bool)
    pick = np.zeros(len(here), dtype=np.int64)
    # untouched best: the first usable hit no earlier row (of the plan) touched
    first_touch = np.full(max(size, 1), rows, dtype=np.int64)
    if touches is not None:
        old = targets < size
        np.minimum.at(first_touch, targets[old], np.flatnonzero(old))
    untouched = (slots >= 0) & (first_touch[np.maximum(slots, 0)] >= here[:, None])
    has, column = hits.first_usable(start, untouched)
    best_slot = np.where(has, slots[np.arange(len(here)), column], -1)
    best_sim = np.where(
        has, batch.sims[start:][np.arange(len(here)), column].astype(np.float64), -np.inf
    )
    _fallback(batch, has, here, first_touch, best_slot, best_sim)
    if touches is not None:
        nexts, products = touches
        # touched best: versions made before the row, not yet replaced, still alive
        made = np.arange(rows)[None, :]
        valid = (made < here[:, None]) & (nexts[None, :] >= here[:, None])
        retention = versions.retention[None, :]
        times = batch.times[start:, None]
        valid &= (retention == 0) | (versions.last_time[None, :] + retention >= times)
        touched = np.where(valid, products[start:], -np.inf)
        pick = touched.argmax(axis=1)
        touched_sim = touched[np.arange(len(here)), pick].astype(np.float64)
        wins = touched_sim > best_sim
        best_slot = np.where(wins, targets[pick], best_slot)
        best_sim = np.where(wins, touched_sim, best_sim)
    if batch.size_discount is None:
        joins = (best_slot >= 0) & (best_sim >= batch.thresholds[start:])
    else:
        joins = _joins_improved(batch, versions, start, best_slot, best_sim, wins, pick)
    derived = targets.copy()
    derived[start:] = np.where(joins, best_slot, size + here)
    sims = np.full(rows, -np.inf)
    sims[start:] = best_sim
    return derived, sims


def _joins_improved(
    batch: Batch,
    versions: _Versions,
    start: int,
    best_slot: np.ndarray,
    best_sim: np.ndarray,
    touched: np.ndarray,
    pick: np.ndarray,
) -> np.ndarray:
    """``repair.joins`` for rows ``start`` on: the mean similarity to the chosen cluster's members.

    The same arithmetic in the same order as one at a time, so the same bits: the squared norm
    of a state is its own dot product, its square root taken in double precision.
    """
    discount = batch.size_discount or 0.0
    thresholds = batch.thresholds[start:]
    floor = thresholds - discount
    joins = (best_slot >= 0) & ~(
        (best_sim < floor - 1e-6) & ((best_sim >= 0.0) | (floor >= 0.0))
    )
    rows = np.flatnonzero(joins)
    if not len(rows):
        return joins
    members = np.empty(len(rows), dtype=np.float64)
    norms = np.empty(len(rows), dtype=np.float64)
    for i, row in enumerate(rows.tolist()):
        if touched[row]:
            version = int(pick[row])
            state, members[i] = versions.states[version], versions.members[version]
        else:
            cluster = versions.cluster(int(best_slot[row]))
            state, members[i] = cluster.state, cluster.num_observations
        norms[i] = math.sqrt(float(np.dot(state, state)))
    counts = batch.counts[start:][rows].astype(np.float64)
    mean = best_sim[rows] * norms / members
    reduction = discount * (1.0 - np.sqrt((1.0 / counts + 1.0 / members) / 2.0))
    joins[rows] = mean >= thresholds[rows] - reduction
    return joins


def _fallback(
    batch: Batch,
    has: np.ndarray,
    here: np.ndarray,
    first_touch: np.ndarray,
    best_slot: np.ndarray,
    best_sim: np.ndarray,
) -> None:
    """Rows whose every hit was touched or dead, with more clusters in the index: search all.

    A hit padded with -1 means the search had no more clusters to give, as one at a time.
    """
    slots = batch.slots[len(batch.slots) - len(here) :]
    if batch.size <= slots.shape[1]:
        return
    for i in np.flatnonzero((slots >= 0).all(axis=1) & ~has).tolist():
        row = int(here[i])
        excluded = set(np.flatnonzero(first_touch < row).tolist())
        best_slot[i], best_sim[i] = batch.exhaustive(row, excluded)
