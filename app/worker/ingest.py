"""Bulk ingest: camera topics read in batches by a librdkafka consumer beside the event loop.

Faust delivers records one at a time through its stream machinery, 140-200 µs of Python per
record on a 2-core machine (5,000-7,200 records/s with nothing else to do, against 360,000 for
``consume(n)``: ``benchmarks/ingest.py``), about what the engine spends on one.
``FVC_INGEST=bulk`` reads the same topics with confluent-kafka's ``consume(n)`` instead
(records come back from C in one call) and hands them to ``Runtime.handle`` on the worker's
event loop, one batch at a time, in event-time order across its partitions
(app/worker/live_order.py), with the exactly-once rules of the Faust path:

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
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_INVALID, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from app.background import Background
from app.errors import StoreLost, StoreUnavailable
from app.kafka_client import ADMIN_TIMEOUT_S, make_admin, make_consumer, records_of
from app.worker.live_order import LiveOrder
from app.worker.pipeline import RawRecord, position
from app.worker.window_gate import WindowGate

if TYPE_CHECKING:
    from app.worker.runtime import Runtime

log = logging.getLogger(__name__)

EXIT_UNRECOVERABLE = 70
HOLD_BACK_S = 1.0  # how long a partition with more to read may hold the others back
HOLD_BATCHES = 8  # records a partition may have waiting, in batches, before it is paused
METADATA_TIMEOUT_S = 10.0
ASK_EVERY_S = 0.05  # how often records waiting for the other workers ask where they are
REPUBLISH_S = 0.5  # how often unchanged frontiers are published again (well inside 2 s)


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
        self._streams_of: tuple[object, dict[str, str]] = (None, {})
        self._order = LiveOrder(self._stream_of, wait_s=HOLD_BACK_S)
        self._gate = WindowGate(0, 1)  # an open window's records (deferral set per batch)
        self._paused: set[tuple[str, int]] = set()
        self._bounded = False  # records wait for the other workers: ask the store for them
        self._topics: tuple[str, ...] | None = None  # a reload's new topics, to subscribe to
        self._subscribed: tuple[str, ...] = ()
        self._asked = 0.0
        self._published: tuple[dict[tuple[str, int], int], float] = ({}, 0.0)
        self._publishing: concurrent.futures.Future[None] | None = None
        super().__init__("fvc-bulk-ingest")

    def _follow(self, topics: tuple[str, ...]) -> None:
        """A reload changed the streams: subscribe to their topics (in the reader's thread)."""
        if topics != self._subscribed:
            self._subscribed = self._topics = topics

    def _stream_of(self, topic: str) -> str:
        """The stream a topic feeds, for the event-time order (looked up per record)."""
        config = self.runtime.config
        if config is not self._streams_of[0]:  # built once per config, not once per record
            self._streams_of = (config, {s.topic: s.stream_id for s in config.streams})
        return self._streams_of[1].get(topic, topic)

    def _run(self) -> None:
        consumer = make_consumer(
            self.settings, self.settings.ingest_group, from_beginning=True,
            **{
                "enable.auto.offset.store": False,
                "session.timeout.ms": int(self.settings.group_session_timeout_s * 1000),
                "heartbeat.interval.ms": int(self.settings.group_heartbeat_s * 1000),
            },
        )
        self._subscribed = self.runtime.config.topics
        self.runtime.on_topics.append(self._follow)
        try:
            if self._subscribed:  # none while the config is invalid: a valid one sets them
                consumer.subscribe(list(self._subscribed),
                                   on_assign=self._assigned, on_revoke=self._revoked)
            while not self._stop.is_set():
                if (topics := self._topics) is not None:
                    self._topics = None
                    log.info("subscribing to %s", ", ".join(topics))
                    consumer.subscribe(list(topics), on_assign=self._assigned,
                                       on_revoke=self._revoked)
                if not self._subscribed:
                    self._stop.wait(self.settings.batch_timeout_s)
                    continue
                messages = consumer.consume(self.settings.batch_size,
                                            timeout=self.settings.batch_timeout_s)
                now = time.monotonic()
                self._order.add([raw_record(m) for m in records_of(messages)], now)
                if len(self._order) or len(self._gate):
                    self._handle(consumer, now)
                self._publish(consumer, time.monotonic())
        except StoreLost as exc:  # from a batch handled again before a store call of this thread
            self.runtime.store_lost(exc)
        except Exception:
            log.exception("bulk ingest failed; exiting so the batch is read again on restart")
            self.exit_process(EXIT_UNRECOVERABLE)
        finally:
            consumer.close()

    def _handle(self, consumer: Consumer, now: float) -> None:
        """Handle what is read in event-time order, in batches, as far as it is known.

        Records wait (app/worker/live_order.py) while a partition with more to read may hold
        an earlier one, and past the other workers' frontiers plus ``FVC_LOOKAHEAD_MS``. Only
        handled records' offsets are stored: one still waiting when the partition moves is
        read again by its next owner from the offsets stored with the state.
        """
        mine = {position(t, p) for t, p in self._assignment()}
        ask = self._bounded and now - self._asked >= ASK_EVERY_S
        if ask:
            self._asked = now
        try:
            bound = self._on_loop(self.runtime.pipeline.release_bound(mine, refresh=ask))
        except StoreUnavailable:  # the batch's own commit waits the outage out; hold on to it
            return
        released = self._order.release(self._highwater(consumer), bound, now)
        self._bounded = bound is not None and len(self._order) > 0
        for batch in self._batches(released, now):
            if bound is not None:  # others decide beside this worker: see their clusters first
                with contextlib.suppress(StoreUnavailable):  # the commit waits the outage out
                    self._on_loop(self.runtime.follow_changes())
            self._on_loop(self.runtime.handle(batch))
            consumer.store_offsets(offsets=next_offsets(batch))
        self._pace(consumer)

    def _batches(self, released: list[RawRecord], now: float) -> list[list[RawRecord]]:
        """Released records in batches of ``FVC_BATCH_SIZE``, or windows once complete.

        With deferred decisions each window goes whole (app/worker/window_gate.py).
        """
        gate = self._gate
        config = self.runtime.config
        gate.deferral_ms, gate.limit = config.deferral_ms, config.max_window_size
        if not gate.deferral_ms and not len(gate):
            size = self.settings.batch_size
            return [released[start : start + size] for start in range(0, len(released), size)]
        return gate.batches(released, now, self.settings.batch_size)

    def _publish(self, consumer: Consumer, now: float) -> None:
        """Tell the other workers where this one's partitions stand, once they moved.

        Published once the batches before them are stored, so another worker never decides
        past a record whose clusters it cannot read yet; this thread does not wait for that,
        and a round still waiting holds the next one back. At most every
        ``ASK_EVERY_S`` (a round trip per batch would cost a busy worker), and repeated every
        ``REPUBLISH_S`` while unchanged: a frontier older than the pipeline's active window
        stops holding anyone back.
        """
        if self._publishing is not None:
            if not self._publishing.done():  # still waiting for the commit before it
                return
            self._publishing.result()  # an unexpected failure ends the reader, as elsewhere
        since = now - self._published[1]
        if since < ASK_EVERY_S:  # no more often than the others ask for them
            return
        frontiers = self._order.frontiers(self._highwater(consumer), now)
        if frontiers == self._published[0] and since < REPUBLISH_S:
            return
        # not waited for here: this thread reads the next batch while the commit completes
        self._publishing = asyncio.run_coroutine_threadsafe(
            self._publish_stored(frontiers, now), self.loop
        )

    async def _publish_stored(self, frontiers: dict[tuple[str, int], int], now: float) -> None:
        """Publish ``frontiers`` once the batches before them are stored (see ``_publish``)."""
        with contextlib.suppress(StoreUnavailable):  # the next round publishes them again
            if await self.runtime.pipeline.publish_frontiers(frontiers):
                self._published = (frontiers, now)

    def _every_partition(self, consumer: Consumer) -> list[str]:
        """Every partition of the input topics, whichever worker reads it."""
        topics = self.runtime.config.topics
        listed = consumer.list_topics(timeout=METADATA_TIMEOUT_S).topics
        return [position(t, p) for t in topics if t in listed for p in listed[t].partitions]

    def _assignment(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in self._held]

    def _highwater(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        """Each held partition's high watermark as the last fetch reported it (no request)."""
        out = {}
        for where in self._assignment():
            _, high = consumer.get_watermark_offsets(TopicPartition(*where), cached=True)
            if high >= 0:
                out[where] = high
        return out

    def _pace(self, consumer: Consumer) -> None:
        """Pause a partition far ahead of the others (its records wait); resume it below half."""
        limit = HOLD_BATCHES * self.settings.batch_size
        for where in self._assignment():
            held = self._order.buffered(where)
            if where not in self._paused and held > limit:
                consumer.pause([TopicPartition(*where)])
                self._paused.add(where)
            elif where in self._paused and held <= limit // 2:
                consumer.resume([TopicPartition(*where)])
                self._paused.discard(where)

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
        starts = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in partitions}
        self._order.assign(starts, time.monotonic())
        self._paused = set()
        self._on_loop(self.runtime.pipeline.expect(self._every_partition(consumer)))
        self.runtime.assigned = len(partitions)
        log.info("assigned %d partitions", len(partitions))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Forget partitions handed back (librdkafka then unassigns them) and their waiting records.

        Their next owner reads those records from the offsets stored with the state.
        """
        self._held = []
        self._order.assign({}, time.monotonic())
        self._gate.drop()
        self._paused = set()

    def _on_loop(self, coroutine: Any) -> Any:
        """Run a coroutine on the worker's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
