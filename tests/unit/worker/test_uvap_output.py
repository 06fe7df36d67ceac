"""The uvap output profile in the worker: keys, headers, one partition, UVAP's emission rules.

UVAP keys an FVClusterUpdateRecord by the input record that caused it. The engine names the
observation behind each event it makes; ``input_keys`` reads it, and is checked here against
the engine run one observation at a time, where every event of a step is caused by its one
observation (and time-driven changes run first, in a timer step of their own).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from fakes import (
    FlakyStore,
    MakeRuntime,
    identities,
    make_config,
    make_settings,
    records,
    sightings,
    write_config,
)

from app.config import ClusteringConfig, parse_config
from app.engine import DeleteReason, Engine, Event, EventType, Observation
from app.settings import Settings
from app.store import MemoryStore
from app.store.base import OutboxRecord
from app.worker.input_keys import NO_KEY, input_keys
from app.worker.outbox import OutboxWriter
from app.worker.publisher import Publisher
from app.worker.runtime import Runtime

STREAMS = ("entrance", "exit")


@pytest.fixture
def settings() -> Settings:
    return make_settings(FVC_OUTPUT_PROFILE="uvap")


# -- which input record each event is about ----------------------------------------------------


def uvap_config(
    action: str = "KEEP_REALIZED", emit_unrealized: bool | None = None, throttle_ms: int = 0
) -> ClusteringConfig:
    clustering: dict[str, Any] = {
        "method": "SIMPLE_AVERAGE",
        "cluster_realization": {"num_samples": 3, "time_limit_ms": 700,
                                "realized_cluster_action": action},
        "min_update_interval_ms": throttle_ms,
    }
    if emit_unrealized is not None:
        clustering["emit_unrealized"] = emit_unrealized
    streams = [
        {"stream_id": s, "fv_field_selector": {"feature_vector_path": "features"},
         "reg_stream_config": {"reg_threshold": 0.9, "cluster_retention_period_ms": 4_000}}
        for s in STREAMS
    ]
    config = parse_config({"clustering_config": clustering, "input_stream_configs": streams})
    return config.for_output_profile("uvap")


def scene(seed: int, n: int = 400) -> list[Observation]:
    """Two cameras seeing 12 people, streams interleaved, each stream's times increasing.

    A frame holds one to three detections (one time, keys ``<time>_<i>``), at times two of
    one person.
    """
    rng = np.random.default_rng(seed)
    people = identities(seed, 8)
    people = np.concatenate([people, -people[:4]])
    clocks = dict.fromkeys(STREAMS, 1_000)
    out: list[Observation] = []
    while len(out) < n:
        stream = STREAMS[int(rng.integers(2))]
        clocks[stream] += int(rng.integers(1, 400))
        size = int(rng.integers(1, 4))
        for index in range(size):
            person = people[int(rng.integers(len(people)))]
            vector = person + 0.05 * rng.normal(size=person.size).astype(np.float32)
            time = clocks[stream]
            out.append(Observation(vector.astype(np.float32), stream, f"{time}_{index}", time))
    return out[:n]


def batched_keys(config: ClusteringConfig, observations: Sequence[Observation],
                 size: int) -> list[tuple[Event, bytes]]:
    """Each event of a batched run with the key the outbox gives it."""
    engine, keyed = Engine(config), []
    for start in range(0, len(observations), size):
        batch = observations[start : start + size]
        result = engine.step(batch)
        keyed += zip(result.events, input_keys(result), strict=True)
    return keyed


def one_at_a_time_keys(config: ClusteringConfig,
                       observations: Sequence[Observation]) -> dict[str, bytes]:
    """Event id -> key, the engine stepping one observation at a time.

    Every event of a step is about the one cluster its observation joined. A registration of
    the cluster without the observation in its count is a realization by time the observation
    found due (no key); the others, and a deletion after them, are the observation's own.
    """
    engine, keys = Engine(config), {}
    for obs in observations:
        result = engine.process([obs])
        (decision,) = result.decisions
        before = engine.clusters.get(decision.cluster_key)
        counted = (before.num_observations if before else 0) + obs.count
        key = NO_KEY
        for event in result.events:
            if event.cluster is not None:
                key = obs.key.encode() if event.cluster.num_observations == counted else NO_KEY
            keys[event.event_id] = key
        engine.apply(result)
    return keys


CASES = {
    "uvap defaults": uvap_config(),
    "unrealize": uvap_config("UNREALIZE"),
    "remove": uvap_config("REMOVE"),
    # observations that emit nothing beside ones that do, even within one frame
    "unrealized not emitted": uvap_config(emit_unrealized=False),
    "unrealized not emitted, remove": uvap_config("REMOVE", emit_unrealized=False),
    "throttled": uvap_config(throttle_ms=500),
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case", list(CASES))
def test_each_event_is_keyed_by_the_record_whose_observation_caused_it(
    case: str, seed: int
) -> None:
    config = CASES[case]
    observations = scene(seed)
    expected = one_at_a_time_keys(config, observations)
    for size in (1, 7, 64, len(observations)):
        events = batched_keys(config, observations, size)
        got = {e.event_id: k for e, k in events}
        assert got == {i: expected[i] for i in got}, size
    if config.emit_unrealized and not config.min_update_interval_ms:
        # UVAP's rule: every input record is registered, so each key is in one registration
        registered = [k for e, k in events if k and e.type is EventType.REG_EVENT]
        assert sorted(registered) == sorted(o.key.encode() for o in observations)


def test_a_realization_by_time_has_no_key_even_when_an_observation_brings_it() -> None:
    config = uvap_config()
    a = identities(3, 1)[0]
    observations = [Observation(a, "entrance", "1000_0", 1_000),
                    Observation(a, "exit", "2000_0", 2_000)]  # 700 ms after: realized first
    result = Engine(config).step(observations)
    keys = input_keys(result)
    shapes = [(e.type, e.cluster.realized if e.cluster else None, e.time) for e in result.events]
    assert shapes == [
        (EventType.REG_EVENT, False, 1_000),
        (EventType.REG_EVENT, True, 1_700),  # realized at its deadline: time's doing
        (EventType.REG_EVENT, True, 2_000),
    ]
    assert keys == [b"1000_0", NO_KEY, b"2000_0"]


def test_a_deletion_at_realization_shares_its_registration_key() -> None:
    config = uvap_config("REMOVE")
    a = identities(4, 1)[0]
    observations = [Observation(a, "entrance", f"{t}_0", t) for t in (1_000, 1_100, 1_200)]
    result = Engine(config).step(observations)
    keys = input_keys(result)
    assert [e.type for e in result.events][-2:] == [EventType.REG_EVENT, EventType.DELETE_EVENT]
    assert keys == [b"1000_0", b"1100_0", b"1200_0", b"1200_0"]


def test_timer_steps_and_operator_requests_have_no_key() -> None:
    config = uvap_config()
    engine = Engine(config)
    a, b = identities(5, 2)
    engine.step([Observation(a, "entrance", "1000_0", 1_000),
                 Observation(b, "entrance", "1000_1", 1_000)])
    steps = []
    for step in (lambda: engine.advance(1_700), lambda: engine.remove("entrance:1000_0"),
                 lambda: engine.advance(10_000)):  # realization by time, removal, expiry
        steps.append(step())
        engine.apply(steps[-1])
    events = [e for result in steps for e in result.events]
    assert [(e.type, e.reason) for e in events] == [
        (EventType.REG_EVENT, None), (EventType.REG_EVENT, None),
        (EventType.DELETE_EVENT, DeleteReason.REMOVED), (EventType.DELETE_EVENT,
                                                        DeleteReason.EXPIRED),
    ]
    assert [k for result in steps for k in input_keys(result)] == [NO_KEY] * 4


# -- the outbox records -----------------------------------------------------------------------


def header(record: OutboxRecord, name: str) -> bytes | None:
    return dict(record.headers).get(name)


def test_outbox_records_hold_uvaps_record_and_fvcs_extras_in_headers(uvap, settings) -> None:
    config = uvap_config()
    writer = OutboxWriter(settings, config)
    writer.epoch = "3f2a9c1e"  # a store rebuilt by replay tags its ids; the header carries it
    engine = Engine(config)
    a = identities(6, 1)[0]
    observations = [Observation(a, "entrance", f"{t}_0", t, model_id="m") for t in (1_000, 1_050)]
    result = engine.step(observations)
    out = writer.records(result, observations=observations)
    assert [r.key for r in out] == [b"1000_0", b"1050_0"]
    assert [r.timestamp for r in out] == [1_000, 1_050]
    for record, event in zip(out, result.events, strict=True):
        assert record.topic == settings.output_topic
        assert header(record, "fvc.event_type") == b"REG_EVENT"
        assert header(record, "fvc.event_id") == f"{event.event_id}~3f2a9c1e".encode()
        assert header(record, "fvc.cluster_id") == b"entrance:1000_0"
        assert 0.99 < float(header(record, "fvc.coherence") or 0) <= 1.0
        uvap.parse("FVClusterUpdateRecord", record.value)
    assert [uvap.as_dict(uvap.parse("FVClusterUpdateRecord", r.value))["reg_event"]["cluster"][
        "is_realized"] for r in out] == [False, False]  # UVAP emits unrealized clusters too


def test_the_default_profile_keys_by_cluster_and_keeps_extras_in_the_record() -> None:
    config = uvap_config()
    writer = OutboxWriter(make_settings(), config)
    a = identities(7, 1)[0]
    observations = [Observation(a, "entrance", "1000_0", 1_000)]
    result = Engine(config).step(observations)
    (record,) = writer.records(result, observations=observations)
    assert record.key == b"entrance:1000_0"
    assert record.headers == (("fvc.event_type", b"REG_EVENT"),)
    assert b'"event_id"' in record.value


# -- publishing on one partition --------------------------------------------------------------


class Producer:
    """Records ``produce`` calls with every argument."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.calls.append((topic, kwargs))

    def poll(self, _timeout: float) -> int:
        return 0


@pytest.mark.parametrize(("profile", "partition"), [("uvap", 0), ("default", None)])
async def test_events_go_to_partition_zero_under_uvaps_profile(
    profile: str, partition: int | None
) -> None:
    settings = make_settings(FVC_OUTPUT_PROFILE=profile)
    producer = Producer()
    publisher = Publisher(settings, producer)  # type: ignore[arg-type]
    await publisher.send(OutboxRecord("e@1", b"1000_0", b"{}", 1, settings.output_topic))
    await publisher.send(OutboxRecord("e@2", b"", b"{}", 2))  # "" is the output topic too
    await publisher.send(OutboxRecord("dead", b"k", b"x", 3, settings.dead_letter_topic))
    placed = [kwargs.get("partition") for _, kwargs in producer.calls]
    assert placed == [partition, partition, None]


# -- the runtime: UVAP's emission default, one output partition, the whole path ---------------


@pytest.mark.parametrize(
    ("profile", "given", "emitted"),
    [("uvap", None, True), ("uvap", False, False), ("default", None, False),
     ("default", True, True)],
)
def test_registrations_of_unrealized_clusters_follow_the_profile_unless_the_file_says(
    tmp_path, profile: str, given: bool | None, emitted: bool
) -> None:
    config = make_config()
    if given is not None:
        config = dataclasses.replace(config, emit_unrealized=given)
    path = write_config(tmp_path, config)
    runtime = Runtime(make_settings(FVC_OUTPUT_PROFILE=profile), path, store=MemoryStore())
    assert runtime.config.emit_unrealized is emitted
    assert runtime.engine.lifecycle.emit_unrealized is emitted


def test_the_output_topic_is_created_with_one_partition(tmp_path, monkeypatch, settings) -> None:
    import app.kafka_client

    created: dict[str, int | None] = {}

    def ensure_topics(_settings: Settings, topics: Sequence[str], partitions: int | None = None,
                      **_options: object) -> list[str]:
        created.update(dict.fromkeys(topics, partitions))
        return list(topics)

    monkeypatch.setattr(app.kafka_client, "ensure_topics", ensure_topics)
    runtime = Runtime(settings, write_config(tmp_path, make_config()), store=MemoryStore())
    runtime.create_topics()
    assert created[settings.output_topic] == 1
    assert created[settings.dead_letter_topic] is None  # FVC_TOPIC_PARTITIONS


async def test_a_batch_through_the_worker_publishes_uvaps_records(
    uvap, make_runtime: MakeRuntime
) -> None:
    store = FlakyStore()
    runtime = await make_runtime(store)
    assert runtime.config.emit_unrealized is True
    batch = records(sightings(identities(seed=8, count=2), [0, 1, 0, 0, 1], seed=2))
    await runtime.handle(batch)
    events = [e.record for e in await store.inner.outbox_pending()]
    assert [r.key for r in events] == [r.key for r in batch]  # each record registered once
    kinds = []
    for record in events:
        kinds.append(uvap.parse("FVClusterUpdateRecord", record.value).type)
        assert header(record, "fvc.event_id") is not None
    assert set(kinds) == {uvap.module.FVClusterUpdateRecord.REG_EVENT}


def test_event_records_of_a_merge_name_both_clusters(uvap, settings) -> None:
    config = parse_config({
        "clustering_config": {"method": "SIMPLE_AVERAGE", "cluster_merging": {
            "initial_threshold": 0.5, "threshold_discount_rate": 1.0, "min_threshold": 0.5,
            "time_interval_ms": 0}},
        "input_stream_configs": [{"stream_id": "entrance", "fv_field_selector": {
            "feature_vector_path": "features"}, "reg_stream_config": {"reg_threshold": 0.99}}],
    })
    engine = Engine(config)
    a = identities(9, 1)[0]
    near = a + 0.2 * identities(10, 2)[1]
    engine.step([Observation(a, "entrance", "1000_0", 1_000),
                 Observation(near, "entrance", "1001_0", 1_001)])
    merged = engine.merge(1_001)
    (record,) = OutboxWriter(settings, config).event_records(merged.events)
    assert record.key == b""  # a merge pass: no one input record caused it
    body = uvap.as_dict(uvap.parse("FVClusterUpdateRecord", record.value))["merge_event"]
    ids = [m["first_detection_key"] for m in body["merged_clusters"]]
    assert ids == ["1000_0", "1001_0"] and body["cluster_id"]["first_detection_key"] == "1000_0"
