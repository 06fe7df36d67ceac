"""What a downstream consumer sees: realized clusters materialised from the event topic.

REG_EVENT adds or replaces a cluster, MERGE_EVENT replaces the merged ids by the survivor,
DELETE_EVENT removes; applying an event twice (a replay, an at-least-once duplicate) is harmless
because each event carries the whole cluster state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.tail import cluster_name


@dataclass
class ViewCluster:
    """A realized cluster as consumers know it."""

    key: str
    num_observations: int
    representative: np.ndarray


@dataclass
class ClusterView:
    """Realized clusters by id, and where merged ids went."""

    clusters: dict[str, ViewCluster] = field(default_factory=dict)
    merged_into: dict[str, str] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one decoded FVClusterUpdateRecord."""
        kind = event.get("type")
        if kind in ("REG_EVENT", "MERGE_EVENT"):
            body = event["reg_event" if kind == "REG_EVENT" else "merge_event"]
            key = cluster_name(body["cluster_id"])
            for merged in body.get("merged_clusters") or ():
                name = cluster_name(merged)
                self.clusters.pop(name, None)
                self.merged_into[name] = key
            self._put(key, body["cluster"])
        elif kind == "DELETE_EVENT":
            self.clusters.pop(cluster_name(event["delete_event"]["deleted_cluster"]), None)

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

    def _put(self, key: str, cluster: dict[str, Any]) -> None:
        if not cluster.get("is_realized"):
            self.clusters.pop(key, None)
            return
        vector = np.asarray(cluster["representative_fv"]["feature"], dtype=np.float32)
        self.clusters[key] = ViewCluster(key, int(cluster["num_observations"]), vector)
