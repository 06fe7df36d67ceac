"""The improved online mode: decisions on the mean similarity between members, size-aware.

Switched on by ``clustering_config.improved_mode`` (docs/quality.md has the measurements). Two
rules replace the plain ones, nothing else changes:

* **Joins.** An observation ``x`` still goes to its most similar cluster (by representative, as
  the index ranks them), but joins it only when its *mean similarity to the cluster's members*
  reaches ``reg_threshold - d(count, n)``. With SIMPLE_AVERAGE the state is the sum ``S`` of the
  members' unit vectors, so that mean is exact and free: ``x . S / n = sim * |S| / n``.
* **Repairs on the merge timer.** Two clusters merge when the mean similarity between their
  members, ``S_a . S_b / (n_a n_b)`` (average linkage, exact from the sums), reaches
  ``max(min_threshold, initial_threshold - d(n_a, n_b))``. Candidates, the greedy order (here by
  margin over the threshold), "each cluster at most once per pass" and "the oldest id survives"
  are the plain merge pass's, so every repair is an ordinary merge: one ``MERGE_EVENT`` naming
  the absorbed cluster, counts added up, stored atomically like any merge.

``d(n_a, n_b) = size_discount * (1 - sqrt((1/n_a + 1/n_b) / 2))`` is zero for two single
observations and rises to ``size_discount`` as both clusters grow: a mean over more member pairs
is a less noisy estimate of how alike two people are, so it can be trusted at a lower value.
Why these and not the plain rules: a representative (a mean) is *more* similar to anything than
its members are, so the plain rules get looser as clusters grow (false merges of big clusters)
while single observations are held to the strictest test (splits). Measuring members instead
of means removes that drift; the size discount then spends the precision it saves on recall.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from app.engine.columns import FIELD

if TYPE_CHECKING:
    from app.config import ImprovedModeConfig, MergingConfig
    from app.engine.engine import Engine
    from app.engine.scratch import BatchScratch
    from app.engine.types import Cluster


def mean_member_similarity(cluster: Cluster, sim: float) -> float:
    """Mean similarity of a unit vector to ``cluster``'s members, from that to its representative.

    ``x . S / n = sim * |S| / n`` (exact for SIMPLE_AVERAGE sums).

    >>> from app.engine.types import Cluster, ClusterId
    >>> unit = np.array([0.5, 0.5], dtype=np.float32) ** 0.5  # members (1, 0) and (0, 1)
    >>> c = Cluster(ClusterId(0, "k", "s"), unit, 2**0.5, 2, True, 0, 0, ("s",), 0, 1, 0, 0)
    >>> round(mean_member_similarity(c, float(np.sqrt(0.5))), 6)  # x = (1, 0): mean of 1 and 0
    0.5
    """
    return sim * cluster.norm / cluster.num_observations


def joins(
    engine: Engine,
    mode: ImprovedModeConfig,
    key: str,
    sim: float,
    threshold: float,
    count: int,
    scratch: BatchScratch,
) -> bool:
    """Whether an observation (``count`` observations' worth) joins cluster ``key``.

    ``sim`` is its similarity to the representative; the cluster is read as this batch has left
    it (pure: nothing is recorded), so a batch decides exactly as one-by-one processing does.
    """
    # Quick refusal, exact: for sim >= 0 the mean member similarity is at most ``sim`` (|S| <= n),
    # and for sim < 0 it is at most 0; either way it is below ``floor`` (1e-6: float rounding).
    floor = threshold - mode.size_discount
    if sim < floor - 1e-6 and (sim >= 0.0 or floor >= 0.0):
        return False
    cluster = scratch.peek(key, engine.clusters)
    n = cluster.num_observations
    mean = sim * cluster.norm / n  # mean_member_similarity, inlined
    return mean >= threshold - mode.discount(count, n)


def merge_threshold(merging: MergingConfig, mode: ImprovedModeConfig, n_a: int, n_b: int) -> float:
    """Mean member similarity two clusters need to merge in the improved mode.

    >>> from app.config import ImprovedModeConfig, MergingConfig
    >>> m, mode = MergingConfig(0.95, 1.0, 0.5, 5000), ImprovedModeConfig(True, 0.03)
    >>> merge_threshold(m, mode, 1, 1), round(merge_threshold(m, mode, 50, 50), 4)
    (0.95, 0.9242)
    """
    return max(merging.min_threshold, merging.initial_threshold - mode.discount(n_a, n_b))


def candidate_pairs(
    engine: Engine,
    queries: list[str],
    merging: MergingConfig,
    mode: ImprovedModeConfig,
) -> list[tuple[float, str, str]]:
    """Pairs among each query's nearest neighbours whose members are alike enough, best first.

    Returns ``(margin, key_a, key_b)`` with ``key_a < key_b``, sorted by falling margin (mean
    member similarity minus the pair's threshold), then by keys, so the pass is deterministic.
    The test runs on whole arrays; only the pairs that pass are looked at one by one.
    """
    if not queries:
        return []
    index, clusters = engine.index, engine.clusters
    query_slots = np.array([index.slot_of(k) for k in queries], dtype=np.int64)
    sims, slots = index.search(index.vectors[query_slots], min(engine.merge_k + 1, len(index)))
    found = slots >= 0
    seen, where = np.unique(np.concatenate([query_slots, slots[found]]), return_inverse=True)
    keys = [index.key_at(int(slot)) for slot in seen]
    ints, held_norms = clusters.gather(seen)  # one gather per column, not a Cluster per key
    counts = ints[:, FIELD["num_observations"]].astype(np.float64)
    norms = held_norms.astype(np.float64)
    scale = norms / counts  # |S| / n: mean member sim = sim * s_a * s_b
    a = where[: len(queries)][:, None].repeat(slots.shape[1], axis=1)
    b = np.zeros_like(slots)
    b[found] = where[len(queries) :]
    mean = sims.astype(np.float64) * scale[a] * scale[b]
    spread = np.sqrt((1.0 / counts[a] + 1.0 / counts[b]) / 2.0)
    threshold = np.maximum(
        merging.min_threshold,
        merging.initial_threshold - mode.size_discount * (1.0 - spread),
    )
    margin = mean - threshold
    passing = found & (a != b) & (margin >= 0.0)
    pairs: dict[tuple[str, str], float] = {}
    for i, j in zip(*np.nonzero(passing), strict=True):
        key_a, key_b = keys[a[i, j]], keys[b[i, j]]
        pair = (key_a, key_b) if key_a < key_b else (key_b, key_a)
        pairs.setdefault(pair, float(margin[i, j]))
    return sorted(((m, x, y) for (x, y), m in pairs.items()), key=lambda p: (-p[0], p[1], p[2]))


__all__ = ["candidate_pairs", "joins", "mean_member_similarity", "merge_threshold"]
