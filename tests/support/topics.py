"""Reading a real topic to its end, and a live run's answer from its topics.

Each read assigns every partition from the beginning and stops at the end offsets seen at the
start, so what it returns does not depend on how long a poll waits.
"""

from __future__ import annotations

import time

import orjson
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from app.kafka_client import make_consumer, raise_if_fatal
from app.settings import Settings
from tests.support.replay import LiveAnswer

Events = dict[str, bytes]  # event_id -> the record's value
END_OF_INPUT = "END_OF_INPUT_RECORD"


def read_to_end(settings: Settings, topic: str, timeout: float = 60.0) -> list[bytes]:
    """The value of every record of ``topic`` up to its end now, partition by partition."""
    consumer = make_consumer(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                message = f"{topic}: partitions {sorted(ends)} not read to their end in {timeout}s"
                raise AssertionError(message)
            for m in consumer.consume(1000, timeout=0.5):
                error = m.error()
                if error is not None:
                    raise_if_fatal(error)
                    continue
                p, offset = m.partition(), m.offset()
                if p is None or offset is None or p not in ends or offset >= ends[p]:
                    continue
                out.append(m.value() or b"")
                if offset + 1 >= ends[p]:
                    del ends[p]
        return out
    finally:
        consumer.close()


def last_offsets(settings: Settings, topics: list[str]) -> dict[str, int]:
    """The last offset of every partition of ``topics`` that holds records, by ``topic:partition``.

    What a run that applied every record has stored as its input offsets.
    """
    consumer = make_consumer(settings)
    try:
        out = {}
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            for p in sorted(metadata.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    out[f"{topic}:{p}"] = high - 1
        return out
    finally:
        consumer.close()


def live_run(settings: Settings, assignments_topic: str) -> tuple[LiveAnswer, Events, int]:
    """A run's assignments resolved through its MERGE events; its events by id; END records.

    Events are keyed by their id (``cluster@version``); the same id twice with two values is
    a broken promise of the product (an id names one version of one cluster), so it fails here.
    END_OF_INPUT_RECORDs (batch mode's last records) are counted, not kept.
    """
    answer = LiveAnswer()
    for value in read_to_end(settings, assignments_topic):
        answer.assignment(value)
    events: Events = {}
    ends = 0
    for value in read_to_end(settings, settings.output_topic):
        body = orjson.loads(value)
        if body["type"] == END_OF_INPUT:
            ends += 1
            continue
        answer.event(value)
        seen = events.setdefault(body["event_id"], value)
        assert seen == value, f"event {body['event_id']} published with two different values"
    return answer, events, ends
