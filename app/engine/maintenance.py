"""Timer and operator steps: realization by time, retention, merging, removal on request.

Merging runs by timer or on request. Each builds a ``StepResult`` like a batch does, so the
worker stores and applies it the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from app.engine import repair, rules
from app.engine.lifecycle import Lifecycle, delete_event, merge_event
from app.engine.types import Cluster, DeleteReason, Event, StepResult
from app.errors import UnknownCluster

if TYPE_CHECKING:
    from app.config import ClusteringConfig, MergingConfig
    from app.engine.engine import Engine
    from app.index.base import VectorIndex


def advance(engine: Engine, watermark: int) -> StepResult:
    """Realize clusters whose time limit passed, then expire those past their retention.

    Every event is stamped with the event time it fell due at (the realization deadline, the
    end of the retention period), never with ``watermark``: the step emits the same whenever
    it runs after those times.
    """
    events: list[Event] = []
    changed: dict[str, Cluster | None] = {}
    expected: dict[str, int] = {}
    # Each key once, in the order of its due time as it is now: a cluster version taken back
    # (Engine.restore) or loaded again leaves its entries in the queues, and the same version
    # number made again may then meet an entry with another due time.
    realizing = []
    for key in dict.fromkeys(engine.realizations.pop_due(watermark, engine.version_of)):
        deadline = engine.lifecycle.deadline(engine.clusters[key])
        if deadline is not None and deadline <= watermark:
            realizing.append((deadline, key))
    for deadline, key in sorted(realizing):
        cluster = engine.clusters[key]
        expected[key] = cluster.version
        bumped = replace(cluster, version=cluster.version + 1)
        stream = cluster.id.first_detection_stream_id
        changed[key] = engine.lifecycle.realize(bumped, deadline, stream, events)
    expiring_keys = []
    for key in dict.fromkeys(engine.expiries.pop_due(watermark, engine.version_of)):
        held = None if key in changed else engine.clusters.get(key)
        if held is not None and engine.expired_by(held, watermark):
            expiring_keys.append((held.last_time + held.retention_ms, key))
    for _, key in sorted(expiring_keys):
        expiring = engine.clusters[key]
        expected[key] = expiring.version
        changed[key] = None
        if expiring.emitted:
            expired_at = expiring.last_time + expiring.retention_ms
            events.append(delete_event(expiring, expired_at, DeleteReason.EXPIRED))
    _compact(engine)
    return _result(changed, expected, events, watermark)


def merge_pass(engine: Engine, time: int) -> StepResult:
    """Merge pairs above their discounted threshold, best first, each cluster at most once.

    ``time`` is the watermark the pass runs at: merged clusters realize by it and its events
    carry it.
    """
    merging = engine.config.merging
    if merging is None or len(engine.index) < 2:
        return StepResult(watermark=time)
    queries = _merge_queries(engine)
    events: list[Event] = []
    changed: dict[str, Cluster | None] = {}
    expected: dict[str, int] = {}
    absorbed: list[tuple[str, str]] = []
    if engine.improved is None:
        pairs = _candidate_pairs(engine, queries, merging)
    else:  # improved mode: mean member similarity against a size-aware threshold (repair.py)
        pairs = repair.candidate_pairs(engine, queries, merging, engine.improved)
    for _, key_a, key_b in pairs:
        if key_a in changed or key_b in changed:
            continue
        a, b = engine.clusters[key_a], engine.clusters[key_b]
        expected[key_a], expected[key_b] = a.version, b.version
        older, younger, survivor = merge_pair(engine.method, engine.lifecycle, a, b, time, events)
        changed[younger.key] = None
        changed[older.key] = survivor
        absorbed.append((younger.key, older.key))
    result = _result(changed, expected, events, time)
    return replace(result, swept=tuple(queries), merged=tuple(absorbed))


def requested_merge(config: ClusteringConfig, a: Cluster, b: Cluster, time: int) -> StepResult:
    """Merge ``a`` and ``b`` on an operator's request, exactly as the merge pass would.

    Pure like the other steps: the caller stores the result with both versions checked.
    """
    events: list[Event] = []
    older, younger, survivor = merge_pair(config.method, Lifecycle(config), a, b, time, events)
    changed = {younger.key: None, older.key: survivor}
    result = _result(changed, {a.key: a.version, b.key: b.version}, events, time)
    return replace(result, merged=((younger.key, older.key),))


def merge_pair(
    method: str, life: Lifecycle, a: Cluster, b: Cluster, time: int, events: list[Event]
) -> tuple[Cluster, Cluster, Cluster | None]:
    """Merge two clusters by the rules of DESIGN.md section 4 (one place for both callers).

    Returns the older cluster (whose id survives), the younger (absorbed) one, and the merged
    cluster to keep, or None when realizing it now made the REMOVE action take it out.
    """
    older, younger = by_age(a, b)
    merged = _merged(method, older, younger)
    return older, younger, _settle_merge(life, merged, younger, time, events)


def remove(engine: Engine, key: str, time: int) -> StepResult:
    """Delete ``key`` on an operator's request."""
    cluster = engine.clusters.get(key)
    if cluster is None:
        message = f"no cluster {key!r}"
        raise UnknownCluster(message)
    event = delete_event(cluster, time, DeleteReason.REMOVED)
    return _result({key: None}, {key: cluster.version}, [event], engine.watermark)


def _merge_queries(engine: Engine) -> list[str]:
    """The pass's candidates: every cluster until a pass was applied, then the changed ones."""
    if engine.merge_dirty is None:
        return list(engine.clusters)
    return [k for k in engine.merge_dirty if k in engine.clusters]


def _candidate_pairs(
    engine: Engine, queries: list[str], merging: MergingConfig
) -> list[tuple[float, str, str]]:
    """Pairs over their discounted threshold among each query's nearest neighbours."""
    clusters = engine.clusters

    def over(key_a: str, key_b: str, sim: float) -> bool:
        n_a, n_b = clusters[key_a].num_observations, clusters[key_b].num_observations
        return sim >= merging.threshold(n_a, n_b)

    return knn_pairs(engine.index, queries, engine.merge_k, over)


def knn_pairs(
    index: VectorIndex, queries: Sequence[str], k: int, accept: Callable[[str, str, float], bool]
) -> list[tuple[float, str, str]]:
    """Pairs ``accept`` takes among each query's ``k`` nearest neighbours, best first.

    A kNN self-search of the index, never all pairs: ``(similarity, key, key)`` with the keys in
    order, each pair once.
    """
    if not queries:
        return []
    vectors = index.vectors[[index.slot_of(key) for key in queries]]
    sims, slots = index.search(vectors, min(k + 1, len(index)))
    found: dict[tuple[str, str], float] = {}
    for key_a, row_sims, row_slots in zip(queries, sims.tolist(), slots.tolist(), strict=True):
        for sim, slot in zip(row_sims, row_slots, strict=True):
            if slot < 0:
                break
            key_b = index.key_at(slot)
            if key_b != key_a and accept(key_a, key_b, sim):
                found[(min(key_a, key_b), max(key_a, key_b))] = sim
    return sorted(((s, a, b) for (a, b), s in found.items()), key=lambda p: (-p[0], p[1], p[2]))


def by_age(a: Cluster, b: Cluster) -> tuple[Cluster, Cluster]:
    """The older and the younger of two clusters; a merge keeps the older one's id."""
    older, younger = sorted((a, b), key=lambda c: (c.first_time, c.key))
    return older, younger


def _merged(method: str, older: Cluster, younger: Cluster) -> Cluster:
    # The survivor holds the track that fed either of the two last (app/engine/tracks.py).
    newer_track = (younger.track_time, younger.key) > (older.track_time, older.key)
    tracked = younger if newer_track else older
    unit, norm = rules.merged(
        method,
        (older.unit, older.norm, older.num_observations),
        (younger.unit, younger.norm, younger.num_observations),
    )
    return replace(
        older,
        unit=unit,
        norm=norm,
        num_observations=older.num_observations + younger.num_observations,
        realized=older.realized or younger.realized,
        last_time=max(older.last_time, younger.last_time),
        streams=tuple(sorted(set(older.streams) | set(younger.streams))),
        retention_ms=rules.combined_retention(older.retention_ms, younger.retention_ms),
        version=older.version + 1,
        pending=older.pending + younger.pending,
        pending_since=min(older.pending_since, younger.pending_since),
        last_emit_time=max(older.last_emit_time, younger.last_emit_time),
        emitted=older.emitted or younger.emitted,
        track=tracked.track,
        track_time=tracked.track_time,
    )


def _settle_merge(
    life: Lifecycle, merged: Cluster, younger: Cluster, time: int, events: list[Event]
) -> Cluster | None:
    """MERGE_EVENT when consumers see the result or saw a member; realize if now due."""
    newly_realized = not merged.realized and life.due(merged, time)
    if newly_realized:
        merged = replace(merged, realized=True)
    if merged.realized or life.emit_unrealized or merged.emitted:
        merged = replace(merged, emitted=True, last_emit_time=time)
        events.append(merge_event(merged, time, (younger.id,)))
    if newly_realized and life.action == "UNREALIZE":
        return replace(merged, realized=False, pending=0, pending_since=time)
    if newly_realized and life.action == "REMOVE":
        events.append(delete_event(merged, time, DeleteReason.REALIZED))
        return None
    return merged


def _result(
    changed: dict[str, Cluster | None], expected: dict[str, int], events: list[Event], wm: int
) -> StepResult:
    return StepResult(
        upserts=tuple(c for c in changed.values() if c is not None),
        deletions=tuple(k for k, c in changed.items() if c is None),
        events=tuple(events),
        expected=expected,
        watermark=wm,
    )


def _compact(engine: Engine) -> None:
    limit = 4 * len(engine.clusters) + 1024
    engine.expiries.compact(engine.version_of, limit)
    engine.realizations.compact(engine.version_of, limit)


__all__ = [
    "advance",
    "by_age",
    "knn_pairs",
    "merge_pair",
    "merge_pass",
    "remove",
    "requested_merge",
]
