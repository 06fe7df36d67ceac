"""Operator actions on the stored clusters, straight against the store.

Deleting here is safe while workers run: the deletion is a version-checked commit like any
other, its DELETE_EVENT goes through the outbox (the leader publishes it), and every worker's
change follower drops the cluster from its index.
"""

from __future__ import annotations

from app.engine import Cluster, DeleteReason
from app.engine.lifecycle import delete_event
from app.errors import UnknownCluster, VersionConflict
from app.outbox import OutboxWriter
from app.settings import Settings
from app.store.base import Commit, StateStore

DELETE_RETRIES = 5


async def all_clusters(store: StateStore) -> list[Cluster]:
    """Every stored cluster, largest first."""
    clusters: list[Cluster] = []
    async for chunk in store.load_all():
        clusters.extend(chunk)
    clusters.sort(key=lambda c: (-c.num_observations, c.key))
    return clusters


async def get_cluster(store: StateStore, key: str) -> Cluster:
    """One cluster; UnknownCluster names the id when there is none."""
    found = (await store.get([key])).get(key)
    if found is None:
        message = f"no cluster {key!r} (see `fvc clusters list` for the ids)"
        raise UnknownCluster(message)
    return found


async def delete_cluster(store: StateStore, settings: Settings, key: str, time_ms: int) -> Cluster:
    """Remove a cluster on request (e.g. a right to be forgotten) with DELETE_EVENT REMOVED."""
    writer = OutboxWriter(settings, save_internal_state=False)
    for _ in range(DELETE_RETRIES):
        cluster = await get_cluster(store, key)
        event = delete_event(cluster, time_ms, DeleteReason.REMOVED)
        outbox = writer.event_records([event])
        try:
            await store.commit(Commit(expected={key: cluster.version}, deletions=[key],
                                      outbox=outbox))
            return cluster
        except VersionConflict:
            continue
    message = f"cluster {key!r} kept changing; try again"
    raise VersionConflict([message])
