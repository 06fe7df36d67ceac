"""What a labelled set of embeddings looks like: the figures that decide how hard it is to cluster.

A synthetic scene stands in for real embeddings only as far as these figures agree, so the same
function measures both (docs/quality.md puts them side by side): how alike two images of one
person are and how alike two people are (mean and spread of the cosines, and the separation of
the two), the same after removing the direction common to all vectors (embedding models put
every face in one cone, so raw cosines of different people are not near 0), how many directions
identities spread over, how many images each person has, and how many images are far from
their person.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ROW_LIMIT = 6000  # all pairs among at most this many rows
BLOCK = 1024
MIN_IMAGES = 5  # people with at least this many images define identity means
FAR_SPREADS = 3.0  # "far from their person": this many robust spreads below the median


@dataclass(frozen=True)
class VectorStats:
    """Cosine statistics of same-person and different-people pairs, and the shape of the set."""

    vectors: int
    people: int
    seen_once: int
    images_median: float  # images per person, among people seen at least twice
    images_max: int
    same_mean: float
    same_sd: float
    different_mean: float
    different_sd: float
    separation: float  # (same_mean - different_mean) / pooled sd, the d' of verification
    centred_same: float
    centred_different: float
    identity_dimensions: float  # participation ratio of the identity means' covariance
    far_share: float  # images far below the usual cosine to the mean of their person's others

    def as_dict(self) -> dict[str, Any]:
        """The figures, rounded for a report."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def vector_stats(X: np.ndarray, y: np.ndarray, *, seed: int = 0) -> VectorStats:
    """Measure ``X`` (any norms) against its labels ``y``; pairs from a sample of the rows.

    >>> rng = np.random.default_rng(0)
    >>> centres = rng.standard_normal((20, 64))
    >>> y = np.repeat(np.arange(20), 10)
    >>> stats = vector_stats(centres[y] + 0.5 * rng.standard_normal((200, 64)), y)
    >>> round(stats.same_mean, 1), abs(stats.different_mean) < 0.05, stats.images_median
    (0.8, True, 10.0)
    """
    codes = np.unique(y, return_inverse=True)[1].reshape(-1)
    sizes = np.bincount(codes)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    rows = np.arange(codes.size)
    if rows.size > ROW_LIMIT:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, ROW_LIMIT, replace=False))
    sample, labels = unit[rows].astype(np.float64), codes[rows]
    (same_mean, same_sd), (diff_mean, diff_sd) = _pair_moments(sample, labels)
    centred = sample - sample.mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    (c_same, _), (c_diff, _) = _pair_moments(centred, labels)
    pooled = np.sqrt((same_sd**2 + diff_sd**2) / 2)
    repeated = sizes[sizes > 1]
    return VectorStats(
        vectors=int(codes.size),
        people=int(sizes.size),
        seen_once=int((sizes == 1).sum()),
        images_median=float(np.median(repeated)) if repeated.size else 1.0,
        images_max=int(sizes.max()),
        same_mean=same_mean,
        same_sd=same_sd,
        different_mean=diff_mean,
        different_sd=diff_sd,
        separation=float((same_mean - diff_mean) / pooled) if pooled > 0 else float("nan"),
        centred_same=c_same,
        centred_different=c_diff,
        identity_dimensions=_identity_dimensions(unit, codes, sizes),
        far_share=_far_share(unit, codes, sizes),
    )


def _pair_moments(unit: np.ndarray, labels: np.ndarray) -> tuple[tuple[float, float], ...]:
    """(mean, sd) of the cosines of all same-label pairs, then of all different-label pairs."""
    acc = np.zeros((2, 3))  # rows: same, different; columns: count, sum, sum of squares
    index = np.arange(labels.size)
    for lo in range(0, labels.size, BLOCK):
        sims = unit[lo : lo + BLOCK] @ unit.T
        later = index[None, :] > index[lo : lo + BLOCK, None]
        same = labels[lo : lo + BLOCK, None] == labels[None, :]
        for row, mask in enumerate((same & later, ~same & later)):
            values = sims[mask]
            acc[row] += (values.size, values.sum(), (values * values).sum())
    out = []
    for count, total, squares in acc:
        mean = total / count if count else float("nan")
        out.append(
            (
                float(mean),
                float(np.sqrt(max(squares / count - mean**2, 0.0))) if count else float("nan"),
            )
        )
    return tuple(out)


def _identity_dimensions(unit: np.ndarray, codes: np.ndarray, sizes: np.ndarray) -> float:
    """How many directions the identity means spread over (participation ratio, centred)."""
    keep = np.flatnonzero(sizes >= MIN_IMAGES)
    if keep.size < 3:
        return float("nan")
    sums = np.zeros((sizes.size, unit.shape[1]))
    np.add.at(sums, codes, unit)
    means = sums[keep] / np.linalg.norm(sums[keep], axis=1, keepdims=True)
    eig = np.clip(np.linalg.eigvalsh(np.cov(means, rowvar=False)), 0.0, None)
    return float(eig.sum() ** 2 / (eig**2).sum())


def _far_share(unit: np.ndarray, codes: np.ndarray, sizes: np.ndarray) -> float:
    """Share of images whose cosine to the mean of their person's other images is unusually low.

    Unusual: more than ``FAR_SPREADS`` robust spreads (1.4826 MAD) below the median, over
    people with at least ``MIN_IMAGES`` images.
    """
    rows = np.flatnonzero(sizes[codes] >= MIN_IMAGES)
    if rows.size == 0:
        return float("nan")
    sums = np.zeros((sizes.size, unit.shape[1]))
    np.add.at(sums, codes, unit)
    others = sums[codes[rows]] - unit[rows]
    cos = np.einsum("ij,ij->i", unit[rows], others) / np.linalg.norm(others, axis=1)
    median = np.median(cos)
    spread = 1.4826 * np.median(np.abs(cos - median))
    return float((cos < median - FAR_SPREADS * spread).mean())
