"""A dense table of representatives: the exact truth every index searches or re-ranks against.

Rows are kept contiguous (a removal moves the last row into the hole), so an exact search is one
matrix product over ``vectors`` with no holes to mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np


class RepresentativeTable:
    """Keys to rows of a growing float32 matrix, with O(1) upsert and swap-remove."""

    def __init__(self, dim: int = 0, capacity: int = 1024) -> None:
        self.dim = dim
        self._capacity = capacity
        self._mat = np.zeros((capacity, max(dim, 1)), dtype=np.float32)
        self._keys: list[str] = []
        self._slots: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    @property
    def vectors(self) -> np.ndarray:
        """Live rows (a view)."""
        return self._mat[: len(self._keys)]

    def key_at(self, slot: int) -> str:
        """Key of a row."""
        return self._keys[slot]

    def slot_of(self, key: str) -> int:
        """Row of a key (KeyError when absent)."""
        return self._slots[key]

    def vector(self, key: str) -> np.ndarray:
        """A copy of ``key``'s row (KeyError when absent)."""
        return self._mat[self._slots[key]].copy()

    def keys(self) -> list[str]:
        """Keys in row order."""
        return list(self._keys)

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """Write rows; returns the slot of each key."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), -1)
        self._ensure_dim(vectors.shape[1])
        new = sum(key not in self._slots for key in keys)  # updates need no room: no growth
        self._grow(len(self._keys) + new)
        slots = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            slot = self._slots.get(key)
            if slot is None:
                slot = len(self._keys)
                self._keys.append(key)
                self._slots[key] = slot
            slots[i] = slot
        self._mat[slots] = vectors
        return slots

    def remove(self, keys: Sequence[str]) -> list[tuple[str, int, int]]:
        """Delete rows; returns ``(moved_key, old_slot, new_slot)`` for rows that moved."""
        moved: list[tuple[str, int, int]] = []
        for key in keys:
            slot = self._slots.pop(key, None)
            if slot is None:
                continue
            last = len(self._keys) - 1
            last_key = self._keys.pop()
            if slot != last:
                self._keys[slot] = last_key
                self._slots[last_key] = slot
                self._mat[slot] = self._mat[last]
                moved.append((last_key, last, slot))
        return moved

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` at once: growing by doubling copies the table each time."""
        if self.dim == 0:
            self._capacity = max(self._capacity, rows)
        else:
            self._grow(rows)

    def _ensure_dim(self, dim: int) -> None:
        if self.dim == 0:
            self.dim = dim
            self._mat = np.zeros((self._capacity, dim), dtype=np.float32)
        elif dim != self.dim:
            message = f"vector dimension {dim} does not match the index dimension {self.dim}"
            raise ValueError(message)

    def _grow(self, needed: int) -> None:
        if needed <= self._mat.shape[0]:
            return
        capacity = max(needed, 2 * self._mat.shape[0])
        grown = np.zeros((capacity, self.dim), dtype=np.float32)
        grown[: len(self._keys)] = self._mat[: len(self._keys)]
        self._mat = grown


class TableBacked:
    """The lookups every index answers from its ``table`` (the exact representatives)."""

    table: RepresentativeTable

    def __len__(self) -> int:
        return len(self.table)

    def __contains__(self, key: object) -> bool:
        return key in self.table

    @contextmanager
    def loading(self, expected: int = 0) -> Iterator[None]:
        """About ``expected`` keys are coming: room is made for them at once."""
        self.table.reserve(expected)
        yield

    @property
    def vectors(self) -> np.ndarray:
        """Current representatives, one row per slot."""
        return self.table.vectors

    def key_at(self, slot: int) -> str:
        """Key at a slot."""
        return self.table.key_at(slot)

    def slot_of(self, key: str) -> int:
        """Slot of a key."""
        return self.table.slot_of(key)

    def vector(self, key: str) -> np.ndarray:
        """A copy of ``key``'s vector."""
        return self.table.vector(key)
