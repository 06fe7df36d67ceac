"""A restore reads the real internal-state topic to its end over every kind of gap, or fails.

The topic is written the hard way: in transactions (each commit marker takes an offset that no
consumer sees, the last one at the very end of each partition), with an aborted transaction
(offsets skipped by a read_committed reader), tombstones, overwritten keys, records deleted
from the start of one partition (its low watermark above 0, as retention leaves a topic that
is ``compact,delete``) and one partition left empty.
"""

from __future__ import annotations

import asyncio
import subprocess
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from worker_support import FVC, Deployment, free_port

from app.engine import Cluster, ClusterId
from app.errors import RestoreIncomplete
from app.kafka_client import client_config, make_admin, make_consumer
from app.settings import Settings
from app.store import MemoryStore
from app.store.codec import encode_cluster
from app.worker import internal_state
from app.worker.internal_state import OFFSET_PREFIX, read_compacted, restore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6
WRITTEN = 5  # the last partition stays empty
CLUSTERS = 3000
INPUTS = 40  # stored input offsets, mirrored as ``offset:topic:partition`` keys
TRIMMED = 4  # the partition whose first records are deleted
TRANSACTION = 500


def cluster(i: int, version: int) -> Cluster:
    return Cluster.from_state(
        id=ClusterId(1000 + i, f"k{i}", "cam"),
        state=np.array([i, version, 1.0], dtype=np.float32),
        num_observations=version, realized=version > 1, first_time=1000 + i,
        last_time=2000 + i, streams=("cam",), retention_ms=0, version=version, pending=0,
        pending_since=1000 + i,
    )


@dataclass
class StateTopic:
    """A compacted topic as the worker writes it, and every committed record with its place."""

    settings: Settings
    topic: str
    committed: list[tuple[int, int, str, bytes]] = field(default_factory=list)

    def records(self) -> list[tuple[str, bytes]]:
        """Cluster versions, offsets, overwrites and tombstones, in the order they are written."""
        out = [(f"cam:k{i}", encode_cluster(cluster(i, 1))) for i in range(CLUSTERS)]
        out += [(f"cam:k{i}", encode_cluster(cluster(i, 2))) for i in range(0, CLUSTERS, 3)]
        out += [(f"cam:k{i}", b"") for i in range(0, CLUSTERS, 7)]  # deleted clusters
        for version in (10, 20):
            out += [(f"{OFFSET_PREFIX}in:{p}", str(version + p).encode()) for p in range(INPUTS)]
        return out

    def write(self) -> None:
        """Write ``records()`` in committed transactions, with one aborted one in between."""
        create(self.settings, self.topic)
        producer = Producer(client_config(self.settings, **{"transactional.id": self.topic}))
        producer.init_transactions(30)
        records = self.records()
        for start in range(0, len(records), TRANSACTION):
            self._transaction(producer, records[start : start + TRANSACTION], commit=True)
            if start == 0:
                junk = [(key, b"aborted") for key, _value in records[:200]]
                self._transaction(producer, junk, commit=False)

    def _transaction(
        self, producer: Producer, records: list[tuple[str, bytes]], commit: bool
    ) -> None:
        delivered: list[Message] = []
        producer.begin_transaction()
        for key, value in records:
            producer.produce(self.topic, value or None, key.encode(), partition=place(key),
                             on_delivery=lambda _err, msg: delivered.append(msg))
        producer.flush(30)
        if not commit:
            producer.abort_transaction(30)
            return
        producer.commit_transaction(30)
        self.committed += [(m.partition(), m.offset(), m.key().decode(), m.value() or b"")
                           for m in delivered]

    def trim(self, below: int) -> None:
        """Delete the records of partition ``TRIMMED`` below offset ``below``, as retention does."""
        admin = make_admin(self.settings)
        request = [TopicPartition(self.topic, TRIMMED, below)]
        for future in admin.delete_records(request).values():
            future.result(30)

    def latest(self) -> dict[str, bytes]:
        """What a complete read must find: the latest committed value still held, per key."""
        low = watermarks(self.settings, self.topic)[TRIMMED][0]
        latest: dict[str, bytes] = {}
        for partition, offset, key, value in sorted(self.committed):
            if partition != TRIMMED or offset >= low:
                latest[key] = value
        return {k: v for k, v in latest.items() if v}


def create(settings: Settings, topic: str) -> None:
    """A compacted topic whose start can be deleted too (Kafka deletes records only then)."""
    policy = {"cleanup.policy": "compact,delete", "retention.ms": "-1"}
    admin = make_admin(settings)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config=policy)])[topic].result(30)


def place(key: str) -> int:
    """Each key always in the same partition, and none in the last one."""
    return zlib.crc32(key.encode()) % WRITTEN


def watermarks(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    consumer: Consumer = make_consumer(settings)
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in range(PARTITIONS)}
    finally:
        consumer.close()


@pytest.fixture
def state(unique: str, kafka_bootstrap: str) -> StateTopic:
    """A written internal-state topic, its first records on one partition deleted."""
    topic = f"{unique}.state"
    written = StateTopic(Settings(kafka_bootstrap=kafka_bootstrap, internal_state_topic=topic),
                         topic)
    written.write()
    written.trim(below=100)
    return written


def test_restore_reads_exactly_every_record(state: StateTopic) -> None:
    bounds = watermarks(state.settings, state.topic)
    assert bounds[PARTITIONS - 1] == (0, 0)  # an empty partition
    assert bounds[TRIMMED][0] == 100  # a low watermark above 0
    expected = state.latest()
    assert read_compacted(state.settings, state.topic, timeout_s=30) == expected

    store = MemoryStore()
    clusters = asyncio.run(restore_into(store, state.settings))
    offsets = {k.removeprefix(OFFSET_PREFIX): int(v) for k, v in expected.items()
               if k.startswith(OFFSET_PREFIX)}
    assert clusters == len(expected) - len(offsets)
    assert clusters > CLUSTERS // 2  # tombstones and the trimmed records took the rest
    assert asyncio.run(store.offsets()) == offsets == {f"in:{p}": 20 + p for p in range(INPUTS)}


async def restore_into(store: MemoryStore, settings: Settings) -> int:
    await store.start()
    return await restore(settings, store)


def test_a_tiny_timeout_or_an_unreachable_broker_is_a_clear_error(state: StateTopic) -> None:
    with pytest.raises(RestoreIncomplete, match=f"internal-state topic '{state.topic}'"):
        read_compacted(state.settings, state.topic, timeout_s=0.001)
    nobody = state.settings.with_overrides(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with pytest.raises(RestoreIncomplete, match="end offsets were not readable") as caught:
        read_compacted(nobody, state.topic, timeout_s=2)
    assert "no partition was read; nothing was restored" in str(caught.value)


class GoesSilent:
    """A real consumer that delivers its first batch, then nothing: a broker that went away."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer, self.batches = consumer, 0

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        if self.batches:
            return []
        messages = self.consumer.consume(num_messages, timeout=timeout)
        self.batches += bool(messages)
        return messages

    def __getattr__(self, name: str) -> object:
        return getattr(self.consumer, name)


def test_a_read_cut_short_names_the_partitions_and_positions(
    state: StateTopic, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = internal_state.make_consumer
    monkeypatch.setattr(internal_state, "make_consumer", lambda *a, **k: GoesSilent(real(*a, **k)))
    with pytest.raises(RestoreIncomplete, match="no progress for 1s") as caught:
        read_compacted(state.settings, state.topic, timeout_s=1)
    error, bounds = caught.value, watermarks(state.settings, state.topic)
    assert 0 < error.records < len(state.committed)
    assert error.unfinished
    for partition, (position, end) in error.unfinished.items():
        assert bounds[partition][0] <= position < end == bounds[partition][1]


def test_a_worker_that_cannot_restore_exits_and_says_why(
    tmp_path, unique, kafka_bootstrap, redis_url
) -> None:
    deployment = Deployment(tmp_path, unique, kafka_bootstrap, redis_url, cameras=1,
                            partitions=2, clustering={"start_from_internal_state": True})
    try:
        StateTopic(deployment.settings, deployment.settings.internal_state_topic).write()
        worker = subprocess.run(
            [FVC, "worker", "--config", str(deployment.config_path)],
            env={**deployment.env, "FVC_BROKER_OUTAGE_S": "0.001"},
            capture_output=True, text=True, timeout=120,
        )
        assert worker.returncode == 2, worker.stdout + worker.stderr
        assert "this worker rebuilds it" in worker.stdout + worker.stderr
        assert (f"fvc worker: could not read internal-state topic "
                f"'{deployment.settings.internal_state_topic}'") in worker.stderr
        assert deployment.clusters() == {}
    finally:
        deployment.clear()
