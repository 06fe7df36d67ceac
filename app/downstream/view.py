"""What a downstream consumer sees: realized clusters materialised from the event topic.

REG_EVENT adds or replaces a cluster, MERGE_EVENT replaces the merged ids by the survivor,
DELETE_EVENT removes. Events arrive at least once and, across partitions, not in the order they
were made (a cluster's events share its partition, but a merge is keyed by the survivor), so each
event is applied only when it is newer than what the view holds for that cluster: the version in
its ``event_id`` (``<cluster key>@<version>``) must exceed the last one applied, and an id that a
merge absorbed never comes back. A duplicate, a replay or a late older event changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.codec.decode import cluster_name


@dataclass
class ViewCluster:
    """A realized cluster as consumers know it."""

    key: str
    num_observations: int
    representative: np.ndarray


def event_version(event: dict[str, Any]) -> int | None:
    """The cluster version an event describes, from its ``event_id``; None when it has none.

    >>> event_version({"event_id": "camera_1:1571138183912_0@7"})
    7
    """
    _, at, version = str(event.get("event_id") or "").rpartition("@")
    return int(version) if at and version.isdigit() else None


@dataclass
class ClusterView:
    """Realized clusters by id, where merged ids went, and the last version applied per id."""

    clusters: dict[str, ViewCluster] = field(default_factory=dict)
    merged_into: dict[str, str] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> tuple[str, ...]:
        """Apply one decoded FVClusterUpdateRecord; returns the ids whose entry changed.

        An index kept beside the view upserts the returned ids still in ``clusters`` and
        removes the others.
        """
        kind = event.get("type")
        if kind in ("REG_EVENT", "MERGE_EVENT"):
            body = event["reg_event" if kind == "REG_EVENT" else "merge_event"]
            key = cluster_name(body["cluster_id"])
            # UVAP's profile lists the survivor among the merged ids, as UVAP's example does
            names = (cluster_name(m) for m in body.get("merged_clusters") or ())
            changed = [self._absorb(name, key) for name in names if name != key]
            if self._newer(key, event):
                changed.append(self._put(key, body["cluster"]))
            return tuple(changed)
        if kind == "DELETE_EVENT":
            key = cluster_name(event["delete_event"]["deleted_cluster"])
            if self._newer(key, event):
                self.clusters.pop(key, None)
                return (key,)
        return ()

    def apply_all(self, events: Iterable[dict[str, Any]]) -> ClusterView:
        """Apply events in order; returns self."""
        for event in events:
            self.apply(event)
        return self

    def resolve(self, key: str) -> str:
        """The cluster that holds ``key``'s members now (following merges)."""
        seen = set()
        while key in self.merged_into and key not in seen:
            seen.add(key)
            key = self.merged_into[key]
        return key

    def _newer(self, key: str, event: dict[str, Any]) -> bool:
        """Whether ``event`` is news about ``key``; records its version if so.

        Events without an ``event_id`` (other producers) are always applied, as before.
        """
        if key in self.merged_into:
            return False
        version = event_version(event)
        if version is None:
            return True
        if version <= self.versions.get(key, -1):
            return False
        self.versions[key] = version
        return True

    def _absorb(self, name: str, survivor: str) -> str:
        self.clusters.pop(name, None)
        self.merged_into[name] = survivor
        return name

    def _put(self, key: str, cluster: dict[str, Any]) -> str:
        if not cluster.get("is_realized"):
            self.clusters.pop(key, None)
            return key
        vector = np.asarray(cluster["representative_fv"]["feature"], dtype=np.float32)
        self.clusters[key] = ViewCluster(key, int(cluster["num_observations"]), vector)
        return key
