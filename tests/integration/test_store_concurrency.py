"""Two worker processes racing read-modify-write increments through ``RedisStore.commit``.

Version-conditional commits with retry on ``VersionConflict`` must lose no increment and count
none twice: the counters add up to the number of increments, and each cluster's version to the
number of commits that touched it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.store.redis import RedisStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KEYS = 3
INCREMENTS = 2000

WORKER = r"""
import asyncio, dataclasses, json, random, sys
import numpy as np
import redis.asyncio as aioredis
from app.engine.types import Cluster, ClusterId
from app.errors import VersionConflict
from app.store import Commit
from app.store.redis import RedisStore

url, namespace, name, keys, increments = sys.argv[1:6]
keys, increments = int(keys), int(increments)

def first(key):
    return Cluster(id=ClusterId(0, key.split(":")[1], "race"), state=np.zeros(4, np.float32),
                   num_observations=0, realized=True, first_time=0, last_time=0,
                   streams=(), retention_ms=0, version=0, pending=0, pending_since=0)

async def barrier(url, namespace):
    # Both workers start racing together, however long each took to import.
    client = aioredis.from_url(url)
    gate = "{%s}:test-gate" % namespace
    await client.incr(gate)
    while int(await client.get(gate)) < 2:
        await asyncio.sleep(0.005)
    await client.aclose()

async def main():
    store = RedisStore(url, namespace)
    await store.start()
    await barrier(url, namespace)
    rng = random.Random(name)
    commits, conflicts = {}, 0
    for _ in range(increments):
        key = "race:k%d" % rng.randrange(keys)
        while True:
            old = (await store.get([key])).get(key) or first(key)
            new = dataclasses.replace(old, num_observations=old.num_observations + 1,
                                      version=old.version + 1, state=old.state + 1)
            try:
                await store.commit(Commit(expected={key: old.version}, upserts=[new]))
                break
            except VersionConflict:
                conflicts += 1
        commits[key] = commits.get(key, 0) + 1
    await store.close()
    print(json.dumps({"commits": commits, "conflicts": conflicts}))

asyncio.run(main())
"""


def _race(redis_url: str, namespace: str) -> list[dict[str, object]]:
    """Run two workers at once and return what each reports."""
    workers = [
        subprocess.Popen(  # noqa: S603 (this interpreter running the script above)
            [sys.executable, "-c", WORKER, redis_url, namespace, name, str(KEYS), str(INCREMENTS)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("left", "right")
    ]
    reports = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        reports.append(json.loads(out))
    return reports


async def test_racing_workers_lose_no_increment(redis_url: str, unique: str) -> None:
    reports = await asyncio.to_thread(_race, redis_url, unique)
    store = RedisStore(redis_url, unique)
    await store.start()
    try:
        clusters = [c for chunk in [x async for x in store.load_all()] for c in chunk]
        by_key = {c.key: c for c in clusters}
        assert sum(c.num_observations for c in clusters) == 2 * INCREMENTS
        for key, cluster in by_key.items():
            commits = sum(int(r["commits"].get(key, 0)) for r in reports)  # type: ignore[union-attr]
            assert cluster.version == cluster.num_observations == commits
            np.testing.assert_array_equal(cluster.state, np.full(4, commits, np.float32))
        assert sum(int(r["conflicts"]) for r in reports) > 0  # type: ignore[call-overload]
    finally:
        await store._redis.delete(f"{{{unique}}}:test-gate")
        await store.clear()
        await store.close()
