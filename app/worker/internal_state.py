"""Recovering state after Redis is lost: from the compacted internal-state topic, or by replay.

With ``save_internal_state`` every cluster change (and every stored input offset) is mirrored
to a compacted topic; ``start_from_internal_state`` rebuilds an empty store from it. Without
it, an empty store makes the worker rewind its consumer group over the largest retention
window, so the clusters are rebuilt from the inputs themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_incrementing

from app.config import ClusteringConfig
from app.errors import RestoreIncomplete
from app.kafka_client import make_admin, make_consumer, raise_if_fatal
from app.settings import Settings
from app.store.base import Commit, StateStore
from app.store.codec import decode_cluster

log = logging.getLogger(__name__)

T = TypeVar("T")
COORDINATOR_ATTEMPTS = 10  # about 20 s of waiting for a group coordinator to load
COORDINATOR_LOADING = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                       KafkaError.COORDINATOR_NOT_AVAILABLE)

OFFSET_PREFIX = "offset:"
CHUNK = 1000
PROGRESS_EVERY_S = 10.0  # how often a long read of the internal-state topic logs its progress


def offset_key(position: str) -> str:
    """Internal-state key of a stored input offset (``topic:partition``)."""
    return OFFSET_PREFIX + position


class _Reading:
    """How far each partition of a topic has been read, against its end when the read began.

    Offsets are not records: compaction, deleted records and transaction markers leave gaps, so
    a partition is done when its position reaches its end, not after ``end - low`` records.
    """

    def __init__(self, topic: str, bounds: dict[int, tuple[int, int]]) -> None:
        self.topic = topic
        self.lows = {p: low for p, (low, _high) in bounds.items()}
        self.ends = {p: high for p, (_low, high) in bounds.items()}
        self.positions = dict(self.lows)
        self.records = 0

    @property
    def total(self) -> int:
        """Offsets to cover in all; an upper bound of the records, as offsets have gaps."""
        return sum(self.ends[p] - self.lows[p] for p in self.ends)

    @property
    def covered(self) -> int:
        """Offsets covered so far, up to each partition's end."""
        return sum(min(self.positions[p], self.ends[p]) - self.lows[p] for p in self.ends)

    def unfinished(self) -> dict[int, tuple[int, int]]:
        """``(position, end)`` of every partition short of its end."""
        return {p: (pos, self.ends[p]) for p, pos in self.positions.items() if pos < self.ends[p]}

    def advance(self, partition: int, position: int) -> bool:
        """Note that ``partition`` is read up to ``position``; returns whether it moved."""
        moved = position > self.positions[partition]
        self.positions[partition] = max(position, self.positions[partition])
        return moved

    def incomplete(self, reason: str) -> RestoreIncomplete:
        """The error that says how far the read got."""
        return RestoreIncomplete(self.topic, reason, self.unfinished(), self.records)

    def report(self) -> None:
        """Log the progress, for restores long enough that an operator wonders."""
        done = len(self.ends) - len(self.unfinished())
        log.info("reading %s: %d records read, %d of %d offsets (%.0f%%), %d of %d partitions "
                 "done", self.topic, self.records, self.covered, self.total,
                 100 * self.covered / max(self.total, 1), done, len(self.ends))


def read_compacted(
    settings: Settings, topic: str, timeout_s: float | None = None
) -> dict[str, bytes]:
    """The latest value of every key of ``topic``, read to its end (tombstones dropped).

    The end is each partition's high watermark when the read begins: anything less would lose
    the keys of the unread offsets without a word, so the read gives up only when the broker
    makes no progress for ``timeout_s`` (``FVC_BROKER_OUTAGE_S`` by default, the time a worker
    waits out a Kafka outage). Records written after the read began are left out.

    Raises:
        RestoreIncomplete: the ends were not reached; it names the partitions and positions.
    """
    timeout_s = settings.broker_outage_s if timeout_s is None else timeout_s
    # from the beginning: a start offset that retention deleted meanwhile resets to the earliest
    consumer = make_consumer(settings, from_beginning=True, **{"enable.partition.eof": True})
    try:
        reading = _Reading(topic, _bounds(consumer, topic, timeout_s))
        consumer.assign([TopicPartition(topic, p, pos) for p, (pos, _end)
                         in reading.unfinished().items()])
        return _read(consumer, reading, timeout_s)
    finally:
        consumer.close()


def _bounds(consumer: Consumer, topic: str, timeout_s: float) -> dict[int, tuple[int, int]]:
    """The low and high watermark of every partition of ``topic`` (none if it does not exist).

    Raises:
        RestoreIncomplete: the metadata or the watermarks could not be had within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    try:
        return {
            p: consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=max(deadline - time.monotonic(), 0.001),
                cached=False,
            )
            for p in _partitions(consumer, topic, timeout_s)
        }
    except KafkaException as exc:
        reason = f"its partitions and end offsets were not readable: {exc.args[0].str()}"
        raise RestoreIncomplete(topic, reason, {}, 0) from exc


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    """The partitions of ``topic``; none when it does not exist, as nothing was ever written."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    error = None if metadata is None else metadata.error
    if error is not None and error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
        raise KafkaException(error)
    if metadata is None or error is not None:
        log.warning("topic %s does not exist: nothing to read", topic)
        return []
    return sorted(metadata.partitions)


def _read(consumer: Consumer, reading: _Reading, timeout_s: float) -> dict[str, bytes]:
    """Consume until every partition reaches its end; the latest value of each key.

    Raises:
        RestoreIncomplete: no partition moved for ``timeout_s``.
    """
    if reading.total:
        log.info("reading %s to its end: %d offsets in %d partitions", reading.topic,
                 reading.total, len(reading.ends))
    latest: dict[str, bytes] = {}
    began = moved_at = reported_at = time.monotonic()
    while reading.unfinished():
        messages = consumer.consume(CHUNK, timeout=min(timeout_s, 1.0))
        moved = [_take(message, reading, latest) for message in messages]
        now = time.monotonic()
        if any(moved):
            moved_at = now
        elif now - moved_at > timeout_s:
            raise reading.incomplete(f"no progress for {timeout_s:g}s")
        if now - reported_at >= PROGRESS_EVERY_S:
            reading.report()
            reported_at = now
    if reading.total:
        log.info("read %s to its end: %d records in %.1fs", reading.topic, reading.records,
                 time.monotonic() - began)
    return {k: v for k, v in latest.items() if v}


def _take(message: Message, reading: _Reading, latest: dict[str, bytes]) -> bool:
    """Apply one message to ``latest`` and ``reading``; returns whether a partition moved.

    The end-of-partition event is what moves a partition over a gap at its end (a compacted
    tail, a transaction marker), where no record follows to say so.
    """
    partition, offset, error = message.partition(), message.offset(), message.error()
    if error is not None:
        if error.code() == KafkaError._PARTITION_EOF:
            return reading.advance(partition, offset)
        raise_if_fatal(error)
        log.warning("reading %s: %s", reading.topic, error.str())
        return False
    if offset >= reading.ends[partition]:
        return False  # written after the read began
    latest[message.key().decode()] = message.value() or b""
    reading.records += 1
    return reading.advance(partition, offset + 1)


async def restore(settings: Settings, store: StateStore) -> int:
    """Fill an empty store from the internal-state topic; returns the clusters restored.

    The whole topic is read before anything is written, so a read that fails leaves the store
    empty and a restart tries again.

    Raises:
        RestoreIncomplete: the topic could not be read to its end.
    """
    topic = settings.internal_state_topic
    latest = await asyncio.to_thread(read_compacted, settings, topic)
    offsets = {k[len(OFFSET_PREFIX):]: int(v) for k, v in latest.items()
               if k.startswith(OFFSET_PREFIX)}
    clusters = [decode_cluster(v) for k, v in latest.items() if not k.startswith(OFFSET_PREFIX)]
    for start in range(0, len(clusters), CHUNK):
        chunk = clusters[start : start + CHUNK]
        await store.commit(Commit(expected={c.key: 0 for c in chunk}, upserts=chunk))
    if offsets:
        await store.commit(Commit(offsets=offsets))
    log.info("restored %d clusters and %d offsets from %s", len(clusters), len(offsets), topic)
    return len(clusters)


def rewind_group(
    settings: Settings, config: ClusteringConfig, now_ms: int | None = None, wait_s: float = 0.0
) -> int:
    """Point the consumer group at the start of the retention window; returns partitions moved.

    Only partitions the group has committed offsets for are moved (a new group starts at the
    beginning anyway). Kafka refuses while the group has members: that is retried for
    ``wait_s`` (members of a dead worker leave when their session times out), then logged.
    """
    periods = [s.retention_ms for s in config.streams]
    window = 0 if 0 in periods else max(periods)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    group = settings.ingest_group
    committed = _committed(settings, group, config.topics)
    if not committed:
        return 0
    targets = _start_offsets(settings, committed, now_ms - window if window else None)
    request = ConsumerGroupTopicPartitions(group, targets)
    admin = make_admin(settings)  # held until the result is in: the request dies with it
    deadline = time.monotonic() + wait_s
    while True:
        try:
            done = admin.alter_consumer_group_offsets([request])[group].result(timeout=30)
            # A group with members refuses per partition (UNKNOWN_MEMBER_ID), not as a whole.
            refused = [tp for tp in done.topic_partitions if tp.error is not None]
            if refused:
                raise KafkaException(refused[0].error)
            break
        except Exception as exc:  # noqa: BLE001 - an active group refuses; replay is best effort
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            log.warning("could not rewind consumer group %s for replay: %s", group, exc)
            return 0
    log.info("rewound %d partitions of group %s to replay the inputs", len(targets), group)
    return len(targets)


def _committed(settings: Settings, group: str, topics: Iterable[str]) -> list[TopicPartition]:
    """The partitions of ``topics`` that ``group`` has committed offsets for.

    Read by a consumer of the group that never joins it, not with the admin client's
    ``list_consumer_group_offsets``: while the broker's group coordinator is still loading
    (the first seconds after a broker starts), that call crashes the whole process in librdkafka
    (a null group handle on NOT_COORDINATOR, librdkafka issue 5040).
    """
    consumer = make_consumer(settings, group)
    try:
        metadata = consumer.list_topics(timeout=30).topics
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics if topic in metadata
            for partition in metadata[topic].partitions
        ]
        if not partitions:
            return []
        committed = _retrying(lambda: consumer.committed(partitions, timeout=30))
    except KafkaException as exc:  # nothing can be read to rewind: the group resumes as it is
        log.warning("could not read the offsets of consumer group %s: %s", group, exc)
        return []
    finally:
        consumer.close()
    return [tp for tp in committed if tp.offset >= 0]


def _retrying(call: Callable[[], T], attempts: int = COORDINATOR_ATTEMPTS) -> T:
    """``call`` again while Kafka says the error is passing (a coordinator still loading)."""
    retrying = Retrying(
        retry=retry_if_exception(_passing),
        stop=stop_after_attempt(attempts),
        wait=wait_incrementing(start=0.5, increment=0.5, max=3.0),
        reraise=True,
    )
    return retrying(call)


def _passing(exc: BaseException) -> bool:
    """A Kafka error that says to try again, or a group coordinator that is still loading."""
    if not isinstance(exc, KafkaException):
        return False
    error = exc.args[0]
    return bool(error.retriable() or error.code() in COORDINATOR_LOADING)


def _start_offsets(
    settings: Settings, partitions: list[TopicPartition], since_ms: int | None
) -> list[TopicPartition]:
    consumer = make_consumer(settings)
    try:
        out = []
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition))
            offset = low
            if since_ms is not None:
                (found,) = consumer.offsets_for_times(
                    [TopicPartition(tp.topic, tp.partition, since_ms)], timeout=30
                )
                offset = high if found.offset < 0 else found.offset
            out.append(TopicPartition(tp.topic, tp.partition, offset))
        return out
    finally:
        consumer.close()
