"""Timers: the change follower on every worker; realization, merge, retention and the outbox
publisher on the leader only.
"""

from __future__ import annotations

import logging

import faust

from app.worker.publisher import Publisher, PublishFailed
from app.worker.runtime import Runtime

log = logging.getLogger(__name__)

FOLLOW_INTERVAL_S = 0.1
PUBLISH_INTERVAL_S = 0.05
ADVANCE_INTERVAL_S = 1.0
LAG_INTERVAL_S = 5.0


def attach(app: faust.App, runtime: Runtime) -> None:
    """Register the timers on ``app``."""
    publisher = Publisher(runtime.settings)

    @app.timer(FOLLOW_INTERVAL_S, name="fvc.follow")
    async def follow() -> None:
        await runtime.follow_changes()

    @app.timer(PUBLISH_INTERVAL_S, on_leader=True, name="fvc.publish")
    async def publish() -> None:
        try:
            while await runtime.publish(publisher.send, publisher.flush):
                pass
        except PublishFailed as exc:
            log.warning("outbox publishing will be retried: %s", exc)

    @app.timer(ADVANCE_INTERVAL_S, on_leader=True, name="fvc.advance")
    async def advance() -> None:
        await runtime.advance()

    @app.timer(LAG_INTERVAL_S, name="fvc.lag")
    async def lag() -> None:
        inputs = set(runtime.config.topics)
        for tp in app.consumer.assignment():
            if tp.topic in inputs:
                position = f"{tp.topic}:{tp.partition}"
                behind = app.consumer.highwater(tp) - runtime.pipeline.applied.get(position, -1) - 1
                runtime.metrics.lag.labels(position).set(max(behind, 0))

    merging = runtime.config.merging
    if merging is not None:

        @app.timer(merging.time_interval_ms / 1000.0, on_leader=True, name="fvc.merge")
        async def merge() -> None:
            await runtime.merge()
