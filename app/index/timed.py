"""An index wrapper that adds up the time spent searching and updating, for stage metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager

import numpy as np

from app.index.base import VectorIndex


class TimedIndex:
    """Delegates to ``inner``; ``seconds["search"]`` and ``seconds["update"]`` grow with use."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner = inner
        self.seconds = {"search": 0.0, "update": 0.0}

    def __len__(self) -> int:
        return len(self.inner)

    def __contains__(self, key: object) -> bool:
        return key in self.inner

    @property
    def vectors(self) -> np.ndarray:
        """The inner index's vectors."""
        return self.inner.vectors

    def key_at(self, slot: int) -> str:
        """Key at a slot."""
        return self.inner.key_at(slot)

    def slot_of(self, key: str) -> int:
        """Slot of a key."""
        return self.inner.slot_of(key)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Timed search."""
        began = time.perf_counter()
        try:
            return self.inner.search(queries, k)
        finally:
            self.seconds["search"] += time.perf_counter() - began

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Timed upsert."""
        began = time.perf_counter()
        self.inner.upsert(keys, vectors)
        self.seconds["update"] += time.perf_counter() - began

    def loading(self, expected: int = 0) -> AbstractContextManager[None]:
        """The inner index's bulk-load block (its build time is bootstrap, not a stage)."""
        return self.inner.loading(expected)

    def remove(self, keys: Sequence[str]) -> None:
        """Timed removal."""
        began = time.perf_counter()
        self.inner.remove(keys)
        self.seconds["update"] += time.perf_counter() - began
