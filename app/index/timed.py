"""An index wrapper that times searching and updating, for the worker's stage metrics."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import numpy as np

from app.index.base import VectorIndex

if TYPE_CHECKING:
    from prometheus_client import Histogram


class TimedIndex:
    """Delegates to ``inner``; observes searches and updates as ``stage_seconds`` stages."""

    def __init__(self, inner: VectorIndex, stage_seconds: Histogram) -> None:
        self.inner = inner
        self._search = stage_seconds.labels("search")
        self._update = stage_seconds.labels("index_update")

    def __len__(self) -> int:
        return len(self.inner)

    def __contains__(self, key: object) -> bool:
        return key in self.inner

    @property
    def vectors(self) -> np.ndarray:
        """The inner index's vectors."""
        return self.inner.vectors

    @property
    def exact_top_k(self) -> bool:
        """The inner index's answer."""
        return self.inner.exact_top_k

    def key_at(self, slot: int) -> str:
        """Key at a slot."""
        return self.inner.key_at(slot)

    def slot_of(self, key: str) -> int:
        """Slot of a key."""
        return self.inner.slot_of(key)

    def vector(self, key: str) -> np.ndarray:
        """A copy of ``key``'s vector."""
        return self.inner.vector(key)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Timed search."""
        with self._search.time():
            return self.inner.search(queries, k)

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Timed upsert."""
        with self._update.time():
            self.inner.upsert(keys, vectors)

    def loading(self, expected: int = 0) -> AbstractContextManager[None]:
        """The inner index's bulk-load block (its build time is bootstrap, not a stage)."""
        return self.inner.loading(expected)

    def remove(self, keys: Sequence[str]) -> list[tuple[str, int, int]]:
        """Timed removal."""
        with self._update.time():
            return self.inner.remove(keys)
