"""Cluster quality signals offline: the coherence summary, near duplicates and operator merges.

The operator actions run against the in-memory store, which keeps the Redis store's contract
(the contract suite checks both); tests/integration/test_clusters_command.py runs them against
the real Redis and Kafka.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.codec.decode import decode_event
from app.config import parse_config
from app.engine import Cluster, ClusterId
from app.engine.rules import coherence
from app.errors import MergeRefused, UnknownCluster
from app.settings import Settings
from app.store.base import Commit
from app.store.memory import MemoryStore
from app.worker import clusters as operations
from app.worker.coherence import CoherenceSummary, coherences, describe

SETTINGS = Settings.from_env({})


def config(method: str = "SIMPLE_AVERAGE", **clustering: object):  # noqa: ANN201
    return parse_config({
        "clustering_config": {"method": method, **clustering},
        "input_stream_configs": [{"stream_id": "cam", "fv_field_selector": {
            "feature_vector_path": "features"}, "reg_stream_config": {"reg_threshold": 0.8}}],
    })


def cluster(key: str, vector: list[float], n: int, first: int, realized: bool = True) -> Cluster:
    unit = np.asarray(vector, dtype=np.float32) / np.linalg.norm(vector)
    return Cluster.from_state(
        id=ClusterId(first, key, "cam"), state=(unit * n).astype(np.float32),
        num_observations=n, realized=realized, first_time=first, last_time=first + 10,
        streams=("cam",), retention_ms=0, version=3, pending=0, pending_since=first,
        emitted=realized,
    )


def stored(*clusters: Cluster) -> MemoryStore:
    store = MemoryStore()
    asyncio.run(store.commit(Commit(expected={c.key: 0 for c in clusters}, upserts=clusters)))
    return store


def test_coherences_are_rules_coherence_of_each_cluster():
    rng = np.random.default_rng(1)
    clusters = [
        Cluster.from_state(
            rng.normal(size=4).astype(np.float32), id=ClusterId(i, f"k{i}", "cam"),
            num_observations=n, realized=True, first_time=0, last_time=0, streams=("cam",),
            retention_ms=0, version=1, pending=0, pending_since=0,
        )
        for i, n in enumerate(rng.integers(1, 9, 50).tolist())
    ]
    for method in ("SIMPLE_AVERAGE", "EXP_AVERAGE"):
        expected = [coherence(method, c.norm, c.num_observations) for c in clusters]
        np.testing.assert_array_equal(coherences(method, clusters), expected)


def test_the_summary_leaves_out_single_observations_and_is_cached():
    clusters = {c.key: c for c in [cluster("a", [1, 0], 1, 0), cluster("b", [1, 0], 4, 1)]}
    b = clusters["cam:b"]
    clusters["cam:b"] = Cluster.from_state(
        np.array([1.0, 1.0], np.float32), id=b.id, num_observations=4, realized=True,
        first_time=0, last_time=0, streams=("cam",), retention_ms=0, version=1, pending=0,
        pending_since=0,
    )
    now = [0.0]
    summary = CoherenceSummary(ttl_s=10, clock=lambda: now[0])
    first = asyncio.run(summary.get("SIMPLE_AVERAGE", clusters))
    assert first == describe(np.array([np.sqrt(2) / 4])) and first["below_0_5"] == 1
    clusters.pop("cam:b")
    assert asyncio.run(summary.get("SIMPLE_AVERAGE", clusters)) == first  # cached
    now[0] = 11.0
    assert asyncio.run(summary.get("SIMPLE_AVERAGE", clusters)) == {"clusters": 0}
    assert asyncio.run(summary.get("USE_LAST", clusters)) is None


def test_near_duplicates_are_listed_once_best_first_older_first():
    store = stored(
        cluster("a", [1, 0, 0], 5, first=300),
        cluster("b", [0.99, 0.14, 0], 2, first=100),  # cosine 0.99 to a
        cluster("c", [0.95, 0.31, 0], 3, first=200),  # 0.95 to a, 0.99 to b
        cluster("d", [0, 1, 0], 4, first=400),
        cluster("e", [1, 0, 0], 9, first=500, realized=False),  # not an identity yet
    )
    pairs = asyncio.run(operations.near_duplicates(store, SETTINGS, 0.94, k=5))
    assert [(o.key, y.key) for _, o, y in pairs] == [
        ("cam:b", "cam:a"), ("cam:b", "cam:c"), ("cam:c", "cam:a")]
    sims = [s for s, _, _ in pairs]
    assert sims == sorted(sims, reverse=True) and min(sims) > 0.94
    assert asyncio.run(operations.near_duplicates(store, SETTINGS, 0.999, k=5)) == []


def test_near_duplicates_search_k_neighbours_not_all_pairs():
    """Five clusters a few degrees apart: all 10 pairs are similar.

    But with k=1 each finds only its nearest neighbour.
    """
    degrees = [0, 1, 3, 6, 10]
    store = stored(*[cluster(f"x{d}", [np.cos(np.radians(d)), np.sin(np.radians(d))], 2, d)
                     for d in degrees])
    nearest = asyncio.run(operations.near_duplicates(store, SETTINGS, 0.9, k=1))
    assert sorted((o.key, y.key) for _, o, y in nearest) == [
        ("cam:x0", "cam:x1"), ("cam:x1", "cam:x3"), ("cam:x3", "cam:x6"), ("cam:x6", "cam:x10")]
    assert len(asyncio.run(operations.near_duplicates(store, SETTINGS, 0.9, k=4))) == 10


def test_a_requested_merge_keeps_the_older_id_and_queues_a_merge_event():
    store = stored(cluster("young", [0, 1], 3, first=200), cluster("old", [1, 0], 1, first=100))
    cursor = asyncio.run(store.change_cursor())
    result = asyncio.run(operations.merge_clusters(
        store, SETTINGS, config(), "cam:young", "cam:old"))
    assert result.merged == (("cam:young", "cam:old"),)
    kept = asyncio.run(operations.get_cluster(store, "cam:old"))
    assert (kept.num_observations, kept.version, kept.realized) == (4, 4, True)
    np.testing.assert_allclose(kept.state, [1, 3], rtol=1e-6)
    with pytest.raises(UnknownCluster, match="cam:young"):
        asyncio.run(operations.get_cluster(store, "cam:young"))
    (entry,) = asyncio.run(store.outbox_pending())
    event = decode_event(entry.record.value)
    assert event["type"] == "MERGE_EVENT" and event["event_id"] == "cam:old@4"
    merge = event["merge_event"]
    assert [m["first_detection_key"] for m in merge["merged_clusters"]] == ["young"]
    assert merge["cluster"]["coherence"] == pytest.approx(np.sqrt(10) / 4)
    changes = asyncio.run(store.changes(cursor))
    assert [c.key for c in changes.upserts] == ["cam:old"]
    assert list(changes.deletions) == ["cam:young"]


def test_a_merge_is_refused_for_one_id_twice_unknown_ids_and_use_last():
    store = stored(cluster("a", [1, 0], 2, first=1))
    with pytest.raises(MergeRefused, match="'cam:a' with itself"):
        asyncio.run(operations.merge_clusters(store, SETTINGS, config(), "cam:a", "cam:a"))
    with pytest.raises(UnknownCluster, match="'cam:nope'"):
        asyncio.run(operations.merge_clusters(store, SETTINGS, config(), "cam:a", "cam:nope"))
    with pytest.raises(MergeRefused, match="USE_LAST"):
        asyncio.run(operations.merge_clusters(
            store, SETTINGS, config("USE_LAST"), "cam:a", "cam:b"))
    assert asyncio.run(store.outbox_pending()) == []
