"""Batch mode: process the input topics from a start point to their end at start, then stop.

Reads with confluent-kafka on explicitly assigned partitions (no consumer group), in event-time
order across them (app/worker/event_order.py), through the same pipeline as a worker: its
event-time timers run as the watermark passes them, and once more at the end of the input.
Then it publishes the outbox and finishes with ``END_OF_INPUT_RECORD``. Offsets stored with the
state make a second run over the same input a no-op, so a batch run can be repeated safely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from app.engine import Event, EventType
from app.kafka_client import make_consumer, make_producer
from app.worker.event_order import EventOrder
from app.worker.pipeline import RawRecord
from app.worker.publisher import REPORT_ONLY_ERRORS, Publisher
from app.worker.runtime import Runtime
from app.worker.window_gate import WindowGate

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 1.0
PAUSE_AFTER_BATCHES = 8  # records a partition may hold back, in batches, before it pauses


@dataclass(frozen=True)
class BatchReport:
    """What a batch run did."""

    records: int
    dead_letters: int
    clusters: int
    events: int


async def run_batch(
    runtime: Runtime, since_ms: int | None = None, progress: Callable[[int], None] | None = None
) -> BatchReport:
    """Process every input record up to the end offsets seen at start; returns a report."""
    settings = runtime.settings
    runtime.create_topics()
    await runtime.start()
    consumer = make_consumer(settings)
    producer = make_producer(settings, **REPORT_ONLY_ERRORS)
    try:
        ends = _assign(consumer, runtime.config.topics, since_ms)
        records, dead = await _consume(runtime, consumer, ends, progress)
        await runtime.tick()
        events = await _publish_all(runtime, producer)
        await _end_of_input(runtime, producer)
    finally:
        consumer.close()
        await runtime.stop()
    return BatchReport(records, dead, len(runtime.engine.clusters), events + 1)


def _assign(consumer: Consumer, topics: tuple[str, ...], since_ms: int | None) -> dict:
    """Assign every partition from the start point; returns the end offset of each."""
    metadata = consumer.list_topics(timeout=30)
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(metadata.topics[topic].partitions)
    ]
    if since_ms is not None:
        wanted = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in partitions]
        partitions = consumer.offsets_for_times(wanted, timeout=30)
    else:
        partitions = [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions]
    ends = {}
    for tp in partitions:
        _, high = consumer.get_watermark_offsets(tp, timeout=30)
        if high > 0 and tp.offset != -1:  # -1: no record at or after since_ms
            ends[(tp.topic, tp.partition)] = high
    consumer.assign([tp for tp in partitions if (tp.topic, tp.partition) in ends])
    return ends


async def _consume(
    runtime: Runtime, consumer: Consumer, ends: dict, progress: Callable[[int], None] | None
) -> tuple[int, int]:
    """Hand the records to the runtime in event-time order, in batches; returns counts.

    A partition read far ahead of the others is paused until they catch up, so the records
    held back for their turn stay a few batches.
    """
    batch_size = runtime.settings.batch_size
    streams = {s.topic: s.stream_id for s in runtime.config.streams}
    order = EventOrder(ends, stream_of=lambda topic: streams.get(topic, topic))
    paused: set[tuple[str, int]] = set()
    total = dead = 0
    pending: list[RawRecord] = []
    config = runtime.config
    gate = WindowGate(config.deferral_ms, config.max_window_size)  # deferred: whole windows
    while not order.done:
        for m in consumer.consume(batch_size, timeout=POLL_TIMEOUT_S):
            if not m.error():
                order.add(RawRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                                    m.timestamp()[1]))
        _pace(consumer, order, ends, paused, limit=PAUSE_AFTER_BATCHES * batch_size)
        ready = order.ready()
        if gate.deferral_ms:
            batches = gate.batches(ready, 0.0, batch_size, ended=order.done)
        else:
            pending += ready
            batches = []
            while len(pending) >= batch_size or (pending and order.done):
                batches.append(pending[:batch_size])
                pending = pending[batch_size:]
        for batch in batches:
            outcome = await runtime.handle(batch)
            total += len(batch)
            dead += len(outcome.dead_letters)
            if progress is not None:
                progress(len(batch))
    return total, dead


def _pace(
    consumer: Consumer,
    order: EventOrder,
    partitions: dict,
    paused: set[tuple[str, int]],
    limit: int,
) -> None:
    """Pause partitions holding more than ``limit`` records back; resume them below half."""
    for where in partitions:
        held = order.buffered(where)
        if where not in paused and held > limit:
            consumer.pause([TopicPartition(*where)])
            paused.add(where)
        elif where in paused and held <= limit // 2:
            consumer.resume([TopicPartition(*where)])
            paused.discard(where)


async def _publish_all(runtime: Runtime, producer: Producer) -> int:
    publisher = Publisher(runtime.settings, producer)
    published = 0
    while count := await runtime.publish(publisher.send, publisher.flush):
        published += count
    return published


async def _end_of_input(runtime: Runtime, producer: Producer) -> None:
    """END_OF_INPUT_RECORD on every partition, so each reader sees it after its last event."""
    topic = runtime.settings.output_topic
    watermark = runtime.engine.watermark
    event = Event(EventType.END_OF_INPUT_RECORD, f"END_OF_INPUT@{watermark}", watermark)
    (record,) = runtime.pipeline.outbox.event_records([event])  # the output profile's shape
    partitions = producer.list_topics(topic, timeout=30).topics[topic].partitions
    for partition in sorted(partitions):
        producer.produce(topic, key=None, value=record.value, partition=partition,
                         timestamp=watermark, headers=list(record.headers))
    producer.flush(30)


__all__ = ["BatchReport", "run_batch"]
