"""How good a clustering is, measured against ground-truth identity labels.

The product's quality target is per-item B-cubed precision (false merges of two people are what
an operator cannot afford) with recall as high as possible; pairwise precision/recall and NMI
are reported too so results compare with the literature. Everything works from the sparse
contingency table (which true class meets which predicted cluster, and how often), so scoring
100k items takes milliseconds and never builds all pairs or a dense matrix.

Labels can be any hashable values: ints for identities, strings for predicted cluster ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Labels = Sequence[Any] | np.ndarray


@dataclass(frozen=True)
class Contingency:
    """Non-empty cells of the true-class x predicted-cluster table, with the margins.

    ``cell`` holds each cell's count, ``row``/``col`` the true class and predicted cluster of
    that cell; ``true_size``/``pred_size`` the sizes of every class and cluster.
    """

    cell: np.ndarray
    row: np.ndarray
    col: np.ndarray
    true_size: np.ndarray
    pred_size: np.ndarray

    @property
    def n(self) -> int:
        """Number of items."""
        return int(self.true_size.sum())


def _codes(labels: Labels) -> np.ndarray:
    """Dense codes 0..k-1 for arbitrary labels (sortable ones via np.unique, others by dict).

    A plain sequence of mixed types (or of tuples) is kept as objects, so that ``1`` and ``"1"``
    stay different labels instead of numpy turning both into the string ``"1"``.
    """
    array = labels if isinstance(labels, np.ndarray) else None
    if array is None and len({type(v) for v in labels}) == 1:
        array = np.asarray(labels)
    if array is None or array.ndim != 1:
        array = np.empty(len(labels), dtype=object)
        array[:] = list(labels)
    try:
        return np.unique(array, return_inverse=True)[1].reshape(-1)
    except TypeError:  # mixed, unorderable labels
        seen: dict[Any, int] = {}
        return np.fromiter((seen.setdefault(v, len(seen)) for v in array), np.int64, array.size)


def contingency(y_true: Labels, y_pred: Labels) -> Contingency:
    """The sparse contingency table of two labellings of the same items.

    >>> c = contingency([0, 0, 1], ["a", "b", "b"])
    >>> c.cell.tolist(), c.true_size.tolist(), c.pred_size.tolist()
    ([1, 1, 1], [2, 1], [1, 2])
    """
    a, b = _codes(y_true), _codes(y_pred)
    if a.size != b.size:
        raise ValueError(f"labellings differ in length: {a.size} true, {b.size} predicted")
    if a.size == 0:
        raise ValueError("nothing to score: no items")
    n_pred = int(b.max()) + 1
    pair, cell = np.unique(a.astype(np.int64) * n_pred + b, return_counts=True)
    return Contingency(
        cell=cell,
        row=pair // n_pred,
        col=pair % n_pred,
        true_size=np.bincount(a),
        pred_size=np.bincount(b),
    )


def bcubed(y_true: Labels, y_pred: Labels) -> tuple[float, float, float]:
    """B-cubed precision, recall and F1, per item then averaged over items.

    An item's precision is the share of its predicted cluster that has its true label; its
    recall is the share of its true class that landed in its predicted cluster. Putting one
    stranger into a big cluster costs precision for every member, which is why this is the
    measure the product's precision target is set on.

    >>> p, r, f = bcubed([0, 0, 0, 1], [0, 0, 1, 1])
    >>> round(p, 3), round(r, 3), round(f, 3)
    (0.75, 0.667, 0.706)
    """
    return _bcubed(contingency(y_true, y_pred))


def _bcubed(c: Contingency) -> tuple[float, float, float]:
    """B-cubed from the table: each cell's n items each score n / cluster and n / class."""
    share = c.cell.astype(np.float64) * c.cell
    precision = float((share / c.pred_size[c.col]).sum() / c.n)
    recall = float((share / c.true_size[c.row]).sum() / c.n)
    return precision, recall, _f1(precision, recall)


def pairwise(y_true: Labels, y_pred: Labels) -> tuple[float, float]:
    """Pairwise precision and recall of a clustering against the true labels.

    Of the item pairs put together, how many are one person, and of the pairs that are one
    person, how many were put together.

    With no pair put together precision is 1.0 (no false merge); with no true pair recall is
    1.0 (nothing to find).

    >>> pairwise([0, 0, 0, 1], [0, 0, 1, 1])
    (0.5, 0.3333333333333333)
    """
    return _pairwise(contingency(y_true, y_pred))


def _pairwise(c: Contingency) -> tuple[float, float]:
    """Pairwise P/R from the table: pairs within cells are the correct merges."""
    together = _pairs(c.cell)
    predicted, true = _pairs(c.pred_size), _pairs(c.true_size)
    precision = together / predicted if predicted else 1.0
    recall = together / true if true else 1.0
    return precision, recall


def nmi(y_true: Labels, y_pred: Labels) -> float:
    """Normalised mutual information, normalised by the arithmetic mean of the two entropies.

    As in scikit-learn's default. Defined as 1.0 when both labellings are a single cluster and
    0.0 when exactly one of them is (its entropy is zero, so nothing is shared).

    >>> round(nmi([0, 0, 1, 1], [1, 1, 0, 0]), 6), nmi([0, 0, 1], [5, 5, 5])
    (1.0, 0.0)
    """
    return _nmi(contingency(y_true, y_pred))


def _nmi(c: Contingency) -> float:
    """NMI from the table; the single-cluster cases first, as their entropy is zero."""
    single_true, single_pred = c.true_size.size == 1, c.pred_size.size == 1
    if single_true or single_pred:
        return 1.0 if single_true and single_pred else 0.0
    n = float(c.n)
    cell = c.cell.astype(np.float64)
    outer = c.true_size[c.row].astype(np.float64) * c.pred_size[c.col]
    mutual = float((cell / n * np.log(cell * n / outer)).sum())
    mean_entropy = (_entropy(c.true_size) + _entropy(c.pred_size)) / 2
    return float(min(1.0, max(0.0, mutual / mean_entropy)))


def score_all(y_true: Labels, y_pred: Labels) -> dict[str, float | int]:
    """Every measure at once, as printed by ``fvc evaluate`` and stored with benchmark results.

    >>> score_all([0, 0, 1], [0, 0, 1])["bcubed_f1"]
    1.0
    """
    c = contingency(y_true, y_pred)
    precision, recall, f1 = _bcubed(c)
    pair_precision, pair_recall = _pairwise(c)
    return {
        "clusters": int(c.pred_size.size),
        "bcubed_precision": precision,
        "bcubed_recall": recall,
        "bcubed_f1": f1,
        "pairwise_precision": pair_precision,
        "pairwise_recall": pair_recall,
        "nmi": _nmi(c),
    }


def _f1(precision: float, recall: float) -> float:
    """Harmonic mean, 0.0 when both are zero."""
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


def _pairs(sizes: np.ndarray) -> float:
    """Number of unordered pairs within groups of these sizes."""
    sizes = sizes.astype(np.float64)
    return float((sizes * (sizes - 1) / 2).sum())


def _entropy(sizes: np.ndarray) -> float:
    """Shannon entropy (nats) of a partition with these group sizes."""
    p = sizes[sizes > 0] / float(sizes.sum())
    return float(-(p * np.log(p)).sum())
