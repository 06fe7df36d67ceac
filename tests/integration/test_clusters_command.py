"""``fvc clusters`` against the real Redis: list, show, delete with its event in the outbox."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.engine import Cluster, ClusterId
from app.records import decode_event
from app.store import create_store
from app.store.base import Commit

FVC = str(Path(sys.executable).with_name("fvc"))
pytestmark = pytest.mark.integration


def cluster(key: str, n: int) -> Cluster:
    return Cluster(
        id=ClusterId(1000, key, "cam"), state=np.array([n, 1.0, 0.0], dtype=np.float32),
        num_observations=n, realized=n > 1, first_time=1000, last_time=2000,
        streams=("cam",), retention_ms=0, version=1, pending=0, pending_since=1000,
        emitted=True,
    )


def fvc(redis_url: str, namespace: str, *args: str) -> subprocess.CompletedProcess:
    command = [FVC, "clusters", "--redis", redis_url, "--namespace", namespace, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


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
