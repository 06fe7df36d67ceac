"""Two worker processes racing read-modify-write increments through ``RedisStore.commit``.

Version-conditional commits with retry on ``VersionConflict`` must lose no increment and count
none twice: the counters add up to the number of increments, and each cluster's version to the
number of commits that touched it.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from store_race import race

from app.store.redis import RedisStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = 3
INCREMENTS = 2000

async def test_racing_workers_lose_no_increment(redis_url: str, unique: str) -> None:
    reports = await asyncio.to_thread(race, redis_url, unique, KEYS, INCREMENTS)
    store = RedisStore(redis_url, unique)
    await store.start()
    try:
        clusters = [c for chunk in [x async for x in store.load_all()] for c in chunk]
        by_key = {c.key: c for c in clusters}
        assert sum(c.num_observations for c in clusters) == 2 * INCREMENTS
        for key, cluster in by_key.items():
            commits = sum(int(r["commits"].get(key, 0)) for r in reports)  # type: ignore[union-attr]
            assert cluster.version == cluster.num_observations == commits
            np.testing.assert_array_equal(cluster.unit, np.full(4, commits, np.float32))
        assert sum(int(r["conflicts"]) for r in reports) > 0  # type: ignore[call-overload]
    finally:
        await store._redis.delete(f"{{{unique}}}:test-gate")
        await store.clear()
        await store.close()
