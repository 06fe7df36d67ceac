"""Ingest: camera topics in batches → ``Runtime.handle``, by a Faust agent or in bulk.

Camera topics are read as raw bytes (no Faust value type), so a record that cannot be decoded
reaches our code and its dead-letter path instead of being dropped by Faust.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine

import faust
from confluent_kafka import KafkaException

from agents.timers import LAG_INTERVAL_S
from app.worker.ingest import EXIT_UNRECOVERABLE, BulkIngest
from app.worker.pipeline import RawRecord
from app.worker.runtime import Runtime

log = logging.getLogger(__name__)

RESUBSCRIBE_AFTER_S = 1.0


def raw_record(message: faust.types.tuples.Message) -> RawRecord:
    """A Faust message as the pipeline's record (timestamp in ms)."""
    return RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp=int(round(message.timestamp * 1000)),
    )


async def _to_the_end(batch: Coroutine[object, object, object]) -> None:
    """Run a batch to its end even when the agent is cancelled (the worker stopping).

    ``take_events`` acknowledges a batch's records when the agent leaves it, cancelled or not,
    and Faust commits acknowledged offsets as it stops: a batch cut short by SIGTERM would have
    its records committed to Kafka but never stored, and the next owner of the partition would
    start after them. So the batch finishes (or fails) first; only then does the stop go on.
    """
    task = asyncio.ensure_future(batch)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def attach(app: faust.App, runtime: Runtime) -> None:
    """Read the camera topics the way ``FVC_INGEST`` says: a Faust agent, or in bulk."""
    if runtime.settings.ingest == "bulk":
        _attach_bulk(app, runtime)
    else:
        _attach_agent(app, runtime)


def _attach_bulk(app: faust.App, runtime: Runtime) -> None:
    """Run the bulk reader (app/worker/ingest.py) for as long as the app runs, and report its lag.

    The lag is reported on the lag timer's interval, as the Faust lag timer reports the agent's.
    """

    @app.task
    async def bulk_ingest() -> None:
        reader = BulkIngest(runtime, asyncio.get_running_loop())
        reader.start()
        try:
            while True:  # until the app stops and cancels this task
                await asyncio.sleep(LAG_INTERVAL_S)
                await asyncio.to_thread(_report_lag, reader, runtime)
        finally:
            await asyncio.to_thread(reader.stop)


def _report_lag(reader: BulkIngest, runtime: Runtime) -> None:
    """Report the bulk reader's lag; a failure is logged and counted, never ends the reader.

    Not under the timers' ``survives``: a lag report reads no store, so its success must not
    end a store outage. A broker that does not answer is expected in a broker outage (which the
    broker probe reports): one line, no traceback.
    """
    try:
        reader.report_lag()
    except KafkaException as exc:
        runtime.metrics.timer_errors.labels("lag").inc()
        log.warning("bulk ingest lag not reported: %s", exc)
    except Exception:
        runtime.metrics.timer_errors.labels("lag").inc()
        log.exception("bulk ingest lag report failed; the next one is in %.0fs", LAG_INTERVAL_S)


def _attach_agent(app: faust.App, runtime: Runtime) -> None:
    """Subscribe one agent (concurrency 1: offsets are committed in order) to every stream."""
    settings = runtime.settings
    topic = app.topic(
        *runtime.config.topics,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )

    if runtime.config.deferral_ms:
        log.warning("improved_mode.deferral_ms needs FVC_INGEST=bulk to hold whole windows "
                    "(Faust acknowledges what it delivers): the agent decides the windows "
                    "of each batch it is given")

    @app.agent(topic, concurrency=1, name="fvc.ingest")
    async def ingest(stream: faust.StreamT) -> None:
        batches = stream.take_events(settings.batch_size, within=settings.batch_timeout_s)
        async for events in batches:
            records = [raw_record(event.message) for event in events]
            try:
                await _to_the_end(runtime.handle(records))
            except Exception:
                # Faust would ack the batch if this raised; exiting keeps it unacknowledged, and
                # the offsets stored with the state make the restart resume exactly.
                log.exception("unrecoverable error on %s; exiting", records[0])
                os._exit(EXIT_UNRECOVERABLE)

    def follow(topics: tuple[str, ...]) -> None:
        """A reload changed the streams: the agent's channel reads the new topics.

        Faust rebuilds its subscription from its channels' topic lists once told that the
        channels changed (discard and add again), after ``RESUBSCRIBE_AFTER_S``.
        """
        if tuple(topic.topics) == topics:
            return
        topic.topics = list(topics)
        app.topics.discard(topic)
        app.topics.add(topic)
        log.info("subscribing to %s", ", ".join(topics))

    runtime.on_topics.append(follow)
    # Faust waits 45 s after a channel changes before it subscribes again (to gather several
    # changes into one rebalance); a reload is one change, and its new streams should flow now.
    app.topics._resubscribe_sleep_lock_seconds = RESUBSCRIBE_AFTER_S

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: object, assigned: set, **kwargs: object) -> None:
        await runtime.pipeline.load_offsets()
        log.info("assigned %d partitions", len(assigned))
        runtime.assigned = len(assigned)
