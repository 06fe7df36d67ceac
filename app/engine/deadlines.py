"""Due times of clusters (expiry, realization by time) without scanning every cluster.

A lazy min-heap: entries are pushed whenever a cluster changes and checked against the cluster's
current version when they come due, so stale ones are simply dropped. Hand-written because the
standard library's heapq has no keyed update, and the scan it replaces is O(clusters) per tick.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator


class Deadlines:
    """A min-heap of (due time, key, version) with lazy invalidation."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str, int]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: int, key: str, version: int) -> None:
        """Remember that ``key`` at ``version`` comes due at ``due``."""
        heapq.heappush(self._heap, (due, key, version))

    def pop_due(self, now: int, current: Callable[[str], int | None]) -> Iterator[str]:
        """Keys due at ``now`` whose entry still matches their ``current`` version, in due order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, key, version = heapq.heappop(heap)
            if current(key) == version:
                yield key

    def compact(self, current: Callable[[str], int | None], limit: int) -> None:
        """Drop stale entries once the heap holds more than ``limit`` of them."""
        if len(self._heap) <= limit:
            return
        self._heap = [entry for entry in self._heap if current(entry[1]) == entry[2]]
        heapq.heapify(self._heap)
