"""``fvc clusters`` against the real Redis and Kafka: list, show, delete, duplicates and merge.

Deletes and merges are checked in the outbox and the change stream, and, with a running worker,
on the downstream topic and in the worker's own index (its ``/stats``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from worker_support import Deployment, http, wait_for

from app.codec.decode import decode_event
from app.engine import Cluster, ClusterId
from app.store import create_store
from app.store.base import Commit
from app.worker.coherence import coherences, describe

FVC = str(Path(sys.executable).with_name("fvc"))
pytestmark = pytest.mark.integration


def cluster(key: str, n: int, state: list[float] | None = None, first: int = 1000) -> Cluster:
    return Cluster.from_state(
        id=ClusterId(first, key, "cam"),
        state=np.array(state or [n, 1.0, 0.0], dtype=np.float32),
        num_observations=n, realized=n > 1, first_time=first, last_time=first + 1000,
        streams=("cam",), retention_ms=0, version=1, pending=0, pending_since=first,
        emitted=True,
    )


def write_config(path: Path, **clustering: object) -> str:
    stream = {"stream_id": "cam", "fv_field_selector": {"feature_vector_path": "features"},
              "reg_stream_config": {"reg_threshold": 0.9}}
    body = {"clustering_config": {"method": "SIMPLE_AVERAGE", **clustering},
            "input_stream_configs": [stream]}
    path.write_text(json.dumps(body))
    return str(path)


def fvc(redis_url: str, namespace: str, *args: str, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    command = [FVC, "clusters", "--redis", redis_url, "--namespace", namespace, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def with_store(redis_url: str, namespace: str, action):  # noqa: ANN001, ANN201
    """Run ``action(store)`` on a fresh store connection in its own event loop."""

    async def go():  # noqa: ANN202
        store = create_store(redis_url, namespace)
        await store.start()
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(go())


async def seed(store) -> None:  # noqa: ANN001
    clusters = [cluster("a", 5), cluster("b", 1), cluster("c", 9)]
    await store.commit(Commit(expected={c.key: 0 for c in clusters}, upserts=clusters))


async def outbox(store) -> list[dict]:  # noqa: ANN001
    return [decode_event(e.record.value) for e in await store.outbox_pending()]


async def clear(store) -> None:  # noqa: ANN001
    await store.clear()


def test_list_show_and_delete(redis_url: str, unique: str) -> None:
    with_store(redis_url, unique, seed)
    try:
        listed = fvc(redis_url, unique, "list", "--realized", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [r["cluster_id"] for r in rows] == ["cam:c", "cam:a"]
        shown = fvc(redis_url, unique, "show", "cam:a", "--json")
        assert json.loads(shown.stdout)["num_observations"] == 5
        deleted = fvc(redis_url, unique, "delete", "cam:a")
        assert deleted.returncode == 0, deleted.stderr
        missing = fvc(redis_url, unique, "show", "cam:a")
        assert missing.returncode == 2 and "no cluster 'cam:a'" in missing.stderr
        (event,) = with_store(redis_url, unique, outbox)
        assert event["type"] == "DELETE_EVENT"
        assert event["delete_event"]["reason"] == "REMOVED"
    finally:
        with_store(redis_url, unique, clear)


def test_delete_leaves_a_tombstone_for_the_internal_state_topic(
    redis_url: str, unique: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.json", save_internal_state=True)
    with_store(redis_url, unique, seed)
    try:
        deleted = fvc(redis_url, unique, "--config", config, "delete", "cam:a")
        assert deleted.returncode == 0, deleted.stderr
        pending = with_store(redis_url, unique, lambda store: store.outbox_pending())
        by_topic = {e.record.topic: e.record for e in pending}
        tombstone = by_topic["fvc.internal-state"]
        assert (tombstone.key, tombstone.value) == (b"cam:a", b"")
        assert decode_event(by_topic["fvc.FVClusterUpdateRecord.json"].value)["type"] == (
            "DELETE_EVENT")
    finally:
        with_store(redis_url, unique, clear)


def test_delete_goes_ahead_when_the_config_is_unreadable(
    redis_url: str, unique: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with_store(redis_url, unique, seed)
    try:
        deleted = fvc(redis_url, unique, "--config", str(broken), "delete", "cam:a")
        assert deleted.returncode == 0 and "warning" in deleted.stderr
        assert fvc(redis_url, unique, "show", "cam:a").returncode == 2
    finally:
        with_store(redis_url, unique, clear)


# Two near-duplicate identities seen by consumers (cosine 0.99) and one other person; the
# older of the pair ("old", first seen at 1000) keeps its id when they merge.
TWINS = [
    cluster("old", 4, [3.9, 0.4, 0.0], first=1000),
    cluster("young", 2, [1.9, 0.4, 0.2], first=5000),
    cluster("other", 3, [0.0, 0.3, 2.9], first=2000),
]


def mean_cosine(c: Cluster) -> float:
    """Coherence of a SIMPLE_AVERAGE cluster: its members' mean cosine is |sum| / n."""
    return float(np.linalg.norm(c.state.astype(np.float64))) / c.num_observations


async def seed_twins(store) -> str:  # noqa: ANN001
    await store.commit(Commit(expected={c.key: 0 for c in TWINS}, upserts=TWINS))
    return await store.change_cursor()


def test_duplicates_then_merge_on_request(redis_url: str, unique: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.json")
    cursor = with_store(redis_url, unique, seed_twins)
    try:
        found = fvc(redis_url, unique, "--config", config, "duplicates", "--threshold", "0.95",
                    "--json")
        assert found.returncode == 0, found.stderr
        (pair,) = [json.loads(line) for line in found.stdout.splitlines()]
        assert [c["cluster_id"] for c in pair["clusters"]] == ["cam:old", "cam:young"]
        assert [c["num_observations"] for c in pair["clusters"]] == [4, 2]
        assert pair["similarity"] > 0.98
        assert [c["coherence"] for c in pair["clusters"]] == pytest.approx(
            [mean_cosine(TWINS[0]), mean_cosine(TWINS[1])], abs=1e-6)
        shown = fvc(redis_url, unique, "--config", config, "show", "cam:young", "--json")
        assert json.loads(shown.stdout)["coherence"] == pytest.approx(
            mean_cosine(TWINS[1]), abs=1e-6)

        merged = fvc(redis_url, unique, "--config", config, "merge", "cam:young", "cam:old")
        assert merged.returncode == 0, merged.stderr
        assert "merged cam:young into cam:old" in merged.stdout
        kept = with_store(redis_url, unique, lambda store: store.get(["cam:old", "cam:young"]))
        assert list(kept) == ["cam:old"] and kept["cam:old"].num_observations == 6
        np.testing.assert_allclose(kept["cam:old"].state, [5.8, 0.8, 0.2], rtol=1e-6)
        (event,) = with_store(redis_url, unique, outbox)
        assert event["type"] == "MERGE_EVENT" and event["event_id"] == "cam:old@2"
        body = event["merge_event"]
        assert [m["first_detection_key"] for m in body["merged_clusters"]] == ["young"]
        assert body["cluster"]["coherence"] == pytest.approx(mean_cosine(kept["cam:old"]))
        changes = with_store(redis_url, unique, lambda store: store.changes(cursor))
        assert [c.key for c in changes.upserts] == ["cam:old"]
        assert list(changes.deletions) == ["cam:young"]
        after = fvc(redis_url, unique, "--config", config, "duplicates", "--threshold", "0.95")
        assert after.returncode == 0 and after.stdout.startswith("0 pairs")
    finally:
        with_store(redis_url, unique, clear)


def test_merge_refusals_name_the_problem(redis_url: str, unique: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.json")
    with_store(redis_url, unique, seed_twins)
    try:
        itself = fvc(redis_url, unique, "--config", config, "merge", "cam:old", "cam:old")
        assert itself.returncode == 2 and "'cam:old' with itself" in itself.stderr
        unknown = fvc(redis_url, unique, "--config", config, "merge", "cam:old", "cam:nope")
        assert unknown.returncode == 2 and "no cluster 'cam:nope'" in unknown.stderr
        env = {k: v for k, v in os.environ.items() if k != "FVC_CONFIG"}
        no_config = fvc(redis_url, unique, "merge", "cam:old", "cam:young", env=env)
        assert no_config.returncode == 2 and "--config" in no_config.stderr
        assert with_store(redis_url, unique, outbox) == []
        assert with_store(redis_url, unique, lambda store: store.count()) == 3
    finally:
        with_store(redis_url, unique, clear)


@pytest.mark.slow
def test_a_running_worker_follows_a_merge_and_publishes_it(deployment: Deployment) -> None:
    d = deployment
    with_store(d.settings.redis_url, d.name, seed_twins)
    d.start_worker()

    def stats() -> dict:
        return json.loads(http("GET", d.url(0, "/stats"))[1])

    before = stats()
    assert before["clusters"] == 3
    assert before["coherence"] == describe(coherences("SIMPLE_AVERAGE", TWINS))
    env = {**d.env, "FVC_CONFIG": str(d.config_path)}
    merged = subprocess.run([FVC, "clusters", "merge", "cam:old", "cam:young"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert merged.returncode == 0, merged.stderr
    wait_for(lambda: stats()["clusters"] == 2, 30, "the worker to drop the absorbed cluster")
    wait_for(lambda: stats()["coherence"]["clusters"] == 2, 30, "the coherence summary "
             "to follow (it is cached for 10 s)")
    survivors = list(d.clusters().values())
    assert stats()["coherence"] == describe(coherences("SIMPLE_AVERAGE", survivors))
    events = []

    def published() -> bool:
        events[:] = [e for e in d.events(timeout=2) if e["type"] == "MERGE_EVENT"]
        return bool(events)

    wait_for(published, 30, "the MERGE_EVENT on the downstream topic")
    (event,) = events
    assert event["merge_event"]["cluster"]["num_observations"] == 6
    assert "coherence" in event["merge_event"]["cluster"]


def test_an_unreachable_store_is_waited_for_then_named(unique: str) -> None:
    """Retries with back-off for FVC_STORE_OUTAGE_S, saying so, then one clear error."""
    closed = "redis://127.0.0.1:1/0"
    done = fvc(closed, unique, "list", env={**os.environ, "FVC_STORE_OUTAGE_S": "1.5"})
    assert done.returncode != 0
    assert "store unavailable, retrying in" in done.stderr
    assert "127.0.0.1:1" in done.stderr.splitlines()[-1]
