"""FVC_OUTPUT_PROFILE=uvap against the real Kafka and Redis: every record is UVAP's own.

A worker clusters a scene with every timer in play (merging, retention, realization by count
and by time), then batch mode (``fvc run``) ends the topic with END_OF_INPUT_RECORD. Every
record of the downstream topic is parsed strictly against UVAP's messages
(tests/proto/uvap_fvc.proto), and its key, place and headers are checked against the inputs.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from worker_support import FVC, Deployment, wait_for

from app.offline.produce import as_rows
from app.offline.synth import make_scene
from app.store import create_store
from tests.support.replay import event_time_config
from tests.support.topics import last_offsets
from tests.support.uvap_proto import UvapMessages

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAMS = ["camera_0", "camera_1"]


@dataclass(frozen=True)
class Record:
    """One downstream record as Kafka holds it."""

    partition: int
    offset: int
    key: bytes | None
    timestamp: int
    headers: dict[str, str]
    value: bytes


def read_all(deployment: Deployment, topic: str) -> tuple[int, list[Record]]:
    """The partition count of ``topic`` and every record in it now, in partition order."""
    from app.kafka_client import make_consumer

    consumer = make_consumer(deployment.settings)
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        out: list[Record] = []
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() or m.partition() not in ends or m.offset() >= ends[m.partition()]:
                    continue
                headers = {k: v.decode() for k, v in m.headers() or []}
                out.append(Record(m.partition(), m.offset(), m.key(), m.timestamp()[1],
                                  headers, m.value()))
                if m.offset() + 1 >= ends[m.partition()]:
                    del ends[m.partition()]
        assert not ends, f"{topic}: partitions {sorted(ends)} not read to their end"
        return len(partitions), sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def settled(deployment: Deployment) -> bool:
    """Every input record applied and the outbox empty."""

    async def go() -> bool:
        store = create_store(deployment.settings.redis_url, deployment.name)
        await store.start()
        try:
            last = last_offsets(deployment.settings, list(deployment.config.topics))
            return await store.offsets() == last and not await store.outbox_pending(limit=1)
        finally:
            await store.close()

    return asyncio.run(go())


def test_a_uvap_profile_run_writes_only_uvaps_records(
    tmp_path: Path, unique: str, kafka_bootstrap: str, redis_url: str, uvap: UvapMessages
) -> None:
    scene = make_scene(1_500, seed=21, dim=32, cameras=len(STREAMS), frame_interval_ms=200)
    deployment = Deployment(tmp_path, unique, kafka_bootstrap, redis_url,
                            cameras=len(STREAMS), partitions=1)
    data = event_time_config(STREAMS).to_dict()
    del data["clustering_config"]["emit_unrealized"]  # UVAP's profile emits them by default
    for stream in data["input_stream_configs"]:
        stream["topic"] = f"{unique}.{stream['stream_id']}"
    deployment.config_data = data
    deployment.write_config(data)
    deployment.env.update({"FVC_OUTPUT_PROFILE": "uvap", "FVC_IDLE_TIMEOUT": "0"})
    try:
        deployment.start_worker()
        report = deployment.produce(scene)
        assert (report.records, report.failed) == (scene.n, 0)
        wait_for(lambda: settled(deployment), 60, "every record applied and published")
        deployment.stop_all()
        batch = subprocess.run([FVC, "run", "--config", str(deployment.config_path)],
                               env=deployment.env, capture_output=True, text=True, timeout=120)
        assert batch.returncode == 0, batch.stderr
        partitions, records = read_all(deployment, deployment.settings.output_topic)
    finally:
        deployment.stop_all()
        deployment.clear()

    assert partitions == 1  # created with one partition: the order every consumer sees
    read = [uvap.as_dict(uvap.parse("FVClusterUpdateRecord", r.value)) for r in records]
    kinds = Counter(body["type"] for body in read)
    assert kinds["END_OF_INPUT_RECORD"] == 1 and read[-1]["type"] == "END_OF_INPUT_RECORD"
    assert min(kinds["REG_EVENT"], kinds["MERGE_EVENT"], kinds["DELETE_EVENT"]) > 0, kinds
    reasons = {b["delete_event"]["reason"] for b in read if b["type"] == "DELETE_EVENT"}
    assert reasons == {"EXPIRED"}
    merges = [b["merge_event"] for b in read if b["type"] == "MERGE_EVENT"]
    assert all(m["merged_clusters"][0] == m["cluster_id"] for m in merges)
    assert all(len(m["merged_clusters"]) == 2 for m in merges)

    # one registration per input record, keyed by it and stamped with its time
    rows = as_rows(scene)
    sent = {(str(s), k): int(t) for s, k, t in zip(rows.s, rows.keys, rows.t.tolist(),
                                                    strict=True)}
    own: dict[str, tuple[str, str]] = {}
    for record, body in zip(records, read, strict=True):
        if body["type"] == "REG_EVENT" and record.key:
            where = (body["reg_event"]["input_stream_id"], record.key.decode())
            assert sent[where] == record.timestamp
            own.setdefault(record.headers["fvc.event_id"], where)
    assert sorted(own.values()) == sorted(sent)
    unrealized = [b for b in read if b["type"] == "REG_EVENT"
                  and not b["reg_event"]["cluster"]["is_realized"]]
    assert unrealized  # UVAP's registrations of unrealized clusters

    # fvc's extras in headers; each cluster's events in version order
    versions: dict[str, int] = {}
    for record, body in zip(records, read, strict=True):
        assert record.headers["fvc.event_type"] == body["type"]
        if body["type"] == "END_OF_INPUT_RECORD":
            continue
        cluster, _, version = record.headers["fvc.event_id"].rpartition("@")
        assert record.headers["fvc.cluster_id"] == cluster
        assert int(version) > versions.get(cluster, 0), record.headers
        versions[cluster] = int(version)
        if body["type"] != "DELETE_EVENT":
            assert 0.0 < float(record.headers["fvc.coherence"]) <= 1.0
