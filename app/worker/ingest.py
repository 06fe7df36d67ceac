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
read here, in their own consumer group (``Settings.ingest_group``), whose lag ``report_lag``
reports as the Faust lag timer reports the agent's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_INVALID, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from app.background import Background
from app.kafka_client import ADMIN_TIMEOUT_S, make_admin, make_consumer, records_of
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

    def __init__(
        self, runtime: Runtime, loop: asyncio.AbstractEventLoop,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.runtime, self.loop, self.exit_process = runtime, loop, exit_process
        self.settings = runtime.settings
        self._held: list[TopicPartition] = []  # the partitions assigned, for report_lag
        self._admin: AdminClient | None = None  # report_lag's own client, made on first use
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
            consumer.subscribe(list(self.runtime.config.topics),
                               on_assign=self._assigned, on_revoke=self._revoked)
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

    def report_lag(self) -> None:
        """Feed ``fvc_consumer_lag`` for each partition this reader holds; waits for the broker.

        The worker calls it in a thread of its own on the lag timer's interval
        (agents/ingest.py), not this reader's thread between batches: a batch waiting out a
        store outage or an invalid config holds that thread, and the lag must go on growing
        meanwhile. Nor does it ask the reader's consumer: confluent-kafka lets one thread at a
        time into a consumer, and a caller beside ``consume`` starves (it hung the event loop).
        So an admin client of its own asks for every high watermark in one request.
        """
        held = self._held
        if not held:
            return
        self._admin = self._admin or make_admin(self.settings)
        futures = self._admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in held}, request_timeout=ADMIN_TIMEOUT_S
        )
        applied = self.runtime.pipeline.applied
        for tp, future in futures.items():
            key = position(tp.topic, tp.partition)
            self.runtime.metrics.record_lag(key, future.result().offset, applied.get(key))

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each partition right after the offset applied to the state in Redis."""
        self._on_loop(self.runtime.pipeline.load_offsets())
        applied = self.runtime.pipeline.applied
        for tp in partitions:
            stored = applied.get(position(tp.topic, tp.partition))
            tp.offset = OFFSET_INVALID if stored is None else stored + 1
        consumer.assign(partitions)
        self._held = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        self.runtime.assigned = len(partitions)
        log.info("assigned %d partitions", len(partitions))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Stop reporting the lag of partitions handed back (librdkafka then unassigns them)."""
        self._held = []

    def _on_loop(self, coroutine: Any) -> Any:
        """Run a coroutine on the worker's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
