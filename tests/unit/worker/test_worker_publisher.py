"""Outbox publishing: every stored record reaches Kafka, and leaves the outbox only once it has.

Drives ``Runtime.publish`` with the real ``Publisher`` over ``RecordingProducer``.
"""

from __future__ import annotations

import pytest
from fakes import (
    FlakyStore,
    MakeRuntime,
    RecordingProducer,
    Sent,
    garbage,
    identities,
    records,
    sightings,
)

from app.errors import StoreUnavailable
from app.settings import Settings
from app.store import OutboxEntry
from app.worker.publisher import Publisher, PublishFailed
from app.worker.runtime import Runtime

CENTRES = identities(seed=23, count=3)


async def with_outbox(store: FlakyStore, make_runtime: MakeRuntime) -> tuple[Runtime, list[Sent]]:
    """A runtime that handled one batch (events and a dead letter), and what Kafka should get."""
    runtime = await make_runtime(store)
    batch = records(sightings(CENTRES, [0, 0, 1, 1, 2, 0], seed=1))
    await runtime.handle([*batch, garbage(offset=6)])
    entries = await store.inner.outbox_pending()
    return runtime, [as_sent(entry, runtime.settings) for entry in entries]


def as_sent(entry: OutboxEntry, settings: Settings) -> Sent:
    """How the publisher must hand an outbox record to the producer."""
    r = entry.record
    topic = r.topic or settings.output_topic
    return Sent(topic, r.key or None, r.value or None, r.timestamp, r.headers)


async def test_every_outbox_record_is_published_once_in_order_then_acknowledged(
    store: FlakyStore, make_runtime: MakeRuntime, producer: RecordingProducer
) -> None:
    """One round sends the outbox in commit order, flushes, and only then empties it."""
    runtime, expected = await with_outbox(store, make_runtime)
    publisher = Publisher(runtime.settings, producer)

    published = await runtime.publish(publisher.send, publisher.flush)
    again = await runtime.publish(publisher.send, publisher.flush)

    assert (published, again) == (len(expected), 0)
    assert producer.delivered == expected
    assert {s.topic for s in expected} == {
        runtime.settings.output_topic, runtime.settings.dead_letter_topic
    }
    assert await store.inner.outbox_pending() == []
    registry = runtime.metrics.registry
    events = registry.get_sample_value("fvc_events_out_total", {"type": "REG_EVENT"})
    assert events == len(expected) - 1  # all but the dead letter


async def test_a_refused_delivery_keeps_the_round_for_the_next_attempt(
    store: FlakyStore, make_runtime: MakeRuntime, producer: RecordingProducer
) -> None:
    """PublishFailed acknowledges nothing; the next round sends everything again and succeeds."""
    runtime, expected = await with_outbox(store, make_runtime)
    publisher = Publisher(runtime.settings, producer)
    producer.refuse_deliveries(times=1)

    with pytest.raises(PublishFailed, match="Message size too large"):
        await runtime.publish(publisher.send, publisher.flush)
    assert store.calls["outbox_ack"] == 0
    assert [as_sent(e, runtime.settings) for e in await store.inner.outbox_pending()] == expected

    assert await runtime.publish(publisher.send, publisher.flush) == len(expected)
    assert producer.delivered == expected[1:] + expected  # at least once: same ids again
    assert await store.inner.outbox_pending() == []


async def test_a_full_producer_queue_acknowledges_nothing(
    store: FlakyStore, make_runtime: MakeRuntime, producer: RecordingProducer
) -> None:
    """BufferError while queueing leaves the outbox whole; the next round publishes it all."""
    runtime, expected = await with_outbox(store, make_runtime)
    publisher = Publisher(runtime.settings, producer)
    producer.queue_full_after(2)

    with pytest.raises(BufferError):
        await runtime.publish(publisher.send, publisher.flush)
    assert len(await store.inner.outbox_pending()) == len(expected)

    assert await runtime.publish(publisher.send, publisher.flush) == len(expected)
    assert producer.delivered == expected[:2] + expected
    assert await store.inner.outbox_pending() == []


async def test_an_acknowledgement_lost_to_the_store_publishes_again_not_never(
    store: FlakyStore, make_runtime: MakeRuntime, producer: RecordingProducer
) -> None:
    """Kafka has the records but the outbox still does too: they go out again, none is lost."""
    runtime, expected = await with_outbox(store, make_runtime)
    publisher = Publisher(runtime.settings, producer)
    store.go_down("outbox_ack")

    with pytest.raises(StoreUnavailable):
        await runtime.publish(publisher.send, publisher.flush)

    assert await runtime.publish(publisher.send, publisher.flush) == len(expected)
    assert producer.delivered == expected + expected
    assert await store.inner.outbox_pending() == []
