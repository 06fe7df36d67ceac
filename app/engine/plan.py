"""A batch decided with array operations: which cluster each observation joins or creates.

The rule is the one-by-one rule (DESIGN.md section 4): an observation joins the most similar
cluster alive at its time when that similarity reaches its stream's threshold, and creates a
cluster otherwise; later observations of a batch see what earlier ones did. Deciding that one
observation at a time costs a search of the batch's own clusters per observation.

Here the batch is planned from its batch-start search alone. The plan gives every cluster the
batch touches a state after each touch (a *version*); matrix products compare every
observation with the versions that could change its choice (``_Products``), and each
observation's choice is derived again from the versions that exist, unchanged and alive, when
it comes. The plan is right up to the first
observation whose derived choice differs from it: up to there each derivation saw only right
choices. That observation's derived choice is then right too, so the plan takes it and the
derived choices after it, and only what follows is derived again. Most batches need one or two
rounds. After ``MAX_ROUNDS``, or a later round that confirmed fewer than ``MIN_CONFIRMED``
rows (choices that each hang on the one before, such as a walk past a camera drifting between
clusters), the caller decides the rest one at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.engine import rules

MAX_ROUNDS = 8
MIN_CONFIRMED = 32  # a later round that confirms fewer rows than this ends the plan
ROW_BLOCK = 128  # rows per product: versions after a block's last row are not needed by it


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch's inputs, as arrays: row ``i`` is observation ``i``.

    ``thresholds`` is +inf where an observation may never join (a threshold of 1.0).
    ``size_discount`` is the improved mode's (app/engine/repair.py), None for the plain joins.
    ``table`` is the index's unit vectors when its top k is exact (every cluster it did not
    return is at most as similar as the k-th it did), None otherwise.
    ``known(slots)`` is what the batch reads of the index's clusters at ``slots``;
    ``alive(slot, time)`` says
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
    known: Callable[[np.ndarray], Known]
    alive: Callable[[int, int], bool] | None
    exhaustive: Callable[[int, set[int]], tuple[int, float]]
    size_discount: float | None = None
    table: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Known:
    """Fields of index clusters as the batch found them, one row per slot asked about."""

    units: np.ndarray
    norms: np.ndarray
    last_time: np.ndarray
    retention_ms: np.ndarray
    num_observations: np.ndarray


@dataclass(frozen=True, slots=True)
class Plan:
    """The choices of a batch's first ``decided`` rows (the rest are left to the caller).

    ``targets[i]`` is an index slot, or ``size + j`` for the cluster row ``j`` created
    (``j == i`` when row ``i`` created it); ``sims[i]`` the similarity it was chosen at (-inf
    when there was no candidate); ``units[i]`` and ``norms[i]`` the accumulator row ``i`` left
    its cluster with (app/engine/rules.py).
    ``rounds`` counts the products of rows with versions it took; ``dense`` says whether one
    of them compared every row with every version because the batch created many clusters.
    """

    targets: list[int]
    sims: list[float]
    units: np.ndarray
    norms: np.ndarray
    decided: int
    rounds: int
    dense: bool = False

    def state(self, row: int) -> tuple[np.ndarray, float]:
        """The unit and norm row ``row`` left its cluster with (the unit a view: never written)."""
        return self.units[row], float(self.norms[row])


class _Versions:
    """Each row's touch of the plan: the unit and norm it leaves, last time and retention.

    Rows are computed a generation at a time: first every cluster's first touch in the batch
    (all at once), then every second touch, and so on, with the update rules on whole arrays.
    """

    def __init__(self, batch: Batch) -> None:
        rows, dim = batch.units.shape
        self.batch = batch
        self.units = np.zeros((rows, dim), dtype=np.float32)
        self.norms = np.zeros(rows, dtype=np.float64)
        self.last_time = np.zeros(rows, dtype=np.int64)
        self.retention = np.zeros(rows, dtype=np.int64)
        self.members = np.zeros(rows, dtype=np.int64)  # observations in the cluster after a row
        self.targets = np.zeros(rows, dtype=np.int64)  # the plan they were built for
        self.changed = np.ones(rows, dtype=bool)  # units changed since products last read them

    def rebuild(self, targets: np.ndarray, start: int) -> None:
        """Versions of rows ``start`` on, after the plan changed there."""
        b = self.batch
        _repair_guesses(targets, b.size, start)
        self.targets = targets
        previous, generation = _chains(targets)
        rows = np.arange(start, len(targets))
        before = self.units[start:].copy()
        for g in range(int(generation[start:].max()) + 1 if len(rows) else 0):
            at = rows[generation[start:] == g]
            if len(at):
                self._touch(at, targets[at], previous[at])
        self.changed[start:] |= (before != self.units[start:]).any(axis=1)

    def _touch(self, at: np.ndarray, targets: np.ndarray, previous: np.ndarray) -> None:
        """States after rows ``at``, each the first touch of its cluster or after ``previous``."""
        b = self.batch
        units, counts, times = b.units[at], b.counts[at], b.times[at]
        created = targets == b.size + at
        before = np.zeros_like(units)
        before_norms = np.zeros(len(at), dtype=np.float64)
        last = np.zeros(len(at), dtype=np.int64)
        retention = np.zeros(len(at), dtype=np.int64)
        members = np.zeros(len(at), dtype=np.int64)
        chained = previous >= 0
        before[chained] = self.units[previous[chained]]
        before_norms[chained] = self.norms[previous[chained]]
        last[chained] = self.last_time[previous[chained]]
        retention[chained] = self.retention[previous[chained]]
        members[chained] = self.members[previous[chained]]
        fresh = np.flatnonzero(~chained & ~created)
        if len(fresh):
            known = b.known(targets[fresh])
            before[fresh] = known.units
            before_norms[fresh] = known.norms
            last[fresh] = known.last_time
            retention[fresh] = known.retention_ms
            members[fresh] = known.num_observations
        stream_retention = b.retentions[at]
        retention = np.where(
            (retention == 0) | (stream_retention == 0), 0, np.maximum(retention, stream_retention)
        )
        new_units, norms = rules.updated_rows(
            b.method, before, before_norms, units, counts, b.alpha
        )
        new_units[created], norms[created] = rules.initial_rows(
            b.method, units[created], counts[created]
        )
        self.units[at] = new_units
        self.norms[at] = norms
        self.last_time[at] = np.where(created, times, np.maximum(last, times))
        self.retention[at] = np.where(created, stream_retention, retention)
        self.members[at] = members + counts



def _repair_guesses(targets: np.ndarray, size: int, start: int) -> None:
    """Guesses (rows ``start`` on) that join a batch cluster whose creating row now joins another.

    The guess follows that row: it joins where its creator went, which is right for the common
    case of one person seen several times in a batch (the second sighting was planned to create
    a cluster and then joined the first's; the third, planned to join the second's, now joins
    the first's too). A guess that names a cluster created at or after its own row creates one.
    """
    rows = np.arange(len(targets))
    guess = rows >= start
    for _ in range(len(targets)):  # each pass follows one step back; creators come earlier
        creator = np.where(targets >= size, targets - size, rows)
        joins_new = guess & (creator != rows)
        later = joins_new & (creator > rows)
        went = targets[np.minimum(creator, len(targets) - 1)]
        moved = joins_new & ~later & (went != targets)
        if not (later.any() or moved.any()):
            return
        targets[later] = size + rows[later]
        targets[moved] = went[moved]


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
    products = _Products(batch, versions)
    start = 1  # row 0 saw nothing of the batch: its choice is final
    for rounds in range(1, MAX_ROUNDS + 1):
        versions.rebuild(targets, start - 1)
        if start >= rows:
            return Plan(
                targets.tolist(), sims.tolist(), versions.units, versions.norms, rows, rounds,
                products.dense_used,
            )
        touches = (_next_touch(targets, positions), products)
        derived, derived_sims = _derive(batch, hits, start, targets, versions, touches)
        wrong = np.flatnonzero(derived[start:] != targets[start:])
        sims[start:] = derived_sims[start:]
        if len(wrong) == 0:
            return Plan(
                targets.tolist(), sims.tolist(), versions.units, versions.norms, rows, rounds,
                products.dense_used,
            )
        first = start + int(wrong[0])
        confirmed = first + 1 - start
        targets[first:] = derived[first:]
        start = first + 1
        if rounds > 1 and confirmed < MIN_CONFIRMED:
            break  # choices that each hang on the one before: cheaper one at a time
    versions.rebuild(targets, start - 1)  # the last corrected row's state
    return Plan(
        targets.tolist(), sims.tolist(), versions.units, versions.norms, start, rounds,
        products.dense_used,
    )


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


def _block_products(
    units: np.ndarray,
    versions: np.ndarray,
    out: np.ndarray,
    start: int = 0,
    columns: np.ndarray | None = None,
) -> None:
    """``out[r, i] = units[r] . versions[i]`` for rows ``r >= start`` and versions ``i < r``.

    ``columns`` limits the versions to those (ascending); None: every version. A block of rows
    needs no version after its last row, so about half of the square is never computed.
    """
    rows = len(units)
    for lo in range(max(start, 1), rows, ROW_BLOCK):
        hi = min(rows, lo + ROW_BLOCK)
        if columns is None:
            np.matmul(units[lo:hi], versions[:hi].T, out=out[lo:hi, :hi])
            continue
        needed = columns[: np.searchsorted(columns, hi)]
        if len(needed):
            out[lo:hi, needed] = units[lo:hi] @ versions[needed].T


class _Products:
    """The best version each row can join: products of rows with versions, where they matter.

    Without ``batch.table``, or when the batch created many clusters (people seen several times
    in one batch), every product of a row with an earlier version is computed, a block of rows
    at a time, and kept for the next round. Otherwise a version of a cluster the index held can
    beat a row's best untouched cluster only if that cluster is one of the row's hits, or if it
    moved away from its indexed unit by more than the gap between the row's best and its k-th
    hit (for unit vectors, |u.v - u.w| <= |v - w|). So a row gets products with the versions of
    the clusters the batch created, with the versions of its touched hits, with the ``FAR``
    versions that moved most, and with every version only when one beyond those moved that
    far: the rest cannot win, exactly.
    """

    SLACK = 1e-4  # float rounding of the index's similarities and of these products
    FAR = 32  # versions that moved most, compared with every row
    DENSE_FROM = 64  # versions of clusters the batch created beyond which every product is made

    def __init__(self, batch: Batch, versions: _Versions) -> None:
        rows = len(batch.units)
        self.batch, self.versions = batch, versions
        self.dense = np.full((0, 0), -np.inf, dtype=np.float32)  # made when first needed
        self.dense_used = False
        self._nexts = np.zeros(rows, dtype=np.int64)
        columns = batch.slots.shape[1]
        if batch.table is not None and batch.size > columns:
            self.kth = batch.sims[:, columns - 1].astype(np.float64)
        else:  # every indexed cluster is a hit of every row: no bound is needed
            self.kth = np.full(rows, -np.inf)

    def best(
        self, start: int, best: np.ndarray, first_touch: np.ndarray, nexts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """For rows ``start`` on: the similarity of the best version each may join, and its row.

        ``best`` is each row's best untouched similarity. A version may be joined by a later
        row until the next touch of its cluster, while its retention holds. On a tie the
        earliest version wins.
        """
        self._nexts = nexts
        count = len(self.batch.units)
        rows = np.arange(start, count)
        top, pick = np.full(len(rows), -np.inf), np.zeros(len(rows), dtype=np.int64)
        units, versions = self.batch.units, self.versions
        created = np.flatnonzero(versions.targets >= self.batch.size)
        if self.batch.table is None or len(created) > self.DENSE_FROM:
            if self.batch.table is not None:  # not for want of a bound: many new clusters
                self.dense_used = True
            if not self.dense.size:
                self.dense = np.full((count, count), -np.inf, dtype=np.float32)
                _block_products(units, versions.units, self.dense)
            else:  # a later round: the versions that changed, for the rows still to derive
                changed = np.flatnonzero(versions.changed)
                _block_products(units, versions.units, self.dense, start, changed)
            versions.changed[:] = False
            everything = np.arange(len(rows))
            self._offer(top, pick, everything, np.arange(count), self.dense[start:])
            return top, pick
        wide, far = self._reach(rows, best)
        columns = np.union1d(created, far)  # any later row may join a cluster the batch created
        if len(columns):
            sims = units[rows] @ versions.units[columns].T
            self._offer(top, pick, np.arange(len(rows)), columns, sims)
        if len(wide):
            self._offer(top, pick, wide, np.arange(count), units[rows[wide]] @ versions.units.T)
        self._offer_hits(top, pick, rows, first_touch)
        return top, pick

    def _valid(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Whether each version (``columns``) may be joined at each row (``rows``), same shape."""
        versions = self.versions
        retention = versions.retention[columns]
        valid: np.ndarray = (columns < rows) & (self._nexts[columns] >= rows)
        if retention.any():  # without retention every version lasts until its next touch
            valid &= (retention == 0) | (
                versions.last_time[columns] + retention >= self.batch.times[rows]
            )
        return valid

    def _offer(
        self,
        top: np.ndarray,
        pick: np.ndarray,
        at: np.ndarray,
        columns: np.ndarray,
        sims: np.ndarray,
    ) -> None:
        """Rows ``at`` (of rows ``start`` on) against versions ``columns`` (ascending)."""
        start = len(self.batch.units) - len(top)
        valid = self._valid((start + at)[:, None], columns[None, :])
        sims = np.where(valid, sims, -np.inf)
        best = sims.argmax(axis=1)
        found = sims[np.arange(len(at)), best].astype(np.float64)
        _keep_better(top, pick, at, found, columns[best])

    def _offer_hits(
        self, top: np.ndarray, pick: np.ndarray, rows: np.ndarray, first_touch: np.ndarray
    ) -> None:
        """Each row with the version, as of that row, of each of its hits the batch touched."""
        slots = self.batch.slots[rows]
        touched = (slots >= 0) & (first_touch[np.maximum(slots, 0)] < rows[:, None])
        at, column = np.nonzero(touched)
        if not len(at):
            return
        targets = self.versions.targets
        order = np.lexsort((np.arange(len(targets)), targets))
        keys = targets[order] * len(targets) + order
        wanted = slots[at, column] * len(targets) + rows[at]
        version = order[np.searchsorted(keys, wanted) - 1]  # its last touch before the row
        sims = np.einsum("ij,ij->i", self.batch.units[rows[at]], self.versions.units[version])
        sims = np.where(self._valid(rows[at], version), sims, -np.inf).astype(np.float64)
        # each row's best (most similar, then earliest version): what offering all would keep
        order = np.lexsort((version, -sims, at))
        first = np.ones(len(order), dtype=bool)
        first[1:] = at[order[1:]] != at[order[:-1]]
        best = order[first]
        _keep_better(top, pick, at[best], sims[best], version[best])

    def _reach(self, rows: np.ndarray, best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which products beyond the hits a row needs, from how far versions moved.

        A version of an indexed cluster that is not among a row's hits matters to it only if
        it moved further than the row's gap (its best untouched similarity less its k-th hit's).
        The ``FAR`` versions that moved most are compared with every row; a row whose gap is
        smaller than how far the next one moved is compared with every version (``wide``).
        Returns the wide rows (positions in ``rows``) and the far versions.
        """
        versions = self.versions
        table = self.batch.table if self.batch.table is not None else versions.units[:0]
        old = np.flatnonzero(versions.targets < self.batch.size)
        moved = versions.units[old] - table[versions.targets[old]]
        drift = np.sqrt(np.einsum("ij,ij->i", moved, moved))
        order = np.argsort(-drift, kind="stable")
        far = np.sort(old[order[: self.FAR]])
        cutoff = float(drift[order[self.FAR]]) if len(order) > self.FAR else 0.0
        kth = self.kth[rows]
        gap = np.where(np.isneginf(kth), np.inf, best - np.where(np.isneginf(kth), 0.0, kth))
        return np.flatnonzero(gap - self.SLACK <= cutoff), far


def _keep_better(
    top: np.ndarray, pick: np.ndarray, at: np.ndarray, sims: np.ndarray, columns: np.ndarray
) -> None:
    """Where a candidate beats the row's best so far (or ties it from an earlier version)."""
    better = (sims > top[at]) | ((sims == top[at]) & (columns < pick[at]) & np.isfinite(sims))
    top[at[better]] = sims[better]
    pick[at[better]] = columns[better]


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
    touches: tuple[np.ndarray, _Products] | None,
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
        touched_sim, pick = products.best(start, best_sim, first_touch, nexts)
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

    The same arithmetic in the same order as one at a time, so the same bits: a state's norm
    is kept with it (app/engine/rules.py).
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
    chosen = touched[rows]
    version = pick[rows[chosen]]
    members = np.empty(len(rows), dtype=np.float64)
    norms = np.empty(len(rows), dtype=np.float64)
    norms[chosen], members[chosen] = versions.norms[version], versions.members[version]
    known = batch.known(best_slot[rows[~chosen]])
    norms[~chosen], members[~chosen] = known.norms, known.num_observations
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
