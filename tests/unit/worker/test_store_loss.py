"""A store that lost its data is noticed, never written over, and rebuilt by one worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakes import identities, records, sightings, write_config

from app.config import ClusteringConfig
from app.errors import StoreLost
from app.settings import Settings
from app.store import MemoryStore
from app.worker.outage import EXIT_STORE_LOST
from app.worker.pipeline import REPLAYED
from app.worker.runtime import REBUILDING, Runtime


def runtime_over(store: MemoryStore, tmp_path: Path, settings: Settings,
                 config: ClusteringConfig) -> tuple[Runtime, list[int]]:
    """A runtime whose process exits are recorded instead of taken."""
    runtime = Runtime(settings, write_config(tmp_path, config), store=store)
    exits: list[int] = []
    runtime.exit_process = exits.append
    return runtime, exits


def batch(count: int, first_offset: int = 0) -> list:
    """``count`` sightings of three people from offset ``first_offset`` of partition 0."""
    centres = identities(seed=4, count=3)
    vectors = sightings(centres, [i % 3 for i in range(count)], seed=first_offset)
    return records(vectors, first=first_offset)


async def test_two_workers_on_an_empty_store_rebuild_it_once(
    tmp_path: Path, settings: Settings, config: ClusteringConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, rebuilds = MemoryStore(), []

    async def recover(self: Runtime) -> None:
        rebuilds.append(await self.store.generation())
        await asyncio.sleep(0.05)  # the other worker asks meanwhile, and must wait

    monkeypatch.setattr(Runtime, "_recover", recover)
    one, _ = runtime_over(store, tmp_path, settings, config)
    two, _ = runtime_over(store, tmp_path, settings, config)
    await asyncio.gather(one.start(recover=True), two.start(recover=True))
    assert len(rebuilds) == 1 and rebuilds[0].startswith(REBUILDING)
    generation = await store.generation()
    assert generation and not generation.startswith(REBUILDING)
    assert one.pipeline.generation == two.pipeline.generation == generation


@pytest.mark.parametrize("replayed", [True, False])
async def test_a_store_rebuilt_by_replay_never_reuses_an_event_id(
    tmp_path: Path, settings: Settings, config: ClusteringConfig,
    monkeypatch: pytest.MonkeyPatch, replayed: bool,
) -> None:
    """A store rebuilt by replay tags its event ids, so no id published before comes back changed.

    A replay over several partitions may give a cluster's version n other content than the
    first time did. A restore from the internal-state topic gives back the same state, and the
    plain ids.
    """

    async def recover(self: Runtime) -> bool:
        return replayed

    monkeypatch.setattr(Runtime, "_recover", recover)
    store = MemoryStore()
    runtime, _ = runtime_over(store, tmp_path, settings, config)
    await runtime.start(recover=True)
    await runtime.handle(batch(6))
    generation = await store.generation() or ""
    ids = [e.record.event_id for e in await store.outbox_pending()
           if e.record.topic == settings.output_topic]
    assert ids
    tag = f"~{generation.removeprefix(REPLAYED)[:8]}"
    assert generation.startswith(REPLAYED) is replayed
    assert all(i.endswith(tag) for i in ids) is replayed
    assert all("~" not in i for i in ids) is not replayed


async def emptied_under_a_worker(
    tmp_path: Path, settings: Settings, config: ClusteringConfig
) -> tuple[MemoryStore, Runtime, list[int]]:
    """A worker that applied a batch, and then its store lost everything (Redis restarted empty)."""
    store = MemoryStore()
    runtime, exits = runtime_over(store, tmp_path, settings, config)
    await runtime.start()
    await runtime.handle(batch(6))
    assert await runtime.follow_changes() == 0 and exits == []
    await store.clear()
    return store, runtime, exits


async def test_a_commit_over_a_lost_store_exits_and_writes_nothing(
    tmp_path: Path, settings: Settings, config: ClusteringConfig
) -> None:
    store, runtime, exits = await emptied_under_a_worker(tmp_path, settings, config)
    with pytest.raises(StoreLost):
        await runtime.handle(batch(6, first_offset=6))
    assert exits == [EXIT_STORE_LOST]
    assert await store.count() == 0 and await store.offsets() == {}


async def test_the_change_follower_notices_a_lost_store(
    tmp_path: Path, settings: Settings, config: ClusteringConfig
) -> None:
    _, runtime, exits = await emptied_under_a_worker(tmp_path, settings, config)
    await runtime.follow_changes()
    assert exits == [EXIT_STORE_LOST]
    assert len(runtime.engine.clusters) == 3  # nothing reloaded from the empty store
