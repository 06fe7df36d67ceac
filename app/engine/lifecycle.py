"""Realization, the realized-cluster actions and which changes become downstream events.

Kept apart from the search loop so the rules of DESIGN.md section 4 read in one place.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from app.engine.types import Cluster, ClusterId, DeleteReason, Event, EventType, Lifespan

if TYPE_CHECKING:
    from app.config import ClusteringConfig

KEEP_REALIZED = "KEEP_REALIZED"
UNREALIZE = "UNREALIZE"
REMOVE = "REMOVE"


def event_id(key: str, version: int) -> str:
    """Deterministic id of the event describing ``key`` at ``version``.

    >>> event_id("camera_1:1571138183912_0", 3)
    'camera_1:1571138183912_0@3'
    """
    return f"{key}@{version}"


def reg_event(cluster: Cluster, time: int, stream_id: str, input_key: str = "") -> Event:
    """REG_EVENT describing ``cluster`` as it is now (``input_key``: the observation's, if one).

    Made with positional arguments: one per observation on the engine's hot path.
    """
    key = f"{cluster.id.key}@{cluster.version}"  # event_id, inlined
    return Event(
        EventType.REG_EVENT, key, time, cluster.id, cluster, stream_id, (), None, input_key
    )


def merge_event(cluster: Cluster, time: int, merged: tuple[ClusterId, ...]) -> Event:
    """MERGE_EVENT: ``cluster`` absorbed the clusters ``merged``."""
    return Event(
        type=EventType.MERGE_EVENT,
        event_id=event_id(cluster.key, cluster.version),
        time=time,
        cluster_id=cluster.id,
        cluster=cluster,
        merged_clusters=merged,
    )


def delete_event(
    cluster: Cluster, time: int, reason: DeleteReason, input_key: str = ""
) -> Event:
    """DELETE_EVENT for ``cluster``; its id names the version after the last one."""
    return Event(
        type=EventType.DELETE_EVENT,
        event_id=event_id(cluster.key, cluster.version + 1),
        time=time,
        cluster_id=cluster.id,
        reason=reason,
        input_key=input_key,
    )


class Lifecycle:
    """Decides realization and emission for a changed cluster, following the config."""

    def __init__(self, config: ClusteringConfig) -> None:
        realization = config.realization
        self.num_samples = realization.num_samples if realization else 1
        self.time_limit_ms = realization.time_limit_ms if realization else 0
        self.action = str(getattr(realization.action, "value", realization.action)) if (
            realization
        ) else KEEP_REALIZED
        self.emit_unrealized = bool(config.emit_unrealized)
        self.min_update_interval_ms = int(config.min_update_interval_ms or 0)

    def deadline(self, cluster: Lifespan) -> int | None:
        """Event time at which an unrealized cluster realizes by time (None: it does not)."""
        if cluster.realized or cluster.pending <= 0 or self.time_limit_ms <= 0:
            return None
        return cluster.pending_since + self.time_limit_ms

    def removed_by(self, cluster: Lifespan, time: int) -> bool:
        """Whether the REMOVE action took ``cluster`` out of the DB at or before ``time``."""
        if self.action != REMOVE:
            return False
        deadline = self.deadline(cluster)
        return deadline is not None and deadline <= time

    def due(self, cluster: Cluster, watermark: int) -> bool:
        """Whether an unrealized cluster should realize now (by count, or by event time)."""
        return self.due_at(cluster.realized, cluster.pending, cluster.pending_since, watermark)

    def due_at(self, realized: bool, pending: int, pending_since: int, watermark: int) -> bool:
        """``due`` on the values a change is about to give a cluster."""
        if realized or pending <= 0:
            return False
        if 0 < self.num_samples <= pending:  # 0 (UVAP's unset): realization by time only
            return True
        return self.time_limit_ms > 0 and watermark - pending_since >= self.time_limit_ms

    def emits(self, realized: bool, last_emit_time: int, time: int) -> bool:
        """Whether a change at ``time`` that does not realize the cluster is an event."""
        return (realized or self.emit_unrealized) and self._not_throttled(last_emit_time, time)

    def settle(
        self,
        cluster: Cluster,
        time: int,
        watermark: int,
        stream_id: str,
        events: list[Event],
        input_key: str = "",
    ) -> Cluster | None:
        """After a change: realize if due, else emit an update if the rules say so.

        Returns the cluster to keep, or None when the REMOVE action took it out of the DB.
        ``input_key`` names the observation behind the change in its events.
        """
        if self.due(cluster, watermark):
            return self.realize(cluster, time, stream_id, events, input_key)
        if self.emits(cluster.realized, cluster.last_emit_time, time):
            cluster = replace(cluster, last_emit_time=time, emitted=True)
            events.append(reg_event(cluster, time, stream_id, input_key))
        return cluster

    def realize(
        self,
        cluster: Cluster,
        time: int,
        stream_id: str,
        events: list[Event],
        input_key: str = "",
    ) -> Cluster | None:
        """Realize ``cluster``: always one REG_EVENT, then the realized-cluster action."""
        cluster = replace(cluster, realized=True, last_emit_time=time, emitted=True)
        events.append(reg_event(cluster, time, stream_id, input_key))
        if self.action == UNREALIZE:
            return replace(cluster, realized=False, pending=0, pending_since=time)
        if self.action == REMOVE:
            events.append(delete_event(cluster, time, DeleteReason.REALIZED, input_key))
            return None
        return cluster

    def _not_throttled(self, last_emit_time: int, time: int) -> bool:
        if last_emit_time < 0 or self.min_update_interval_ms <= 0:
            return True
        return time - last_emit_time >= self.min_update_interval_ms
