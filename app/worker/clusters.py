"""Operator actions on the stored clusters, straight against the store.

Deleting and merging here are safe while workers run: each is a version-checked commit like any
other (rebuilt from the current state when another writer got there first), its event goes
through the outbox (the leader publishes it), and every worker's change follower applies the
change to its index.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np

from app.config import ClusteringConfig
from app.engine import Cluster, DeleteReason, StepResult, maintenance, rules
from app.engine.lifecycle import delete_event
from app.errors import MergeRefused, UnknownCluster, VersionConflict
from app.index import make_index
from app.settings import Settings
from app.store.base import Commit, StateStore
from app.worker.outbox import OutboxWriter

COMMIT_RETRIES = 5
_T = TypeVar("_T")


async def all_clusters(store: StateStore) -> list[Cluster]:
    """Every stored cluster, largest first."""
    clusters: list[Cluster] = []
    async for chunk in store.load_all():
        clusters.extend(chunk)
    clusters.sort(key=lambda c: (-c.num_observations, c.key))
    return clusters


async def get_clusters(store: StateStore, keys: Sequence[str]) -> list[Cluster]:
    """Clusters in the order asked, in one round trip; UnknownCluster names a missing id."""
    found = await store.get(list(keys))
    for key in keys:
        if key not in found:
            message = f"no cluster {key!r} (see `fvc clusters list` for the ids)"
            raise UnknownCluster(message)
    return [found[key] for key in keys]


async def get_cluster(store: StateStore, key: str) -> Cluster:
    """One cluster; UnknownCluster names the id when there is none."""
    (cluster,) = await get_clusters(store, [key])
    return cluster


async def delete_cluster(
    store: StateStore,
    settings: Settings,
    key: str,
    time_ms: int,
    config: ClusteringConfig | None = None,
) -> Cluster:
    """Remove a cluster on request (e.g. a right to be forgotten) with DELETE_EVENT REMOVED.

    With the deployment's ``config`` and ``save_internal_state``, the internal-state topic gets
    the cluster's tombstone too, so a restore from that topic does not bring it back.
    """
    writer = OutboxWriter(settings, config)

    async def attempt() -> tuple[Commit, Cluster]:
        cluster = await get_cluster(store, key)
        event = delete_event(cluster, time_ms, DeleteReason.REMOVED)
        result = StepResult(deletions=(key,), events=(event,), watermark=time_ms)
        outbox = writer.records(result)
        return Commit(expected={key: cluster.version}, deletions=[key], outbox=outbox), cluster

    return await _commit_retrying(store, f"cluster {key!r}", attempt)


async def merge_clusters(
    store: StateStore, settings: Settings, config: ClusteringConfig, key_a: str, key_b: str
) -> StepResult:
    """Merge two clusters on request exactly as the merge pass would (the older id survives).

    The merge happens at the later of the two clusters' last observations, so event time stays
    the clock. The result names the absorbed and surviving ids in ``merged``; its events hold
    the MERGE_EVENT when consumers see the merged cluster or saw either of the two.
    """
    if key_a == key_b:
        message = f"cannot merge cluster {key_a!r} with itself"
        raise MergeRefused(message)
    if config.method == rules.USE_LAST:
        message = "the deployment's method USE_LAST keeps only the last vector: it never merges"
        raise MergeRefused(message)
    writer = OutboxWriter(settings, config)

    async def attempt() -> tuple[Commit, StepResult]:
        a, b = await get_clusters(store, [key_a, key_b])
        result = maintenance.requested_merge(config, a, b, max(a.last_time, b.last_time))
        commit = Commit(
            expected=result.expected,
            upserts=result.upserts,
            deletions=result.deletions,
            outbox=writer.records(result),
        )
        return commit, result

    return await _commit_retrying(store, f"clusters {key_a!r} and {key_b!r}", attempt)


async def near_duplicates(
    store: StateStore, settings: Settings, threshold: float, k: int
) -> list[tuple[float, Cluster, Cluster]]:
    """Pairs of realized clusters more similar than ``threshold``, most similar first.

    Each pair is ``(similarity, older, younger)``: merging it keeps the older id. The pairs
    come from a kNN self-search of an index of the representatives (``k`` neighbours each,
    the deployment's index type), never from all pairs.
    """
    clusters = {c.key: c for c in await all_clusters(store) if c.realized}
    if len(clusters) < 2:
        return []
    index = make_index(settings.index_type, settings.device)
    index.upsert(list(clusters), np.stack([c.unit for c in clusters.values()]))
    found = maintenance.knn_pairs(index, list(clusters), k, lambda _a, _b, sim: sim > threshold)
    return [(sim, *maintenance.by_age(clusters[a], clusters[b])) for sim, a, b in found]


async def _commit_retrying(
    store: StateStore, what: str, attempt: Callable[[], Awaitable[tuple[Commit, _T]]]
) -> _T:
    """Commit what ``attempt`` builds from the current state; rebuild it after a conflict."""
    for _ in range(COMMIT_RETRIES):
        commit, value = await attempt()
        try:
            await store.commit(commit)
        except VersionConflict:
            continue
        return value
    message = f"{what} kept changing; try again"
    raise VersionConflict([message])
