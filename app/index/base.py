"""The representative-search contract the engine relies on.

An index holds one unit vector per cluster key and answers top-k inner-product searches.
Results name *slots*: small integers stable until the next ``upsert``/``remove``, which the
engine turns back into keys with ``key_at``. Similarities returned are always exact (an
approximate index re-ranks its candidates against the stored vectors), so threshold decisions
never depend on approximation error.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    """Top-k inner-product search over one representative per cluster key."""

    def __len__(self) -> int:
        """Number of keys held."""

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held."""

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace the vectors of ``keys`` (rows of ``vectors``, unit length)."""

    def remove(self, keys: Sequence[str]) -> list[tuple[str, int, int]]:
        """Forget ``keys``; unknown keys are ignored.

        Returns the keys whose slots changed, ``(key, old slot, new slot)`` in the order they
        moved, so that arrays kept beside the index by slot can follow.
        """

    def loading(self, expected: int = 0) -> AbstractContextManager[None]:
        """A block of about ``expected`` upserts and no searches (a bootstrap).

        An index may make room at once and build its search structures at the end, instead of
        chunk by chunk.
        """

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact similarities (b, k) float32 and slots (b, k) int64 of the best ``k``; -1 pads."""

    @property
    def exact_top_k(self) -> bool:
        """Whether ``search`` returns the true best ``k``: no key left out is more similar.

        The engine then knows a bound on every key a search did not return (app/engine/plan.py).
        """

    def key_at(self, slot: int) -> str:
        """The key stored at ``slot``."""

    def slot_of(self, key: str) -> int:
        """The slot of ``key``."""

    def vector(self, key: str) -> np.ndarray:
        """A copy of the vector stored for ``key``."""

    @property
    def vectors(self) -> np.ndarray:
        """The stored vectors, one row per slot (a view; do not modify)."""
