"""Scratch state of one batch: the clusters it touched, as a small matrix to search.

Observations later in a batch must see the clusters that earlier ones created or changed; the
batch-start index search cannot, so those few clusters live here and are searched directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from app.engine import rules
from app.engine.types import Cluster, Decision, Event, StepResult


class BatchScratch:
    """Touched clusters (None once deleted), their versions at batch start, and events."""

    def __init__(self, capacity: int, dim: int) -> None:
        self.touched: dict[str, Cluster | None] = {}
        self.expected: dict[str, int] = {}
        self.events: list[Event] = []
        self.tracks: dict[str, set[str]] = {}  # stream/track -> clusters that took it here
        self._rows: dict[str, int] = {}
        self._keys: list[str] = []
        self._matrix = np.zeros((capacity, dim), dtype=np.float32)
        self._alive = np.zeros(capacity, dtype=bool)
        self._dead = 0

    def current(self, key: str, clusters: Mapping[str, Cluster]) -> Cluster:
        """The cluster as this batch has left it so far; remembers its starting version."""
        cluster = self.touched.get(key)
        if cluster is not None:
            return cluster
        cluster = clusters[key]
        self.expected.setdefault(key, cluster.version)
        return cluster

    def record(self, key: str, cluster: Cluster | None) -> None:
        """Keep the new state of ``key`` (None: it left the DB) and its searchable row."""
        self.touched[key] = cluster
        row = self._rows.get(key)
        if row is None:
            row = len(self._keys)
            self._rows[key] = row
            self._keys.append(key)
        if cluster is None:
            self._alive[row] = False
            self._dead += 1
            return
        self._matrix[row] = rules.unit(cluster.state)
        self._alive[row] = True

    def best(
        self, unit: np.ndarray, usable: Callable[[Cluster], bool]
    ) -> tuple[str | None, float]:
        """Most similar touched cluster still in the DB that ``usable`` accepts."""
        n = len(self._keys)
        if n == 0:
            return None, -np.inf
        sims = self._matrix[:n] @ unit
        if self._dead:
            sims[~self._alive[:n]] = -np.inf
        while True:
            row = int(sims.argmax())
            sim = float(sims[row])
            if sim == -np.inf:
                return None, -np.inf
            key = self._keys[row]
            cluster = self.touched[key]
            if cluster is not None and usable(cluster):
                return key, sim
            sims[row] = -np.inf

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
