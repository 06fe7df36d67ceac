"""Timers: the change follower on every worker; the periodic steps on the leader only.

The leader alone runs the event-time clock (realization, retention and merging as the watermark
over every worker's partitions passes their times) and the outbox publisher. A timer that
raises would crash the Faust app (and with it every partition of the worker), so each body runs
under ``survives``: the error is logged and counted, and the timer runs again at its next tick.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

import faust
from confluent_kafka import KafkaException

from app import heap
from app.errors import StoreUnavailable
from app.worker.metrics import WorkerMetrics
from app.worker.outage import Outage
from app.worker.publisher import Publisher, PublishFailed
from app.worker.runtime import Runtime

log = logging.getLogger(__name__)

FOLLOW_INTERVAL_S = 0.1
PUBLISH_INTERVAL_S = 0.05
CLOCK_INTERVAL_S = 1.0
SYNC_INTERVAL_S = 1.0
LAG_INTERVAL_S = 5.0
BROKER_PROBE_INTERVAL_S = 5.0

Tick = Callable[[], Awaitable[None]]


def survives(
    name: str, metrics: WorkerMetrics, outage: Outage | None
) -> Callable[[Tick], Tick]:
    """Run a timer body so that its errors are logged and counted, never raised to Faust.

    Store failures count towards the store ``outage`` (which stops the worker past its limit);
    a tick that gets through ends it. A timer that never reads the store passes None: its
    ticks say nothing about the store, and must not end an outage.
    """

    def wrap(body: Tick) -> Tick:
        @functools.wraps(body)
        async def tick() -> None:
            try:
                await body()
                if outage is not None:
                    outage.recovered()
            except StoreUnavailable as exc:  # expected during an outage: no traceback
                metrics.timer_errors.labels(name).inc()
                if outage is not None:
                    outage.failed(exc)
                log.info("timer %s: store unavailable, next tick retries: %s", name, exc)
            except Exception:
                metrics.timer_errors.labels(name).inc()
                log.exception("timer %s failed; it runs again at its next tick", name)

        return tick

    return wrap


def attach(app: faust.App, runtime: Runtime) -> None:
    """Register the timers on ``app``."""
    publisher = Publisher(runtime.settings)
    metrics, outage = runtime.metrics, runtime.outage

    @app.timer(FOLLOW_INTERVAL_S, name="fvc.follow")
    @survives("follow", metrics, outage)
    async def follow() -> None:
        await runtime.follow_changes()

    @app.timer(PUBLISH_INTERVAL_S, on_leader=True, name="fvc.publish")
    @survives("publish", metrics, outage)
    async def publish() -> None:
        try:
            while await runtime.publish(publisher.send, publisher.flush):
                pass
        except PublishFailed as exc:
            log.warning("outbox publishing will be retried: %s", exc)

    # Batches run the timers their own event time brings; this catches the deployment up to
    # the watermark over every worker's partitions, and lets idle inputs move it.
    @app.timer(CLOCK_INTERVAL_S, on_leader=True, name="fvc.clock")
    @survives("clock", metrics, outage)
    async def clock() -> None:
        await runtime.tick()

    @app.timer(SYNC_INTERVAL_S, name="fvc.sync")
    @survives("sync", metrics, outage)
    async def sync() -> None:
        await runtime.sync()

    @app.timer(LAG_INTERVAL_S, name="fvc.lag")
    @survives("lag", metrics, None)
    async def lag() -> None:
        inputs = set(runtime.config.topics)
        for tp in app.consumer.assignment():
            highwater = app.consumer.highwater(tp)
            if tp.topic not in inputs or highwater is None:  # None: just assigned, not fetched
                continue
            position = f"{tp.topic}:{tp.partition}"
            behind = highwater - runtime.pipeline.applied.get(position, -1) - 1
            runtime.metrics.lag.labels(position).set(max(behind, 0))

    @app.timer(heap.SETTLE_INTERVAL_S, name="fvc.heap")
    async def settle_heap() -> None:
        heap.settle()  # what changed since the last time: the pause stays that small

    @app.timer(BROKER_PROBE_INTERVAL_S, name="fvc.broker")
    @survives("broker", metrics, None)
    async def broker() -> None:
        try:
            await asyncio.to_thread(publisher.probe)
        except KafkaException as exc:
            runtime.broker_outage.failed(exc)
        else:
            runtime.broker_outage.recovered()
