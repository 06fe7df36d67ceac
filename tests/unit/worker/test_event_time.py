"""Event time: the pipeline gives ``fvc evaluate``'s answer at any batch size and in any mode.

The real ``Pipeline`` over a ``MemoryStore``, fed the records ``fvc produce`` sends; its
assignments, resolved through its MERGE events, must equal ``fvc evaluate --assignments``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.config import ClusteringConfig
from app.engine import Engine, Observation
from app.engine.clock import EventClock, boundary
from app.offline.evaluate import run_engine
from app.offline.synth import make_scene
from app.settings import Settings
from app.store import MemoryStore
from app.worker.event_order import EventOrder
from app.worker.pipeline import Pipeline, RawRecord
from tests.support.replay import (
    LiveAnswer,
    event_time_config,
    offline_assignments,
    scene_records,
)

ASSIGNMENTS = "fvc.assignments"


def live_settings() -> Settings:
    return Settings.from_env({"FVC_REDIS_URL": "memory://", "FVC_DEVICE": "cpu",
                              "FVC_ASSIGNMENTS_TOPIC": ASSIGNMENTS})


async def replay(
    records: Sequence[RawRecord],
    config: ClusteringConfig,
    batch_sizes: Sequence[int],
    *,
    ordered: bool = False,
    overlap: bool = False,
) -> tuple[LiveAnswer, list[tuple[str, bytes]], int]:
    """Feed ``records`` in batches cycling through ``batch_sizes``; the answer and events."""
    settings = live_settings()
    store = MemoryStore()
    pipeline = Pipeline(Engine(config), store, config, settings, ordered=ordered,
                        batch=ordered, overlap=overlap, now_ms=lambda: 0)
    await pipeline.load_offsets()
    start, turn, merges = 0, 0, 0
    while start < len(records):
        size = batch_sizes[turn % len(batch_sizes)]
        merges += (await pipeline.handle(records[start : start + size])).merges
        start, turn = start + size, turn + 1
    await pipeline.tick()
    answer, events = LiveAnswer(), []
    for entry in await store.outbox_pending(limit=1_000_000):
        record = entry.record
        if record.topic == ASSIGNMENTS:
            answer.assignment(record.value)
        elif record.topic == settings.output_topic:
            answer.event(record.value)
            events.append((record.event_id, record.value))
    return answer, events, merges


def in_event_order(records: Sequence[RawRecord], config: ClusteringConfig) -> list[RawRecord]:
    """What batch mode hands the pipeline: every partition merged by event time."""
    ends = Counter((r.topic, r.partition) for r in records)
    streams = {s.topic: s.stream_id for s in config.streams}
    order = EventOrder(dict(ends), stream_of=lambda topic: streams[topic])
    shuffled = list(records)
    random.Random(5).shuffle(shuffled)  # partitions arrive interleaved any old way...
    shuffled.sort(key=lambda r: (r.topic, r.partition, r.offset))  # ...each one in order
    out = []
    for record in shuffled:
        order.add(record)
        out += order.ready()
    assert order.done
    return out


@pytest.fixture(scope="module")
def one_camera() -> tuple[list[RawRecord], ClusteringConfig, dict]:
    scene = make_scene(1_500, seed=11, dim=32, cameras=1, frame_interval_ms=200)
    config = event_time_config(["camera_0"])
    return scene_records(scene, config), config, offline_assignments(scene, config)


async def test_a_replay_of_one_partition_gives_the_offline_answer_at_any_batch_size(
    one_camera: tuple[list[RawRecord], ClusteringConfig, dict],
) -> None:
    records, config, offline = one_camera
    answers = [await replay(records, config, sizes) for sizes in ([512], [1, 7, 64], [1500])]
    answers.append(await replay(records, config, [1, 7, 64], overlap=True))
    for answer, _, _ in answers:
        assert answer.final() == offline
    assert answers[0][2] > 10, "the scene must cross merge boundaries for this to mean much"
    same_events = {frozenset(events) for _, events, _ in answers}
    assert len(same_events) == 1, "the same events, up to order, whatever the batch size"
    kinds = Counter(orjson.loads(v)["type"] for _, v in answers[0][1])
    assert kinds["MERGE_EVENT"] and kinds["DELETE_EVENT"] and kinds["REG_EVENT"]


@pytest.fixture(scope="module")
def four_cameras() -> tuple[list[RawRecord], ClusteringConfig, dict]:
    scene = make_scene(2_000, seed=3, dim=32, cameras=4, frame_interval_ms=200)
    config = event_time_config([f"camera_{c}" for c in range(4)])
    return scene_records(scene, config), config, offline_assignments(scene, config, 97)


async def test_batch_mode_order_gives_the_offline_answer_for_many_cameras(
    four_cameras: tuple[list[RawRecord], ClusteringConfig, dict],
) -> None:
    records, config, offline = four_cameras
    for overlap in (False, True):
        answer, _, merges = await replay(
            in_event_order(records, config), config, [300], ordered=True, overlap=overlap
        )
        assert merges > 10
        assert answer.final() == offline


async def test_a_worker_restarted_mid_stream_carries_on_with_the_same_clock(
    one_camera: tuple[list[RawRecord], ClusteringConfig, dict],
) -> None:
    """The merge schedule and partition times live in the store, so a restart keeps them."""
    records, config, offline = one_camera
    settings, store = live_settings(), MemoryStore()
    for part in (records[:700], records[700:]):
        pipeline = Pipeline(Engine(config), store, config, settings, now_ms=lambda: 0)
        async for chunk in store.load_all():
            pipeline.engine.load(chunk, force=True)
        await pipeline.load_offsets()
        await pipeline.handle(part)
    answer = LiveAnswer()
    for entry in await store.outbox_pending(limit=1_000_000):
        if entry.record.topic == ASSIGNMENTS:
            answer.assignment(entry.record.value)
        elif entry.record.topic == settings.output_topic:
            answer.event(entry.record.value)
    final = answer.final()
    agree = sum(final[k] == offline[k] for k in offline) / len(offline)
    # A restarted engine's first merge pass looks at every cluster, not only changed ones.
    assert agree > 0.98


def merge_passes(arrivals: list[int], lateness: int, cut: int) -> tuple[list[int], int]:
    """The boundaries an event clock runs merge passes at, fed in batches of ``cut``."""
    clock = EventClock(1_000, lateness_ms=lateness)
    boundaries, late, done = [], 0, 0
    while done < len(arrivals):
        part = arrivals[done : done + cut]
        scan = clock.scan(["p"] * len(part), part, 0)
        clock.adopt(scan)
        late += scan.late
        done += scan.cut
        if scan.merge_at is not None:
            clock.merged(scan.merge_at)
            boundaries.append(clock.merge_last)
    return boundaries, late


def within(times: list[int], jitter: list[int]) -> list[int]:
    """``times`` in an arrival order at most ``max(jitter)`` out of event-time order."""
    return [t for _, t in sorted((t + jitter[i % len(jitter)], t) for i, t in enumerate(times))]


@hsettings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(0, 20_000), min_size=1, max_size=80),
    jitter=st.lists(st.integers(0, 500), min_size=1, max_size=80),
    lateness=st.sampled_from([500, 1_000]),
    cut=st.integers(1, 80),
)
def test_disorder_within_the_allowed_lateness_is_never_late(
    times: list[int], jitter: list[int], lateness: int, cut: int
) -> None:
    """Up to the allowed lateness out of order, no record is late.

    Every merge pass falls on a boundary the in-order run passes too, and both end on the same
    once the input outlasts the interval its first record started the schedule in. (A stream
    shorter than that: the in-order run may have started the schedule an interval earlier,
    from an earlier first record, and crossed one boundary the other run started past.)
    """
    in_order = sorted(times)
    arrivals = within(in_order, jitter)
    boundaries, late = merge_passes(arrivals, lateness, cut)
    reference, _ = merge_passes(in_order, lateness, 1)
    assert late == 0
    assert set(boundaries) <= set(reference)
    final = boundary(in_order[-1] - lateness, 1_000)
    if final > boundary(arrivals[0] - lateness, 1_000):
        assert boundaries[-1:] == reference[-1:] == [final]


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=120),
    jitter=st.lists(st.integers(0, 400), min_size=1, max_size=50),
    cut=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
async def test_the_engine_under_disorder_counts_every_observation_once(
    labels: list[int], jitter: list[int], cut: int, seed: int
) -> None:
    """Random arrival orders within the allowed lateness, any batch size, every timer on.

    Each observation lands in exactly one final cluster and the counts add up.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 16)).astype(np.float32)
    times = [i * 150 for i in range(len(labels))]
    arrival = within(times, jitter)
    observations = [
        Observation(centres[labels[t // 150]] + 0.3 * rng.normal(size=16).astype(np.float32),
                    "camera_0", f"{t}_0", t)
        for t in arrival
    ]
    config = event_time_config(["camera_0"], interval_ms=1_000, retention_ms=0)
    engine = Engine(config)
    labeller = await run_engine(engine, observations, MemoryStore(), cut, lateness_ms=400)
    final = labeller.final()
    assert len(final) == len(observations)
    assert set(final) <= set(engine.clusters)
    assert sum(c.num_observations for c in engine.clusters.values()) == len(observations)
    counts = Counter(final)
    assert all(engine.clusters[k].num_observations == n for k, n in counts.items())
