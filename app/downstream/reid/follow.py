"""The downstream topic into the view: read from the beginning at start, then followed.

The topic is read with ``assign`` on every partition from its first offset, in a one-off consumer
group that never commits: the view is rebuilt from the events each time the service starts, so
no broker-side state could make a restart skip part of it. Readiness means "caught up with the
end offsets the topic had at start": until then an answer could miss identities everyone else
already knows about. A blocking confluent-kafka consumer runs on its own thread so a large
catch-up never stalls the HTTP endpoints.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from app.background import Background
from app.codec.decode import decode_event
from app.codec.encode import EVENT_ID_HEADER
from app.downstream.reid.metrics import ReidMetrics
from app.downstream.reid.state import ReidState
from app.errors import DecodeError
from app.kafka_client import make_consumer, records_of
from app.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.2
LAG_EVERY_S = 1.0
WAIT_TOPIC_S = 1.0


class Follower(Background):
    """Keeps a ReidState current with one topic of cluster events, on a thread of its own."""

    def __init__(
        self, settings: Settings, topic: str, state: ReidState, metrics: ReidMetrics,
        *, batch: int = 2000,
    ) -> None:
        self.settings, self.topic, self.state, self.metrics = settings, topic, state, metrics
        self.batch = batch
        self.ready = threading.Event()
        self.status = "starting"
        self.failure = ""  # why the thread died, if it did
        self.ends: dict[int, int] = {}  # end offset of each partition when reading began
        self.positions: dict[int, int] = {}  # next offset to read, per partition
        self.lag = 0
        super().__init__("fvc-reid-follow")

    def stats(self) -> dict[str, Any]:
        """What ``/stats`` and ``/ready`` tell about the reading."""
        ends, positions = dict(self.ends), dict(self.positions)  # copies: the thread writes
        return {
            "topic": self.topic, "status": self.status, "ready": self.ready.is_set(),
            "lag": self.lag, "end_offsets_at_start": {str(p): o for p, o in ends.items()},
            "positions": {str(p): o for p, o in positions.items()},
        }

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as exc:  # noqa: BLE001 - reported by /health, which makes it restart
            log.exception("following %s failed", self.topic)
            self.failure = f"{type(exc).__name__}: {exc}"
            self.status = "failed"

    def _follow(self) -> None:
        consumer = make_consumer(self.settings, from_beginning=True)
        try:
            partitions = self._wait_for_topic(consumer)
            if partitions is None:
                return
            self._assign(consumer, partitions)
            self.status = "catching up"
            last_lag = 0.0
            while not self._stop.is_set():
                self._apply(consumer.consume(self.batch, timeout=POLL_S))
                if not self.ready.is_set():
                    self._check_caught_up(consumer)
                if time.monotonic() - last_lag >= LAG_EVERY_S:
                    self._measure_lag(consumer)
                    last_lag = time.monotonic()
        finally:
            consumer.close()

    def _wait_for_topic(self, consumer: Consumer) -> list[int] | None:
        """The topic's partitions once it exists (the workers create it); None if stopped."""
        while not self._stop.is_set():
            before = self.status
            try:
                topics = consumer.list_topics(timeout=10).topics
            except KafkaException as exc:
                self.status = f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc}"
            else:
                found = topics.get(self.topic)
                if found is not None and found.partitions:
                    return sorted(found.partitions)
                self.status = f"waiting for topic {self.topic!r} to exist"
            if self.status != before:
                log.warning("%s", self.status)
            self._stop.wait(WAIT_TOPIC_S)
        return None

    def _assign(self, consumer: Consumer, partitions: list[int]) -> None:
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            self.positions[p], self.ends[p] = low, high
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        total = sum(self.ends[p] - self.positions[p] for p in partitions)
        log.info("reading %s: %d partitions, %d records to catch up", self.topic,
                 len(partitions), total)

    def _apply(self, messages: list) -> None:
        events = []
        for message in records_of(messages):
            self.positions[message.partition()] = message.offset() + 1
            try:
                event = decode_event(message.value() or b"")
                take_event_id(event, message.headers())
            except DecodeError as exc:
                self.metrics.bad_events.inc()
                log.warning("skipped a record of %s at partition %d offset %d: %s", self.topic,
                            message.partition(), message.offset(), exc)
                continue
            self.metrics.events.labels(str(event.get("type", "unknown"))).inc()
            events.append(event)
        if events:
            refused = self.state.apply(events)
            self.metrics.bad_events.inc(refused)
            self.metrics.clusters.set(len(self.state))

    def _check_caught_up(self, consumer: Consumer) -> None:
        """Ready once every partition was read up to its end offset at start."""
        assigned = [TopicPartition(self.topic, p) for p in self.ends]
        for tp in consumer.position(assigned):  # moves past gaps no message reports
            if tp.offset >= 0:
                self.positions[tp.partition] = max(self.positions[tp.partition], tp.offset)
        if all(self.positions[p] >= end for p, end in self.ends.items()):
            self._measure_lag(consumer)
            self.status = "following"
            self.ready.set()
            self.metrics.ready.set(1)
            log.info("caught up with %s: %d realized clusters", self.topic, len(self.state))

    def _measure_lag(self, consumer: Consumer) -> None:
        lag = 0
        for p, position in self.positions.items():
            _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            lag += max(0, max(high, self.ends[p]) - position)
        self.lag = lag
        self.metrics.lag.set(lag)


def take_event_id(event: dict[str, Any], headers: list[tuple[str, bytes]] | None) -> None:
    """The uvap profile's records carry their ``event_id`` in a header: the view needs it."""
    if "event_id" in event:
        return
    for name, value in headers or ():
        if name == EVENT_ID_HEADER:
            event["event_id"] = value.decode("utf-8", errors="replace")
