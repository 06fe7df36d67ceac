"""`fvc produce` and `fvc tail` against the real local Kafka.

What goes out is read back with a plain confluent-kafka consumer: every record, in order within
its partition, with the planned key and timestamp and a value that decodes to the source vector.
Every test uses its own stream ids and topics, so runs never see each other's records.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from app.codec.decode import Selector, decode
from app.codec.encode import encode_event
from app.commands import produce as produce_command
from app.commands import tail as tail_command
from app.config import parse_config
from app.downstream.tail import format_event, read_events
from app.engine.lifecycle import delete_event, merge_event, reg_event
from app.engine.types import Cluster, ClusterId, DeleteReason, Event, EventType
from app.kafka_client import ensure_topics, make_producer
from app.offline.produce import Rows, as_rows, planned_records, produce_scene
from app.offline.synth import Scene, make_scene
from app.settings import Settings

pytestmark = pytest.mark.integration

T0 = 1_571_138_183_912  # 2019-10-15T11:16:23.912Z


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap)


def scene_for(prefix: str, n: int = 240, cameras: int = 3) -> Scene:
    """A small scene on streams ``<prefix>camera_*``, starting now (see Rows.starting_at)."""
    scene = make_scene(n, seed=5, dim=16, cameras=cameras, start_ms=int(time.time() * 1000))
    return Scene(X=scene.X, y=scene.y, t=scene.t, s=np.char.add(prefix, scene.s))


def consume_all(settings: Settings, topics: list[str], expected: int) -> list:
    """Every record of ``topics`` from the start, until ``expected`` arrived (or 30 s passed)."""
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap, "group.id": "fvc-test-readback",
        "enable.auto.commit": False,
    })
    metadata = consumer.list_topics(timeout=10).topics
    consumer.assign([
        TopicPartition(t, p, 0) for t in topics for p in metadata[t].partitions
    ])
    records, deadline = [], time.monotonic() + 30
    while len(records) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            records.append(msg)
    consumer.close()
    return records


def check_readback(records: list, rows: Rows, row_topics: list[str], plan: list, fmt: str) -> None:
    """Counts, keys, timestamps, order within each partition and decoded vectors all match."""
    assert len(records) == len(plan)
    index = {(topic, key): i for i, (topic, key, _) in enumerate(plan)}
    assert len(index) == len(plan)  # keys are unique within a topic
    row_of = {where: i for i, where in enumerate(zip(row_topics, rows.keys, strict=True))}
    last: dict[tuple[str, int], int] = {}
    for msg in records:
        where = (msg.topic(), msg.key().decode())
        i = index[where]
        assert msg.timestamp()[1] == plan[i][2]
        assert last.get((msg.topic(), msg.partition()), -1) < i  # plan order within a partition
        last[(msg.topic(), msg.partition())] = i
        observation = decode(msg.value(), fmt, "features")
        if observation is None:  # an end-of-frame record
            assert where not in row_of
            continue
        np.testing.assert_allclose(observation.vector, rows.X[row_of[where]], rtol=1e-6)
        assert observation.model_id == "fvc-synthetic" and observation.type == "PERSON_FACE"


def test_a_synthetic_scene_arrives_whole_in_order_with_keys_times_and_vectors(settings, unique):
    scene = scene_for(unique)
    report = produce_scene(settings, scene, partitions=3, end_of_frame=True)
    rows, plan = as_rows(scene), planned_records(scene, end_of_frame=True)
    assert report.records == scene.n and report.failed == 0
    assert report.end_of_frame_records == len(plan) - scene.n > 0
    assert set(report.created_topics) == set(report.topics) and len(report.topics) == 3
    records = consume_all(settings, list(report.topics), len(plan))
    row_topics = [f"{s}.FeatureVectorRecord.json" for s in rows.s.tolist()]
    check_readback(records, rows, row_topics, plan, "json")
    assert len({(m.topic(), m.partition()) for m in records}) > 3  # really spread over partitions


def test_msgpack_records_follow_the_configured_topics_and_selectors(settings, unique):
    scene = scene_for(unique, n=120, cameras=2)
    streams = sorted(set(scene.s.tolist()))
    config = parse_config({
        "clustering_config": {"method": "SIMPLE_AVERAGE"},
        "input_stream_configs": [
            {"stream_id": streams[0], "topic": f"{unique}.in0",
             "fv_field_selector": {"feature_vector_path": "det.fv"},
             "reg_stream_config": {"reg_threshold": 0.5}},
            {"stream_id": streams[1], "topic": f"{unique}.in1",
             "fv_field_selector": {"fv_cluster_path": "upstream.cluster"},
             "reg_stream_config": {"reg_threshold": 0.5}},
        ],
    })
    report = produce_scene(settings, scene, config=config, fmt="msgpack", partitions=2)
    assert report.topics == (f"{unique}.in0", f"{unique}.in1") and report.failed == 0
    plan = planned_records(scene, config=config)
    records = consume_all(settings, list(report.topics), len(plan))
    assert all(m.value()[:1] not in b"{[" for m in records)  # msgpack, not JSON
    selectors = {s.topic: Selector.of(s) for s in config.streams}
    assert all(decode(m.value(), "msgpack", selectors[m.topic()]).count == 1 for m in records)
    rows = as_rows(scene)
    by_key = {(t, k): i for i, (t, k, _) in enumerate(plan)}
    assert len(by_key) == scene.n
    for msg in records:
        i = by_key[(msg.topic(), msg.key().decode())]
        assert msg.timestamp()[1] == plan[i][2]
        assert (decode(msg.value(), "msgpack", selectors[msg.topic()]).vector == rows.X[i]).all()


def test_rate_holds_a_run_to_its_records_per_second(settings, unique):
    scene = scene_for(unique, n=200, cameras=1)
    ensure_topics(settings, [f"{unique}camera_0.FeatureVectorRecord.json"], 1)
    report = produce_scene(settings, scene, rate=400)
    assert report.records == 200 and report.failed == 0
    assert 0.45 <= report.seconds < 3.0  # the 200th record is due at 199/400 s
    assert report.records_per_second <= 420


def test_produce_command_sends_a_file_and_writes_its_labels(settings, unique, tmp_path, capsys):
    scene = scene_for(unique, n=60, cameras=2)
    source, labels = scene.save(tmp_path / "scene.npz"), tmp_path / "truth.npz"
    parser = argparse.ArgumentParser()
    produce_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "produce", str(source), "--bootstrap", settings.kafka_bootstrap, "--format", "msgpack",
        "--labels-out", str(labels), "--partitions", "1", "--limit", "50",
    ])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("sent 50 records to 2 topic(s), 2 created in ") and "records/s" in out
    with np.load(labels) as truth:
        assert truth["keys"].tolist() == as_rows(scene).keys[:50]
        assert (truth["y"] == scene.y[:50]).all()
        records = consume_all(settings, sorted(set(truth["topics"].tolist())), 50)
    assert sorted(m.key().decode() for m in records) == sorted(as_rows(scene).keys[:50])


def cluster(stream: str, key: str, n: int, realized: bool, version: int = 3) -> Cluster:
    vector = np.array([0.6, 0.8, 0.0], np.float32)
    return Cluster.from_state(
        id=ClusterId(int(key.split("_")[0]), key, stream), state=vector * n, num_observations=n,
        realized=realized, first_time=T0, last_time=T0, streams=(stream,), retention_ms=0,
        version=version, pending=0, pending_since=T0,
    )


def hand_made_events() -> list[Event]:
    a = cluster("camera_1", f"{T0}_0", 7, True)
    b = cluster("camera_2", f"{T0 + 100}_1", 2, False)
    c = cluster("camera_3", f"{T0 + 200}_0", 3, True)
    merged = cluster("camera_1", f"{T0}_0", 12, True, version=4)
    return [
        reg_event(a, T0, "camera_1"),
        merge_event(merged, T0 + 500, (b.id, c.id)),
        delete_event(b, T0 + 900, DeleteReason.EXPIRED),
        Event(EventType.END_OF_INPUT_RECORD, "end@1", T0 + 1000),
    ]


def write_events(settings: Settings, topic: str, events: list[Event], fmt: str) -> None:
    ensure_topics(settings, [topic], 1)
    producer = make_producer(settings)
    for event in events:
        producer.produce(topic, encode_event(event, fmt), key=event.key.encode(),
                         timestamp=event.time)
    producer.flush(10)


EXPECTED_LINES = [
    f"REG    camera_1:{T0}_0  n=7  realized  from camera_1  @2019-10-15T11:16:23.912Z",
    f"MERGE  camera_1:{T0}_0 <- camera_2:{T0 + 100}_1, camera_3:{T0 + 200}_0  n=12"
    "  @2019-10-15T11:16:24.412Z",
    f"DELETE camera_2:{T0 + 100}_1 EXPIRED  @2019-10-15T11:16:24.812Z",
    "END_OF_INPUT  @2019-10-15T11:16:24.912Z",
]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_read_events_returns_hand_made_events_and_stops_at_end_of_input(settings, unique, fmt):
    events = hand_made_events()
    after = reg_event(cluster("camera_9", f"{T0 + 5000}_0", 1, True), T0 + 5000, "camera_9")
    write_events(settings, unique, [*events, after], fmt)
    read = read_events(settings, unique, timeout=10, until_end=True)
    assert [e["type"] for e in read] == [e.type.value for e in events]
    assert [e["event_id"] for e in read] == [e.event_id for e in events]
    feature = read[0]["reg_event"]["cluster"]["representative_fv"]["feature"]
    assert feature == pytest.approx([0.6, 0.8, 0.0])
    lines = [format_event(e, ev.time) for e, ev in zip(read, events, strict=True)]
    assert lines == EXPECTED_LINES
    assert len(read_events(settings, unique, timeout=10, max_events=2)) == 2
    started = time.monotonic()
    assert len(read_events(settings, unique, timeout=1.5)) == 5  # all, then 1.5 s idle
    assert time.monotonic() - started >= 1.5


def test_tail_command_prints_readable_lines_and_json(settings, unique, capsys):
    write_events(settings, unique, hand_made_events(), "msgpack")
    parser = argparse.ArgumentParser()
    tail_command.register(parser.add_subparsers(dest="command"))
    common = ["tail", "--topic", unique, "--bootstrap", settings.kafka_bootstrap,
              "--from-beginning", "--timeout", "10"]
    args = parser.parse_args([*common, "--until-end-of-input"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.splitlines() == EXPECTED_LINES
    args = parser.parse_args([*common, "--json", "--max", "1"])
    assert args.func(args) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["type"] == "REG_EVENT"
    assert record["reg_event"]["cluster"]["representative_fv"]["feature"] == pytest.approx(
        [0.6, 0.8, 0.0]
    )
