"""Follow the downstream topic: cluster events as decoded dicts or one readable line each.

Re-identification consumers read FVClusterUpdateRecords; this is the operator's (and the
tests' and the demo's) view of the same stream. It reads with a one-off consumer group that
never commits by default, so looking at the topic never moves anyone's offsets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer

from app.codec.decode import cluster_name, decode_event
from app.errors import DecodeError
from app.kafka_client import make_consumer, raise_if_fatal
from app.settings import Settings

POLL_S = 0.2  # short polls, so Ctrl-C and the idle timeout are honoured promptly
END = "END_OF_INPUT_RECORD"


class Tailed(NamedTuple):
    """One record read: its place, key and time, and the event (or why it cannot be read)."""

    partition: int
    offset: int
    key: str
    timestamp: int | None
    event: dict[str, Any] | None
    error: str = ""


def follow(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    group: str | None = None,
    idle_timeout: float | None = None,
    max_events: int | None = None,
    until_end: bool = False,
) -> Iterator[Tailed]:
    """Records of ``topic`` as they arrive, until a stop condition holds.

    Stops after ``max_events`` records, after ``idle_timeout`` seconds with none, or (with
    ``until_end``) after the first END_OF_INPUT_RECORD. A record that is not an event is
    yielded with ``error`` set rather than ending the follow.
    """
    consumer = make_consumer(settings, group, from_beginning=from_beginning)
    try:
        consumer.subscribe([topic])
        yield from _records(consumer, idle_timeout, max_events, until_end)
    finally:
        consumer.close()


def _records(
    consumer: Consumer, idle_timeout: float | None, max_events: int | None, until_end: bool
) -> Iterator[Tailed]:
    count, last = 0, time.monotonic()
    while max_events is None or count < max_events:
        if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
            return
        msg = consumer.poll(POLL_S)
        if msg is None:
            continue
        error = msg.error()
        if error is not None:  # passing ones (no topic yet, a broker restart) are waited out
            raise_if_fatal(error)
            continue
        last, count = time.monotonic(), count + 1
        item = _tailed(msg)
        yield item
        if until_end and item.event is not None and item.event.get("type") == END:
            return


def _tailed(msg: Any) -> Tailed:
    kind, stamp = msg.timestamp()
    key = (msg.key() or b"").decode("utf-8", "replace")
    ts = None if kind == TIMESTAMP_NOT_AVAILABLE else stamp
    try:
        event, error = decode_event(msg.value() or b""), ""
    except DecodeError as exc:
        event, error = None, str(exc)
    return Tailed(msg.partition(), msg.offset(), key, ts, event, error)


def read_events(
    settings: Settings,
    topic: str,
    *,
    timeout: float,
    max_events: int | None = None,
    until_end: bool = False,
    from_beginning: bool = True,
) -> list[dict[str, Any]]:
    """The decoded events of ``topic`` (from its beginning by default), until a stop condition.

    ``timeout`` is the idle time that ends the read; records that are not events are left out.
    """
    items = follow(
        settings, topic, from_beginning=from_beginning, idle_timeout=timeout,
        max_events=max_events, until_end=until_end,
    )
    return [item.event for item in items if item.event is not None]


def format_time(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds, e.g. 2019-10-15T11:16:23.912Z."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def format_event(event: dict[str, Any], timestamp: int | None = None) -> str:
    """One readable line per event; ``timestamp`` (the record's, ms) is appended when known."""
    kind = event.get("type")
    at = f"  @{format_time(timestamp)}" if timestamp is not None else ""
    if kind == "REG_EVENT":
        body = event.get("reg_event") or {}
        cluster = body.get("cluster") or {}
        realized = "realized" if cluster.get("is_realized") else "unrealized"
        name = cluster_name(body.get("cluster_id"))
        n, source = cluster.get("num_observations"), body.get("input_stream_id", "?")
        return f"REG    {name}  n={n}  {realized}  from {source}{at}"
    if kind == "MERGE_EVENT":
        body = event.get("merge_event") or {}
        merged = ", ".join(cluster_name(c) for c in body.get("merged_clusters") or [])
        n = (body.get("cluster") or {}).get("num_observations")
        return f"MERGE  {cluster_name(body.get('cluster_id'))} <- {merged}  n={n}{at}"
    if kind == "DELETE_EVENT":
        body = event.get("delete_event") or {}
        name = cluster_name(body.get("deleted_cluster"))
        return f"DELETE {name} {body.get('reason', '?')}{at}"
    if kind == END:
        return f"END_OF_INPUT{at}"
    return f"?      unknown event type {kind!r}{at}"
