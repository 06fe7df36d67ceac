"""Track linking: one walk past a camera stays in one cluster.

A tracker follows a person across frames and gives each detection the same track id. Frames of
one walk differ in pose and blur, so some fall below ``reg_threshold`` and would each start a
new identity. With track linking, an observation of track ``stream/track`` joins the cluster
that track last fed (within the time window) at the lower ``track_threshold``, unless another
cluster passes ``reg_threshold`` and is more similar still: a better match always wins, and the
track follows it.

The link lives in the cluster (``Cluster.track``, ``track_time``), so a worker's replica, or a
restarted worker, rebuilds it from the store. When several clusters name the same track (it
moved to a better match), the one that took it last (greatest ``track_time``, then key) holds
it: a rule on the clusters alone, so every replica and every batch size picks the same one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from app.engine.types import Cluster

if TYPE_CHECKING:
    from app.config import StreamConfig
    from app.engine.engine import Engine
    from app.engine.scratch import BatchScratch


def linked(
    engine: Engine,
    stream: StreamConfig,
    track: str,
    time: int,
    unit: np.ndarray,
    best_key: str | None,
    best_sim: float,
    scratch: BatchScratch,
) -> tuple[str, float] | None:
    """The track's cluster and the similarity to it, when the observation should join it."""
    config = stream.track_linking
    if config is None:  # the caller checked; no track linking, no track to follow
        return None
    cluster = holder(engine, track, scratch)
    if cluster is None or abs(time - cluster.track_time) > config.window_ms:
        return None
    if not engine.alive_at(cluster, time):  # expired, or removed at its realization
        return None
    key = cluster.key
    sim = best_sim if key == best_key else float(cluster.unit @ unit)
    if sim < config.threshold:
        return None
    better = best_key is not None and best_key != key and best_sim > sim
    if better and best_sim >= stream.reg_threshold:
        return None
    return key, sim


def holder(engine: Engine, track: str, scratch: BatchScratch) -> Cluster | None:
    """The cluster that holds ``track`` now, as this batch has left the clusters."""
    best: Cluster | None = None
    for key in engine.track_members.get(track, set()) | scratch.tracks.get(track, set()):
        cluster = scratch.touched[key] if key in scratch.touched else engine.clusters.get(key)
        if cluster is None or cluster.track != track:
            continue
        if best is None or (cluster.track_time, key) > (best.track_time, best.key):
            best = cluster
    return best


def claim(scratch: BatchScratch, track: str, key: str) -> None:
    """Note that cluster ``key`` took ``track`` in this batch."""
    scratch.tracks.setdefault(track, set()).add(key)


def remember(members: dict[str, set[str]], key: str, old: str, new: str) -> None:
    """Keep ``members`` (track -> keys of the clusters naming it) current for one change.

    ``old`` and ``new`` are the tracks cluster ``key`` named before and after ("": none).
    """
    if old and new != old:
        keys = members.get(old)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del members[old]
    if new:
        members.setdefault(new, set()).add(key)
