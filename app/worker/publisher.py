"""Publishing outbox records to Kafka with confluent-kafka (librdkafka).

Used by the worker's outbox timer and by batch mode. librdkafka batches and sends in its own
threads, so queueing a record costs microseconds; ``flush`` waits for every delivery report off
the event loop and fails loudly if any record was refused (the outbox keeps it for a retry).

With ``FVC_OUTPUT_PROFILE=uvap`` every event goes to partition 0 of the downstream topic: its
records are keyed by input record, not by cluster, so one partition is what keeps a cluster's
events (and all of them) in the order they were stored.
"""

from __future__ import annotations

import asyncio

from confluent_kafka import Producer

from app.errors import FvcError
from app.kafka_client import make_producer
from app.settings import Settings
from app.store.base import OutboxRecord

FLUSH_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 3.0
# Only failed deliveries call back into Python. A callback per record makes the flushing thread
# take the GIL once per record from the busy event loop: flushes of 300-1,500 records took
# 90-215 ms in a loaded worker with callbacks for every record, mostly 8-30 ms without.
REPORT_ONLY_ERRORS = {"delivery.report.only.error": True}


class PublishFailed(FvcError):
    """Kafka refused records: they stay in the outbox and are sent again on the next round."""


class Publisher:
    """Sends outbox records in order; ``flush`` confirms them all or raises PublishFailed."""

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.settings = settings
        self.producer = producer or make_producer(settings, **REPORT_ONLY_ERRORS)
        self._failures: list[str] = []

    async def send(self, record: OutboxRecord) -> None:
        """Queue one record (an empty value is a tombstone)."""
        topic = record.topic or self.settings.output_topic
        placed = {"partition": 0} if self._one_partition(topic) else {}
        self.producer.produce(
            topic,
            key=record.key or None,
            value=record.value or None,
            timestamp=record.timestamp,
            headers=list(record.headers) or None,
            on_delivery=self._delivered,
            **placed,
        )
        self.producer.poll(0)

    def _one_partition(self, topic: str) -> bool:
        return self.settings.output_profile == "uvap" and topic == self.settings.output_topic

    async def flush(self) -> None:
        """Wait for every queued record to be acknowledged by Kafka."""
        left = await asyncio.to_thread(self.producer.flush, FLUSH_TIMEOUT_S)
        failures, self._failures = self._failures, []
        if left or failures:
            first = failures[0] if failures else f"{left} still queued after {FLUSH_TIMEOUT_S}s"
            message = f"{len(failures) + left} records not published: {first}"
            raise PublishFailed(message)

    def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        """Ask a broker for the cluster's metadata; raises KafkaException when none answers.

        Blocks up to ``timeout_s``: call it off the event loop.
        """
        self.producer.list_topics(timeout=timeout_s)

    def _delivered(self, error: object, _message: object) -> None:
        if error is not None:
            self._failures.append(str(error))
