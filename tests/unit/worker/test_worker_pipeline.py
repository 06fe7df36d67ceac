"""Pipeline: one batch of raw records in, exactly one store commit out, whatever the store says.

Drives the real ``Pipeline`` and ``OutboxWriter`` over ``FlakyStore``: no Kafka, no Redis.
"""

from __future__ import annotations

from collections.abc import Sequence

from fakes import (
    TOPIC,
    FlakyStore,
    garbage,
    identities,
    observations_in,
    records,
    sightings,
    snapshot,
)

from app.config import ClusteringConfig
from app.engine import Engine
from app.settings import Settings
from app.store import MemoryStore
from app.worker.pipeline import Pipeline, RawRecord

CENTRES = identities(seed=7, count=3)


def pipeline(
    store: FlakyStore | MemoryStore, config: ClusteringConfig, settings: Settings
) -> Pipeline:
    return Pipeline(Engine(config), store, config, settings)


async def clean_run(
    batches: Sequence[Sequence[RawRecord]], config: ClusteringConfig, settings: Settings
) -> dict:
    """What the batches leave in a store that never fails: the reference to compare with."""
    store = MemoryStore()
    worker = pipeline(store, config, settings)
    for batch in batches:
        await worker.handle(batch)
    return await snapshot(store)


async def test_a_batch_commits_once_with_the_last_offset_of_each_partition(
    store: FlakyStore, config: ClusteringConfig, settings: Settings
) -> None:
    """One atomic commit carries the clusters, the dead letter and both partitions' offsets."""
    batch = [
        *records(sightings(CENTRES, [0, 1, 0, 2], seed=1), partition=0),
        garbage(offset=4, partition=0),
        *records(sightings(CENTRES, [1, 0, 2], seed=2), partition=1, first=10),
    ]
    outcome = await pipeline(store, config, settings).handle(batch)

    assert (outcome.observations, len(outcome.dead_letters), outcome.skipped) == (7, 1, 0)
    assert len(store.applied) == 1
    assert store.applied[0].offsets == {f"{TOPIC}:0": 4, f"{TOPIC}:1": 12}
    assert await store.inner.offsets() == {f"{TOPIC}:0": 4, f"{TOPIC}:1": 12}
    counts = {k: c[0] for k, c in (await snapshot(store.inner)).items()}
    assert counts == {"cam:p0o0": 3, "cam:p0o1": 2, "cam:p0o3": 2}
    outbox = [(e.record.topic, e.record.event_id) for e in await store.inner.outbox_pending()]
    events = {"cam:p0o0@2", "cam:p0o0@3", "cam:p0o1@2", "cam:p0o3@2"}  # REG from the 2nd on
    assert outbox[0] == (settings.dead_letter_topic, f"dead:{TOPIC}:0:4")
    assert sorted(outbox[1:]) == sorted((settings.output_topic, e) for e in events)


async def test_a_replayed_batch_changes_nothing(
    store: FlakyStore, config: ClusteringConfig, settings: Settings
) -> None:
    """Records at or below the stored offsets are skipped, so a redelivery counts nothing twice."""
    worker = pipeline(store, config, settings)
    vectors = sightings(CENTRES, [0, 1, 2, 0, 1, 2], seed=3)
    await worker.handle(records(vectors[:4]))

    again = await worker.handle(records(vectors[:4]))
    overlap = await worker.handle(records(vectors[2:], first=2))

    assert (again.skipped, again.observations) == (4, 0)
    assert (overlap.skipped, overlap.observations) == (2, 2)
    assert [c.offsets for c in store.applied] == [{f"{TOPIC}:0": 3}, {f"{TOPIC}:0": 5}]
    assert await observations_in(store.inner) == 6


async def test_refused_commits_are_retried_to_the_conflict_free_result(
    store: FlakyStore, config: ClusteringConfig, settings: Settings
) -> None:
    """On VersionConflict the named clusters are reloaded and the batch recomputed, not lost."""
    first = records(sightings(CENTRES, [0, 1], seed=4))
    second = records(sightings(CENTRES, [0, 0, 1, 2], seed=5), first=2)
    worker = pipeline(store, config, settings)
    await worker.handle(first)
    store.conflict(times=2)

    outcome = await worker.handle(second)

    assert outcome.conflicts == 2
    assert store.calls["get"] == 2  # one reload per conflict
    assert len(store.applied) == 2
    assert await snapshot(store.inner) == await clean_run([first, second], config, settings)
    assert await observations_in(store.inner) == 6


async def test_a_concurrent_writer_is_merged_in_not_overwritten(
    store: FlakyStore, config: ClusteringConfig, settings: Settings
) -> None:
    """Another worker updating the same cluster first makes ours reload and add on top.

    The result equals one worker handling the other's batch before ours, as if serialised.
    """
    first = records(sightings(CENTRES, [0], seed=6))
    ours = records(sightings(CENTRES, [0, 0], seed=7), first=1)
    theirs = records(sightings(CENTRES, [0, 0, 0], seed=8), partition=1)
    worker = pipeline(store, config, settings)
    await worker.handle(first)
    other = pipeline(store.inner, config, settings)
    other.engine.load((await store.get(["cam:p0o0"])).values())
    store.before_next_commit(lambda: other.handle(theirs))

    outcome = await worker.handle(ours)

    assert outcome.conflicts == 1
    reference = await clean_run([first, theirs, ours], config, settings)
    assert await snapshot(store.inner) == reference
    assert reference["cam:p0o0"][0] == 6
    assert worker.engine.clusters["cam:p0o0"].version == reference["cam:p0o0"][1]
    assert await observations_in(store.inner) == 6
