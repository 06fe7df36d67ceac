"""``fvc evaluate --redis`` keeps state in the real Redis and gives the in-memory answer."""

from __future__ import annotations

import asyncio

from app.config import ClusteringConfig
from app.engine import Engine
from app.offline.evaluate import evaluate
from app.offline.synth import make_scene
from app.store import MemoryStore, create_store


def test_redis_backed_evaluation_equals_memory(redis_url: str, unique: str) -> None:
    scene = make_scene(3000, seed=21, dim=64)
    config = ClusteringConfig.for_threshold(0.5, sorted(set(scene.s.tolist())))
    memory = evaluate(scene, config, Engine(config), MemoryStore())
    store = create_store(redis_url, unique)
    redis = evaluate(scene, config, Engine(config), store)
    assert {k: redis[k] for k in ("clusters", "bcubed_f1", "nmi")} == {
        k: memory[k] for k in ("clusters", "bcubed_f1", "nmi")
    }

    async def stored() -> tuple[int, int]:
        check = create_store(redis_url, unique)
        await check.start()
        try:
            total = 0
            async for chunk in check.load_all():
                total += sum(c.num_observations for c in chunk)
            count = await check.count()
            await check.clear()
            return count, total
        finally:
            await check.close()

    count, total = asyncio.run(stored())
    assert count == redis["clusters"] and total == 3000
