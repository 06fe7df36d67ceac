"""Each vector's nearest neighbours within a sample: the statistics calibration starts from."""

from __future__ import annotations

import numpy as np

NN_QUERIES = 6000  # neighbour statistics from at most this many rows (all rows are neighbours)
CHUNK_CELLS = 1 << 25  # similarities computed at once: 128 MB of float32, whatever the sample


def nearest_similarities(
    X: np.ndarray, k: int, limit: int = NN_QUERIES, seed: int = 0
) -> np.ndarray:
    """Each (sampled) row's similarities to its ``k`` nearest other rows, most similar first.

    >>> X = np.eye(3, dtype=np.float32)[[0, 0, 1]]
    >>> nearest_similarities(X, 2).tolist()
    [[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]
    """
    n = X.shape[0]
    k = max(1, min(k, n - 1))
    rows = np.arange(n)
    if n > limit:
        rows = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    out = np.empty((rows.size, k), dtype=np.float64)
    step = max(1, CHUNK_CELLS // n)
    for lo in range(0, rows.size, step):
        chunk = rows[lo : lo + step]
        sims = X[chunk] @ X.T
        sims[np.arange(chunk.size), chunk] = -np.inf
        top = -np.partition(-sims, k - 1, axis=1)[:, :k]
        out[lo : lo + chunk.size] = -np.sort(-top, axis=1)
    return out


__all__ = ["NN_QUERIES", "nearest_similarities"]
