"""Recovering state after Redis is lost: from the compacted internal-state topic, or by replay.

With ``save_internal_state`` every cluster change (and every stored input offset) is mirrored
to a compacted topic; ``start_from_internal_state`` rebuilds an empty store from it. Without
it, an empty store makes the worker rewind its consumer group over the largest retention
window, so the clusters are rebuilt from the inputs themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_incrementing

from app.config import ClusteringConfig
from app.kafka_client import make_admin, make_consumer
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


def offset_key(position: str) -> str:
    """Internal-state key of a stored input offset (``topic:partition``)."""
    return OFFSET_PREFIX + position


def read_compacted(settings: Settings, topic: str, timeout_s: float = 30.0) -> dict[str, bytes]:
    """The latest value of every key of ``topic`` up to its current end (tombstones dropped)."""
    consumer = make_consumer(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        ends = {}
        for p in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        latest: dict[str, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=1.0):
                if m.error():
                    continue
                key = m.key().decode()
                latest[key] = m.value() or b""
                if m.offset() + 1 >= ends.get(m.partition(), 0):
                    ends.pop(m.partition(), None)
        return {k: v for k, v in latest.items() if v}
    finally:
        consumer.close()


async def restore(settings: Settings, store: StateStore) -> int:
    """Fill an empty store from the internal-state topic; returns the clusters restored."""
    latest = read_compacted(settings, settings.internal_state_topic)
    offsets = {k[len(OFFSET_PREFIX):]: int(v) for k, v in latest.items()
               if k.startswith(OFFSET_PREFIX)}
    clusters = [decode_cluster(v) for k, v in latest.items() if not k.startswith(OFFSET_PREFIX)]
    for start in range(0, len(clusters), CHUNK):
        chunk = clusters[start : start + CHUNK]
        await store.commit(Commit(expected={c.key: 0 for c in chunk}, upserts=chunk))
    if offsets:
        await store.commit(Commit(offsets=offsets))
    log.info("restored %d clusters and %d offsets from %s", len(clusters), len(offsets),
             settings.internal_state_topic)
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
