"""Bulk ingest: camera topics read in batches by a librdkafka consumer beside the event loop.

Faust delivers records one at a time through its stream machinery, 140-200 µs of Python per
record on a 2-core machine (5,000-7,200 records/s with nothing else to do, against 360,000 for
``consume(n)``: ``benchmarks/ingest.py``), about what the engine spends on one.
``FVC_INGEST=bulk`` reads the same topics with confluent-kafka's ``consume(n)`` instead
(records come back from C in one call) and hands each batch to ``Runtime.handle`` on the
worker's event loop, one batch at a time, so the order and the exactly-once rules are those of
the Faust path:

- the state and each partition's last applied offset are committed to Redis atomically by the
  pipeline, which drops records at or below that offset;
- on assignment the applied offsets are reloaded and each partition starts right after its own;
- Kafka offsets are stored only after a batch is handled (they only serve monitoring and
  partitions Redis has no offset for); a batch that cannot be handled ends the process before
  any offset is stored, as the Faust path does.

Faust still runs the timers, the web pages and the leader election; only the camera topics are
read here, in their own consumer group (``Settings.ingest_group``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_INVALID, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

from app.background import Background
from app.kafka_client import make_consumer, records_of
from app.worker.pipeline import RawRecord, position

if TYPE_CHECKING:
    from app.worker.runtime import Runtime

log = logging.getLogger(__name__)

EXIT_UNRECOVERABLE = 70


def raw_record(message: Any) -> RawRecord:
    """A confluent-kafka message as the pipeline's record."""
    kind, stamp = message.timestamp()
    return RawRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        value=message.value(),
        timestamp=0 if kind == TIMESTAMP_NOT_AVAILABLE else stamp,
    )


def next_offsets(records: Sequence[RawRecord]) -> list[TopicPartition]:
    """Per partition, the offset after the last record: what to store once handled."""
    last: dict[tuple[str, int], int] = {}
    for record in records:
        position = (record.topic, record.partition)
        last[position] = max(last.get(position, -1), record.offset)
    return [TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in last.items()]


class BulkIngest(Background):
    """Consumes the camera topics in batches and runs each through ``runtime.handle``."""

    poll_s = 0.2

    def __init__(
        self, runtime: Runtime, loop: asyncio.AbstractEventLoop,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.runtime, self.loop, self.exit_process = runtime, loop, exit_process
        self.settings = runtime.settings
        super().__init__("fvc-bulk-ingest")

    def _run(self) -> None:
        consumer = make_consumer(
            self.settings, self.settings.ingest_group, from_beginning=True,
            **{
                "enable.auto.offset.store": False,
                "session.timeout.ms": int(self.settings.group_session_timeout_s * 1000),
                "heartbeat.interval.ms": int(self.settings.group_heartbeat_s * 1000),
            },
        )
        try:
            consumer.subscribe(list(self.runtime.config.topics), on_assign=self._assigned)
            while not self._stop.is_set():
                messages = consumer.consume(self.settings.batch_size,
                                            timeout=self.settings.batch_timeout_s)
                if messages:
                    self._handle(consumer, messages)
        except Exception:
            log.exception("bulk ingest failed; exiting so the batch is read again on restart")
            self.exit_process(EXIT_UNRECOVERABLE)
        finally:
            consumer.close()

    def _handle(self, consumer: Consumer, messages: list) -> None:
        records = [raw_record(message) for message in records_of(messages)]
        if not records:
            return
        self._on_loop(self.runtime.handle(records))
        consumer.store_offsets(offsets=next_offsets(records))

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each partition right after the offset applied to the state in Redis."""
        self._on_loop(self.runtime.pipeline.load_offsets())
        applied = self.runtime.pipeline.applied
        for tp in partitions:
            stored = applied.get(position(tp.topic, tp.partition))
            tp.offset = OFFSET_INVALID if stored is None else stored + 1
        consumer.assign(partitions)
        self.runtime.assigned = len(partitions)
        log.info("assigned %d partitions", len(partitions))

    def _on_loop(self, coroutine: Any) -> Any:
        """Run a coroutine on the worker's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
