"""Runtime: the store going away, a reply lost, a restart; no observation lost or counted twice.

Drives the real ``Runtime`` (its FAISS index, pipeline and metrics) over ``FlakyStore``; the
``sleeps`` fixture records the back-off instead of sleeping it.
"""

from __future__ import annotations

from collections.abc import Sequence

from fakes import (
    TOPIC,
    FlakyStore,
    MakeRuntime,
    failing_rounds,
    identities,
    observations_in,
    records,
    sightings,
    snapshot,
)

from app.store import MemoryStore
from app.worker.pipeline import RawRecord

CENTRES = identities(seed=11, count=4)


def backoff(sleeps: list[float]) -> list[float]:
    """The exponential part of each wait: the jitter added on top is under 0.1 s."""
    return [int(delay * 10) / 10 for delay in sleeps]


async def clean_run(make_runtime: MakeRuntime, batches: Sequence[Sequence[RawRecord]]) -> dict:
    """What the batches leave in a store that never fails: the reference to compare with."""
    runtime = await make_runtime(MemoryStore())
    for batch in batches:
        await runtime.handle(batch)
    return await snapshot(runtime.store)


async def outbox_ids(store: MemoryStore) -> list[str]:
    return [entry.record.event_id for entry in await store.outbox_pending(10_000)]


async def test_an_unavailable_store_is_retried_with_growing_back_off(
    store: FlakyStore, make_runtime: MakeRuntime, sleeps: list[float]
) -> None:
    """The batch waits 0.1 s, 0.2 s, 0.4 s and then commits once, as if nothing had failed."""
    batch = records(sightings(CENTRES, [0, 1, 0, 2, 3], seed=1))
    runtime = await make_runtime(store)
    store.go_down("commit", times=3)

    outcome = await runtime.handle(batch)

    assert backoff(sleeps) == [0.1, 0.2, 0.4]
    assert outcome.observations == 5
    assert store.calls["commit"] == 4
    assert len(store.applied) == 1
    assert await snapshot(store.inner) == await clean_run(make_runtime, [batch])


async def test_an_outage_while_reloading_after_a_conflict_redoes_the_batch(
    store: FlakyStore, make_runtime: MakeRuntime, sleeps: list[float]
) -> None:
    """A conflict whose reload fails starts the batch over: still one commit, the same result."""
    first = records(sightings(CENTRES, [0, 1], seed=2))
    second = records(sightings(CENTRES, [0, 1, 1], seed=3), first=2)
    runtime = await make_runtime(store)
    await runtime.handle(first)
    store.conflict(times=1)
    store.go_down("get", times=1)

    await runtime.handle(second)

    assert backoff(sleeps) == [0.1]
    assert [c.offsets for c in store.applied] == [{f"{TOPIC}:0": 1}, {f"{TOPIC}:0": 4}]
    assert await snapshot(store.inner) == await clean_run(make_runtime, [first, second])
    assert await observations_in(store.inner) == 5


async def test_a_commit_whose_reply_was_lost_is_not_applied_twice(
    store: FlakyStore, make_runtime: MakeRuntime, sleeps: list[float]
) -> None:
    """The retry is refused as already applied and re-reads offsets: one commit, each event once."""
    batch = records(sightings(CENTRES, [0, 0, 1, 1, 2], seed=4))
    runtime = await make_runtime(store)
    store.lose_reply()

    outcome = await runtime.handle(batch)

    assert backoff(sleeps) == [0.1]
    assert outcome.skipped == len(batch)
    assert len(store.applied) == 1
    assert runtime.pipeline.applied == {f"{TOPIC}:0": 4}
    assert await observations_in(store.inner) == 5
    reference = await make_runtime(MemoryStore())
    await reference.handle(batch)
    assert await outbox_ids(store.inner) == await outbox_ids(reference.store)


async def test_after_a_lost_reply_the_engine_holds_what_it_committed(
    store: FlakyStore, make_runtime: MakeRuntime, sleeps: list[float]
) -> None:
    """A later sighting must join the cluster the lost-reply commit created, as in a clean run."""
    first = records(sightings(CENTRES, [0], seed=5))
    second = records(sightings(CENTRES, [0], seed=6), first=1)
    runtime = await make_runtime(store)
    store.lose_reply()
    await runtime.handle(first)
    await runtime.follow_changes()

    await runtime.handle(second)

    assert backoff(sleeps) == [0.1]
    assert await observations_in(store.inner) == 2
    assert await snapshot(store.inner) == await clean_run(make_runtime, [first, second])


async def test_a_restarted_worker_skips_what_was_applied_and_carries_on(
    store: FlakyStore, make_runtime: MakeRuntime
) -> None:
    """A new worker loads clusters and offsets, so a redelivered batch counts only its new tail."""
    vectors = sightings(CENTRES, [0, 1, 2, 0, 1, 3], seed=7)
    before = await make_runtime(store)
    await before.handle(records(vectors[:4]))

    after = await make_runtime(FlakyStore(store.inner))
    outcome = await after.handle(records(vectors))

    assert (outcome.skipped, outcome.observations) == (4, 2)
    assert after.metrics.registry.get_sample_value("fvc_replayed_records_total") == 4
    assert await observations_in(store.inner) == 6
    reference = await clean_run(make_runtime, [records(vectors[:4]), records(vectors[4:], first=4)])
    assert await snapshot(store.inner) == reference


async def test_every_observation_counts_once_whatever_the_store_does(
    store: FlakyStore, make_runtime: MakeRuntime, sleeps: list[float]
) -> None:
    """Seeded mix of conflicts, outages and lost replies over two partitions and dead letters.

    After every batch the clusters account for exactly the observations sent, the stored offsets
    are the last ones sent, and no event or dead letter is in the outbox twice.
    """
    runtime = await make_runtime(store)
    for batch, sent, offsets in failing_rounds(store, CENTRES):
        await runtime.handle(batch)

        assert await observations_in(store.inner) == sent
        assert await store.inner.offsets() == offsets
        ids = await outbox_ids(store.inner)
        assert len(ids) == len(set(ids))
    assert len(store.applied) == 16
    assert sleeps  # the outages were waited out, not raised
