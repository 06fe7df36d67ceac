"""A restore reads the internal-state topic to the ends seen at its start, or fails out loud.

A fake consumer stands in for librdkafka: each partition is a log with gaps (compacted-away
offsets, transaction markers), and reaching a log's end yields an end-of-partition event, as
``enable.partition.eof`` does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from fakes import make_config, make_settings

from app.errors import RestoreIncomplete
from app.store import MemoryStore
from app.worker import internal_state
from app.worker.internal_state import read_compacted
from app.worker.runtime import Runtime

TOPIC = "state"


@dataclass
class Message:
    """What ``consume`` hands over: a record, or an error such as the end of a partition."""

    partition_: int
    offset_: int
    key_: bytes | None = None
    value_: bytes | None = None
    error_: KafkaError | None = None

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def error(self) -> KafkaError | None:
        return self.error_


@dataclass
class Log:
    """One partition: its records by offset, and where it starts and ends."""

    low: int
    high: int
    records: dict[int, tuple[bytes, bytes | None]] = field(default_factory=dict)


class FakeConsumer:
    """Serves ``logs`` in chunks of ``chunk``; after ``stall_after`` records it goes silent."""

    def __init__(self, logs: dict[int, Log], chunk: int = 2, stall_after: int | None = None):
        self.logs, self.chunk, self.stall_after = logs, chunk, stall_after
        self.positions: dict[int, int] = {}
        self.assigned: list[tuple[int, int]] = []
        self.delivered = 0
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        partitions = dict.fromkeys(self.logs)
        return SimpleNamespace(topics={TOPIC: SimpleNamespace(partitions=partitions, error=None)})

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float, cached: bool
    ) -> tuple[int, int]:
        log = self.logs[tp.partition]
        return log.low, log.high

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(tp.partition, tp.offset) for tp in partitions]
        self.positions = dict(self.assigned)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        for partition, position in self.positions.items():
            out += self._next(partition, position)
        return out

    def _next(self, partition: int, position: int) -> list[Message]:
        if self.stall_after is not None and self.delivered >= self.stall_after:
            return []
        log, out = self.logs[partition], []
        end = max([log.high, *(offset + 1 for offset in log.records)])  # now, not at the start
        while position < end and len(out) < self.chunk:
            if position in log.records:
                key, value = log.records[position]
                out.append(Message(partition, position, key, value))
                self.delivered += 1
            position += 1
        if position >= end and not out:
            out.append(Message(partition, end, error_=KafkaError(KafkaError._PARTITION_EOF)))
        self.positions[partition] = position
        return out

    def close(self) -> None:
        self.closed = True


def serve(monkeypatch: pytest.MonkeyPatch, consumer: FakeConsumer) -> None:
    """Make ``read_compacted`` read from ``consumer``."""
    monkeypatch.setattr(internal_state, "make_consumer", lambda *_a, **_kw: consumer)


def gappy_logs() -> dict[int, Log]:
    """Three partitions: gaps and a gap at the tail, an empty one, one whose start was deleted.

    Partition 0 also holds a record written after the read began (offset 12, past its end 12).
    """
    return {
        0: Log(0, 12, {0: (b"a", b"1"), 1: (b"b", b"1"), 5: (b"a", b"2"), 9: (b"c", b""),
                       12: (b"late", b"x")}),
        1: Log(7, 7),
        2: Log(3, 6, {3: (b"d", b"1"), 5: (b"e", b"1")}),
    }


def test_every_partition_is_read_to_its_end_over_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = FakeConsumer(gappy_logs())
    serve(monkeypatch, consumer)
    latest = read_compacted(make_settings(), TOPIC, timeout_s=5)
    # latest value per key, tombstone (c) dropped, the record past the end left out
    assert latest == {"a": b"2", "b": b"1", "d": b"1", "e": b"1"}
    assert consumer.assigned == [(0, 0), (2, 3)]  # from the low watermark; the empty one done
    assert consumer.closed


def test_an_empty_or_missing_topic_is_read_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = FakeConsumer({0: Log(0, 0), 1: Log(4, 4)}, stall_after=0)
    serve(monkeypatch, consumer)
    assert read_compacted(make_settings(), TOPIC, timeout_s=60) == {}
    assert consumer.assigned == []
    missing = FakeConsumer({})
    missing.list_topics = lambda topic, timeout: SimpleNamespace(topics={})
    serve(monkeypatch, missing)
    assert read_compacted(make_settings(), TOPIC, timeout_s=60) == {}


def test_a_read_that_stops_short_says_how_far_it_got(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, FakeConsumer(gappy_logs(), chunk=1, stall_after=2))
    with pytest.raises(RestoreIncomplete) as caught:
        read_compacted(make_settings(), TOPIC, timeout_s=0.2)
    error = caught.value
    assert error.topic == TOPIC and error.records == 2
    assert error.unfinished == {0: (1, 12), 2: (4, 6)}
    assert str(error) == (
        "could not read internal-state topic 'state' to its end (no progress for 0.2s); "
        "2 records read, partitions short of their end (position/end): 0 at 1/12, 2 at 4/6; "
        "nothing was restored"
    )


def test_unreadable_end_offsets_are_an_error_too(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = FakeConsumer(gappy_logs())

    def unreachable(tp: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    consumer.get_watermark_offsets = unreachable
    serve(monkeypatch, consumer)
    with pytest.raises(RestoreIncomplete, match="no partition was read") as caught:
        read_compacted(make_settings(), TOPIC, timeout_s=1)
    assert "end offsets were not readable" in str(caught.value)
    assert consumer.closed


def test_progress_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(internal_state, "PROGRESS_EVERY_S", 0.0)
    serve(monkeypatch, FakeConsumer(gappy_logs(), chunk=1))
    with caplog.at_level(logging.INFO, logger=internal_state.__name__):
        read_compacted(make_settings(), TOPIC, timeout_s=5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "reading state to its end: 15 offsets in 3 partitions"
    progress = "reading state: {} records read, {} of 15 offsets ({}), {} of 3 partitions done"
    assert lines[1] == progress.format(2, 2, "13%", 1)
    assert lines[-2] == progress.format(6, 15, "100%", 3)
    assert lines[-1].startswith("read state to its end: 6 records in ")


async def test_a_worker_whose_restore_fails_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_config().to_dict()
    data["clustering_config"]["start_from_internal_state"] = True
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    serve(monkeypatch, FakeConsumer({0: Log(0, 3, {0: (b"k", b"cluster")})}, stall_after=1))
    store = MemoryStore()
    settings = make_settings(FVC_INTERNAL_STATE_TOPIC=TOPIC, FVC_BROKER_OUTAGE_S="0.2")
    runtime = Runtime(settings, str(path), store=store)
    with pytest.raises(RestoreIncomplete, match="0 at 1/3"):
        await runtime.start(recover=True)
    assert not runtime.ready
    assert await store.count() == 0 and await store.offsets() == {}
    assert await store.generation() is None, "the claim is let go: a restart retries at once"
