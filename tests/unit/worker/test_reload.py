"""Reload everywhere: a config reloaded on one worker is stored, versioned, and followed.

Every worker follows the stored version; a worker started with an invalid config stays up,
idle, until a valid one comes.
"""

from __future__ import annotations

import json
from pathlib import Path

from fakes import identities, make_config, make_settings, records, sightings, write_config

from app.store import MemoryStore
from app.worker.runtime import Runtime

CENTRES = identities(seed=3, count=2)


async def started(path: str, store: MemoryStore) -> Runtime:
    runtime = Runtime(make_settings(), path, store=store)
    await runtime.start()
    return runtime


async def test_a_reload_on_one_worker_is_followed_by_every_worker(tmp_path: Path) -> None:
    store = MemoryStore()
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    first = await started(write_config(one, make_config(0.5)), store)
    second = await started(write_config(two, make_config(0.5)), store)
    assert first.pipeline.config_version == second.pipeline.config_version == 1
    topics: list[tuple[str, ...]] = []
    second.on_topics.append(topics.append)

    write_config(one, make_config(0.9))
    assert await first.reload() == []
    assert (await store.config()).version == 2

    # the second worker's next batch is refused under version 1, then redone under version 2
    await second.handle(records(sightings(CENTRES, [0, 1, 0], seed=1)))
    assert second.pipeline.config_version == 2
    assert second.config.streams[0].reg_threshold == 0.9
    assert topics == [second.config.topics]


async def test_a_worker_started_on_an_invalid_config_idles_until_a_valid_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"clustering_config": {"method": "NOT_A_METHOD"}}))
    store = MemoryStore()
    runtime = await started(str(path), store)
    assert runtime.config_errors, "the problems are shown in /stats and make /ready 503"
    assert runtime.config.topics == ()
    stats = await runtime.stats()
    assert stats["config_errors"] == runtime.config_errors

    write_config(tmp_path, make_config(0.5))
    assert await runtime.reload() == []
    assert runtime.config_errors == []
    outcome = await runtime.handle(records(sightings(CENTRES, [0, 1], seed=2)))
    assert outcome.observations == 2


async def test_an_invalid_file_follows_the_deployments_stored_config(tmp_path: Path) -> None:
    store = MemoryStore()
    good = tmp_path / "good"
    good.mkdir()
    await started(write_config(good, make_config(0.7)), store)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    runtime = await started(str(bad), store)
    assert runtime.config_errors == []
    assert runtime.config.streams[0].reg_threshold == 0.7
