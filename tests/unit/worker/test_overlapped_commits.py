"""Overlapped commits: the next batch is decided while the last one's commit is in flight.

Whatever the store does to a commit in flight (refuses it, fails, loses its reply, sees
another worker first), the store ends as one commit at a time would leave it: every record
counted once, the same clusters, the same events. Drives the real ``Pipeline`` over
``FlakyStore``: no Kafka, no Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes import (
    TOPIC,
    FlakyStore,
    failing_rounds,
    identities,
    make_settings,
    observations_in,
    records,
    sightings,
    snapshot,
    write_config,
)

from app.config import ClusteringConfig
from app.engine import Engine, Observation
from app.errors import StoreUnavailable
from app.settings import Settings
from app.store import MemoryStore
from app.worker.pipeline import Pipeline, RawRecord
from app.worker.runtime import Runtime

CENTRES = identities(seed=11, count=4)


def pipeline(
    store: FlakyStore | MemoryStore, config: ClusteringConfig, settings: Settings, overlap: bool
) -> Pipeline:
    return Pipeline(Engine(config), store, config, settings, overlap=overlap)


def batches() -> list[list[RawRecord]]:
    """Four batches of one partition, every identity seen in several of them."""
    labels = [[0, 1, 0, 2], [1, 3, 0, 0, 2], [3, 3, 1], [2, 0, 1, 3, 1]]
    out, offset = [], 0
    for seed, batch in enumerate(labels):
        out.append(records(sightings(CENTRES, batch, seed=20 + seed), first=offset))
        offset += len(batch)
    return out


async def stored(store: MemoryStore) -> tuple[dict, list[str], dict[str, int]]:
    """Clusters, outbox event ids in order, and offsets: what consumers and the next run see."""
    outbox = [e.record.event_id for e in await store.outbox_pending()]
    return await snapshot(store), outbox, await store.offsets()


async def reference(config: ClusteringConfig, settings: Settings) -> tuple:
    """The batches one commit at a time over a store that never fails."""
    store = MemoryStore()
    worker = pipeline(store, config, settings, overlap=False)
    for batch in batches():
        await worker.handle(batch)
    return await stored(store)


async def test_a_batch_returns_before_its_commit_is_confirmed(
    store: FlakyStore, config: ClusteringConfig, settings: Settings
) -> None:
    """``handle`` leaves the commit in flight (here: Redis slow to answer); ``settle`` waits."""
    worker = pipeline(store, config, settings, overlap=True)
    first = batches()[0]
    answer = asyncio.Event()
    store.before_next_commit(answer.wait)

    await worker.handle(first)
    in_flight = len(store.applied)
    answer.set()
    await worker.settle()

    assert in_flight == 0
    assert len(store.applied) == 1
    assert await observations_in(store.inner) == len(first)


async def test_overlapped_batches_store_what_one_at_a_time_stores(
    store: FlakyStore, config: ClusteringConfig, settings: Settings
) -> None:
    worker = pipeline(store, config, settings, overlap=True)
    for batch in batches():
        await worker.handle(batch)
    await worker.settle()

    assert await stored(store.inner) == await reference(config, settings)
    assert len(store.applied) == len(batches())


@pytest.mark.parametrize(
    "fault",
    ["conflict", "unavailable", "lost_reply", "unavailable_twice"],
)
async def test_a_refused_commit_in_flight_is_handled_again_once(
    store: FlakyStore,
    config: ClusteringConfig,
    settings: Settings,
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The second batch's commit fails in flight; the third batch finds out and redoes it.

    ``unavailable_twice``: the store is still down when the third batch redoes the second,
    so the third fails as a whole; handed again (the worker retries a batch while the store
    is down), it redoes the second first, then decides itself.
    """
    worker = pipeline(store, config, settings, overlap=True)
    first, second, third, fourth = batches()
    await worker.handle(first)
    await worker.settle()
    if fault == "conflict":
        store.conflict()
    elif fault == "lost_reply":
        store.lose_reply()
    else:
        store.go_down("commit", times=2 if fault == "unavailable_twice" else 1)

    caplog.set_level(logging.INFO, logger="app.worker.pipeline")
    await worker.handle(second)
    if fault == "unavailable_twice":
        with pytest.raises(StoreUnavailable):
            await worker.handle(third)
    await worker.handle(third)
    await worker.handle(fourth)
    await worker.settle()

    assert "handling its 5 records again" in caplog.text
    assert await stored(store.inner) == await reference(config, settings)
    assert await observations_in(store.inner) == sum(len(b) for b in batches())


async def test_another_worker_first_in_flight_is_added_on_top_not_overwritten(
    store: FlakyStore, config: ClusteringConfig, settings: Settings
) -> None:
    """Another worker writes our cluster while our commit is in flight: ours is redone on top."""
    first = records(sightings(CENTRES, [0], seed=6))
    ours = records(sightings(CENTRES, [0, 0], seed=7), first=1)
    theirs = records(sightings(CENTRES, [0, 0, 0], seed=8), partition=1)
    after = records(sightings(CENTRES, [0, 1], seed=9), first=3)
    worker = pipeline(store, config, settings, overlap=True)
    await worker.handle(first)
    await worker.settle()
    other = pipeline(store.inner, config, settings, overlap=False)
    other.engine.load((await store.get(["cam:p0o0"])).values())
    store.before_next_commit(lambda: other.handle(theirs))

    await worker.handle(ours)
    await worker.handle(after)
    await worker.settle()

    assert store.calls["commit"] == 5  # first, ours refused, theirs, ours again, after

    serial = MemoryStore()
    one = pipeline(serial, config, settings, overlap=False)
    for batch in (first, theirs, ours, after):
        await one.handle(batch)
    assert await snapshot(store.inner) == await snapshot(serial)
    assert await observations_in(store.inner) == 8
    held = worker.engine.clusters["cam:p0o0"]
    assert held.version == (await store.inner.get(["cam:p0o0"]))["cam:p0o0"].version


def _engine_view(engine: Engine) -> tuple:
    """Everything ``apply`` may change, comparable."""
    clusters = {k: (c.version, c.num_observations, c.state.tobytes()) for k, c in
                engine.clusters.items()}
    index = sorted(engine.index.key_at(s) for s in range(len(engine.index)))
    dirty = None if engine.merge_dirty is None else sorted(engine.merge_dirty)
    return clusters, index, dirty, engine.watermark


def observations(labels: Sequence[int], seed: int, start: int) -> list[Observation]:
    """One observation per label, at event times ``start``, ``start + 1``, ..."""
    vectors = sightings(CENTRES, labels, seed=seed)
    return [Observation(v, "cam", f"k{start + i}", start + i) for i, v in enumerate(vectors)]


def test_restore_takes_an_applied_result_back(config: ClusteringConfig) -> None:
    """Checkpoint, apply, restore: the engine is as before, and decides the same after."""
    engine, twin = Engine(config), Engine(config)
    for start, labels in ((0, [0, 1]), (10, [2, 0, 0])):
        engine.step(observations(labels, seed=start, start=start))
        twin.step(observations(labels, seed=start, start=start))
    engine.merge_dirty, twin.merge_dirty = {}, {}
    before = _engine_view(engine)
    detour = observations([3, 1, 1, 0], seed=4, start=100)
    after = observations([0, 2, 3], seed=5, start=200)

    result = engine.process(detour)
    checkpoint = engine.checkpoint(result)
    engine.apply(result)
    moved = _engine_view(engine)
    engine.restore(checkpoint)

    assert moved != before
    assert _engine_view(engine) == before
    assert engine.step(after).decisions == twin.step(after).decisions
    assert _engine_view(engine) == _engine_view(twin)


async def test_a_worker_counts_every_observation_once_whatever_the_store_does(
    tmp_path: Path, config: ClusteringConfig, sleeps: list[float]
) -> None:
    """The runtime's seeded mix of conflicts, outages and lost replies, commits overlapped.

    Failures are found by the next batch, or by ``settle`` after every third one; either way
    the store ends with every observation once, the last offsets, and no event twice.
    """
    store = FlakyStore()
    settings = make_settings(FVC_OVERLAP_COMMITS="true")
    runtime = Runtime(settings, write_config(tmp_path, config), store=store)
    await runtime.start()
    last: tuple[int, dict[str, int]] = (0, {})
    for round_no, (batch, sent, offsets) in enumerate(failing_rounds(store, CENTRES)):
        await runtime.handle(batch)
        last = (sent, offsets)
        if round_no % 3 == 2:
            await runtime.settle()
            assert await observations_in(store.inner) == sent
    await runtime.settle()

    assert await observations_in(store.inner) == last[0]
    assert await store.inner.offsets() == last[1]
    ids = [e.record.event_id for e in await store.inner.outbox_pending(10_000)]
    assert len(ids) == len(set(ids))
    assert sleeps  # the outages were waited out, not raised
    await runtime.stop()


async def test_frontiers_are_published_only_over_stored_batches(
    store: FlakyStore, config: ClusteringConfig, settings: Settings
) -> None:
    """Another worker must find the clusters of every record before a published frontier."""
    worker = pipeline(store, config, settings, overlap=True)
    first, second = batches()[:2]
    await worker.handle(first)

    assert await worker.publish_frontiers({(TOPIC, 0): 1_004})
    assert len(store.applied) == 1, "the commit in flight was stored first"

    store.conflict()
    await worker.handle(second)
    assert not await worker.publish_frontiers({(TOPIC, 0): 1_009}), "refused: not yet"
    await worker.settle()
    assert await worker.publish_frontiers({(TOPIC, 0): 1_009})
    assert (await store.inner.clock()).frontiers[f"{TOPIC}:0"].event_time == 1_009
