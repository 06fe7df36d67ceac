"""Brute-force search in plain numpy: the reference every other index is tested against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.index.table import RepresentativeTable, TableBacked


def top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row of ``sims``, best first, padded with -1 / -inf.

    >>> d, i = top_k(np.array([[0.1, 0.9, 0.5]], dtype=np.float32), 2)
    >>> i.tolist()
    [[1, 2]]
    """
    b, n = sims.shape
    kk = min(k, n)
    out_d = np.full((b, k), -np.inf, dtype=np.float32)
    out_i = np.full((b, k), -1, dtype=np.int64)
    if kk == 0:
        return out_d, out_i
    if kk <= 8:
        # k rounds of argmax beat a partial sort for the small k the engine asks for;
        # each round masks its winners in a private copy.
        work = sims.copy() if kk > 1 else sims
        rows = np.arange(b)
        idx = np.empty((b, kk), dtype=np.int64)
        for j in range(kk):
            idx[:, j] = work.argmax(axis=1)
            if j + 1 < kk:
                work[rows, idx[:, j]] = -np.inf
    else:
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
    out_i[:, :kk] = idx
    out_d[:, :kk] = np.take_along_axis(sims, idx, axis=1)
    return out_d, out_i


class NumpyIndex(TableBacked):
    """Exact top-k by one matrix product over the representative table."""

    def __init__(self, dim: int = 0) -> None:
        self.table = RepresentativeTable(dim)

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace vectors."""
        self.table.upsert(keys, vectors)

    def remove(self, keys: Sequence[str]) -> list[tuple[str, int, int]]:
        """Forget keys; returns the rows that moved."""
        return self.table.remove(keys)

    exact_top_k = True  # one product with every row, then an exact selection

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k inner product."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return top_k(queries @ self.table.vectors.T, k)
