"""Coherence of many clusters at once: the summary in a worker's ``/stats`` and in listings.

Each value is ``rules.coherence`` of one cluster, so every place shows the same number. Reading
a million clusters' accumulators costs about a second of Python (the gather dominates; an array
form of the formula would not be faster), so a worker computes its summary in chunks that let
the event loop run in between, and keeps it for ``ttl_s`` seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from app.engine import Cluster
from app.engine.rules import coherence

LOW = 0.5  # below this, members are on average further than 60 degrees from their representative
CHUNK = 50_000


def has_coherence(method: str) -> bool:
    """Whether clusters of ``method`` have a coherence (asked of ``rules.coherence`` itself)."""
    return coherence(method, 1.0, 1) is not None


def coherences(method: str, clusters: Sequence[Cluster]) -> np.ndarray:
    """``rules.coherence`` of each cluster, in order, for a method that ``has_coherence``."""
    values = (coherence(method, c.norm, c.num_observations) for c in clusters)
    return np.fromiter(values, dtype=np.float64, count=len(clusters))


def describe(values: np.ndarray) -> dict[str, float | int]:
    """Mean, 5th percentile and how many are below ``LOW``: where to look first.

    >>> describe(np.array([1.0, 0.9, 0.3]))
    {'clusters': 3, 'mean': 0.7333, 'p5': 0.36, 'below_0_5': 1}
    """
    if values.size == 0:
        return {"clusters": 0}
    return {
        "clusters": int(values.size),
        "mean": round(float(values.mean()), 4),
        "p5": round(float(np.percentile(values, 5)), 4),
        "below_0_5": int(np.count_nonzero(values < LOW)),
    }


class CoherenceSummary:
    """``describe`` of a worker's clusters, recomputed at most every ``ttl_s`` seconds.

    Single observations are left out: they are coherent by definition and would only hide the
    clusters worth a look.
    """

    def __init__(self, ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._at = -math.inf
        self._method: str | None = None
        self._value: dict[str, float | int] | None = None
        self._lock = asyncio.Lock()

    async def get(
        self, method: str, clusters: Mapping[str, Cluster]
    ) -> dict[str, float | int] | None:
        """The summary (None when the method has no coherence), fresh or at most ttl_s old."""
        async with self._lock:
            if method != self._method or self._clock() - self._at >= self.ttl_s:
                self._value = (
                    await self._compute(method, clusters) if has_coherence(method) else None
                )
                self._method, self._at = method, self._clock()
            return self._value

    @staticmethod
    async def _compute(method: str, clusters: Mapping[str, Cluster]) -> dict[str, float | int]:
        snapshot = [c for c in clusters.values() if c.num_observations > 1]
        parts = [np.empty(0)]
        for start in range(0, len(snapshot), CHUNK):
            parts.append(coherences(method, snapshot[start : start + CHUNK]))
            await asyncio.sleep(0)  # let batches run between chunks
        return describe(np.concatenate(parts))
