"""Scratch state of one batch: the clusters it touched, as a small matrix to search.

Observations later in a batch must see the clusters that earlier ones created or changed; the
batch-start index search cannot, so those few clusters live here and are searched directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from app.engine.types import Cluster, Decision, Event, StepResult


class BatchScratch:
    """Touched clusters (None once deleted), their versions at batch start, and events.

    The similarities of the batch's observations to its touched clusters are kept a block of
    ``BLOCK`` observations at a time: one matrix product against the rows as they were when the
    block began, then each row written during the block is multiplied by the block's
    observations again (one small product per write). One product per block runs at the BLAS's
    speed; a product per observation against every touched row re-reads them all from memory
    each time (5x slower at 512 rows).
    """

    BLOCK = 32

    def __init__(self, units: np.ndarray, *, searched: bool = True) -> None:
        capacity, dim = units.shape
        self.searched = searched  # False: the batch was planned (plan.py), nothing searches here
        self.touched: dict[str, Cluster | None] = {}
        self.expected: dict[str, int] = {}
        self.events: list[Event] = []
        self.tracks: dict[str, set[str]] = {}  # stream/track -> clusters that took it here
        self._read: dict[str, Cluster] = {}  # clusters read ahead (``read``), as they were
        self._units = units
        self._rows: dict[str, int] = {}
        self._keys: list[str] = []
        self._matrix = np.zeros((capacity, dim), dtype=np.float32)
        self._alive = np.zeros(capacity, dtype=bool)
        self._block_start = -self.BLOCK
        self._block_units = units[:0]
        # row r, column j: touched row r against the block's observation j (a row is written
        # whole, contiguously, each time the batch changes its cluster)
        self._sims = np.full((capacity, self.BLOCK), -np.inf, dtype=np.float32)

    def read(self, clusters: list[Cluster]) -> None:
        """Clusters the batch is about to touch, read at once (``ClusterColumns.at``)."""
        self._read.update((c.key, c) for c in clusters)

    def peek(self, key: str, clusters: Mapping[str, Cluster]) -> Cluster:
        """The cluster as this batch has left it so far, without taking it as touched."""
        return self.touched.get(key) or self._read.get(key) or clusters[key]

    def current(self, key: str, clusters: Mapping[str, Cluster]) -> Cluster:
        """The cluster as this batch has left it so far; remembers its starting version."""
        cluster = self.touched.get(key)
        if cluster is not None:
            return cluster
        cluster = self._read.get(key) or clusters[key]
        self.expected.setdefault(key, cluster.version)
        return cluster

    def record(self, key: str, cluster: Cluster | None) -> None:
        """Keep the new state of ``key`` (None: it left the DB) and its searchable row."""
        self.touched[key] = cluster
        if not self.searched:
            return
        row = self._rows.get(key)
        if row is None:
            row = len(self._keys)
            self._rows[key] = row
            self._keys.append(key)
        if cluster is None:
            self._alive[row] = False
            self._sims[row] = -np.inf
            return
        vector = self._matrix[row]
        vector[:] = cluster.unit
        self._alive[row] = True
        np.dot(self._block_units, vector, out=self._sims[row, : len(self._block_units)])

    def best(
        self, position: int, usable: Callable[[Cluster], bool] | None
    ) -> tuple[str | None, float]:
        """Most similar touched cluster still in the DB that ``usable`` accepts (None: any).

        ``position`` is the observation's row in the batch's units.
        """
        n = len(self._keys)
        if n == 0:
            return None, -np.inf
        column = position - self._block_start
        if column >= self.BLOCK or column < 0:
            self._begin_block(position, n)
            column = 0
        sims = self._sims[:n, column]
        while True:
            row = int(sims.argmax())
            sim = float(sims[row])
            if sim == -np.inf:
                return None, -np.inf
            key = self._keys[row]
            cluster = self.touched[key]
            if cluster is not None and (usable is None or usable(cluster)):
                return key, sim
            sims = sims.copy()  # rare: a touched cluster the observation may not join
            sims[row] = -np.inf

    def _begin_block(self, position: int, n: int) -> None:
        """Similarities of the next ``BLOCK`` observations to the ``n`` rows as they are now."""
        self._block_start = position
        self._block_units = self._units[position : position + self.BLOCK]
        sims = self._matrix[:n] @ self._block_units.T
        sims[~self._alive[:n]] = -np.inf
        self._sims[:n, : len(self._block_units)] = sims

    def result(self, decisions: tuple[Decision, ...], watermark: int) -> StepResult:
        """The batch as a result to store and apply."""
        upserts = tuple(c for c in self.touched.values() if c is not None)
        deletions = tuple(
            k for k, c in self.touched.items() if c is None and self.expected.get(k, 0) != 0
        )
        return StepResult(
            decisions=decisions,
            upserts=upserts,
            deletions=deletions,
            events=tuple(self.events),
            expected=dict(self.expected),
            watermark=watermark,
        )
