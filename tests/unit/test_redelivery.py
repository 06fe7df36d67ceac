"""Redelivered input is applied once: whole, in part, overlapping the stored offset, repeated.

A consumer may hand records over again (Faust seeks back to the committed offsets after a
rebalance while a batch already holds them). The pipeline and the store must count every
observation exactly once whatever arrives; hypothesis shuffles and repeats the deliveries.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.codec.encode import encode_observation
from app.config import ClusteringConfig
from app.engine import Engine
from app.settings import Settings
from app.store import MemoryStore
from app.worker.pipeline import Pipeline, RawRecord, _unique_in_order

CONFIG = ClusteringConfig.for_threshold(0.9, ["cam"])
TOPIC = CONFIG.topics[0]
PEOPLE = np.eye(8, dtype=np.float32)  # orthogonal identities: each record's cluster is known


def record(partition: int, offset: int) -> RawRecord:
    """Offset n of a partition shows person n % 8."""
    value = encode_observation(PEOPLE[offset % len(PEOPLE)])
    return RawRecord(TOPIC, partition, offset, f"k{partition}-{offset}".encode(), value, offset)


def pipeline(store: MemoryStore | None = None) -> Pipeline:
    """A worker's pipeline over an in-memory store."""
    return Pipeline(Engine(CONFIG), store or MemoryStore(), CONFIG, Settings.from_env({}))


def counted(p: Pipeline) -> int:
    """Observations the clusters hold: each applied record adds exactly one."""
    return sum(c.num_observations for c in p.engine.clusters.values())


async def test_a_batch_replayed_whole_is_skipped() -> None:
    p = pipeline()
    batch = [record(0, n) for n in range(10)]
    assert (await p.handle(batch)).observations == 10
    again = await p.handle(batch)
    assert (again.observations, again.skipped) == (0, 10)
    assert counted(p) == 10


async def test_a_batch_with_repeated_records_applies_each_once() -> None:
    p = pipeline()
    batch = [record(0, n) for n in range(6)] + [record(0, n) for n in range(3, 8)]
    outcome = await p.handle(batch)
    assert outcome.observations == 8
    assert counted(p) == 8
    assert await p.store.offsets() == {f"{TOPIC}:0": 7}


async def test_a_batch_replayed_in_part_applies_only_the_new_records() -> None:
    p = pipeline()
    await p.handle([record(0, n) for n in range(5)])
    outcome = await p.handle([record(0, n) for n in range(3, 9)])
    assert (outcome.observations, outcome.skipped) == (4, 2)
    assert counted(p) == 9


async def test_overlap_with_an_offset_stored_by_another_worker_is_dropped() -> None:
    """The other worker's commit moved the stored offset; this worker's view is stale."""
    store = MemoryStore()
    mine, theirs = pipeline(store), pipeline(store)
    await mine.handle([record(0, 0)])  # mine believes partition 0 is at offset 0
    await theirs.load_offsets()
    await theirs.handle([record(0, n) for n in range(1, 6)])  # ... it is at 5 now
    outcome = await mine.handle([record(0, n) for n in range(3, 9)])
    assert (outcome.observations, outcome.skipped) == (3, 3)
    assert await store.offsets() == {f"{TOPIC}:0": 8}
    stored = [c async for chunk in store.load_all() for c in chunk]
    assert sum(c.num_observations for c in stored) == 9


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 1), st.integers(0, 15)), max_size=20),
        min_size=1,
        max_size=6,
    )
)
async def test_any_redelivery_counts_every_offset_once(
    batches: list[list[tuple[int, int]]],
) -> None:
    p = pipeline()
    for batch in batches:
        await p.handle([record(partition, offset) for partition, offset in batch])
    # Applied: per partition, every distinct offset up to the last committed one that was
    # delivered while it was still ahead of the stored offset. Recompute that independently.
    stored: dict[int, int] = {}
    expected = 0
    for batch in batches:
        fresh: dict[int, set[int]] = {}
        for partition, offset in batch:
            if offset > stored.get(partition, -1):
                fresh.setdefault(partition, set()).add(offset)
        for partition, offsets in fresh.items():
            expected += len(offsets)
            stored[partition] = max(offsets)
    assert counted(p) == expected
    assert await p.store.offsets() == {f"{TOPIC}:{k}": v for k, v in stored.items()}


def test_unique_in_order_keeps_partition_slots_and_sorts_within() -> None:
    batch = [record(0, 5), record(1, 2), record(0, 3), record(0, 5), record(1, 1), record(0, 4)]
    ordered = [(r.partition, r.offset) for r in _unique_in_order(batch)]
    assert ordered == [(0, 3), (1, 1), (0, 4), (0, 5), (1, 2)]
