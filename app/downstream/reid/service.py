"""One re-identification service: its view, topic follower, optional streaming matcher and HTTP.

The parts run side by side in one process: the follower and the matcher on threads (blocking
Kafka clients), the HTTP server on the asyncio loop. A part that dies is not restarted in
place; ``/health`` turns 503 with the reason so the orchestrator restarts the process, which then
rebuilds its view from the topic like any start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from app.config import load_config
from app.downstream.reid.follow import Follower
from app.downstream.reid.http import make_app
from app.downstream.reid.metrics import ReidMetrics
from app.downstream.reid.state import ReidState
from app.downstream.reid.stream import StreamMatcher
from app.kafka_client import ensure_topics
from app.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PORT = 6070
DEFAULT_MATCH_TOPIC = "fvc.reid-matches"


@dataclass(frozen=True, slots=True)
class ReidOptions:
    """What ``fvc reid`` was asked to do (the Kafka connection comes from Settings)."""

    topic: str
    host: str = "0.0.0.0"  # noqa: S104 - a service answers its pod network, not loopback only
    port: int = DEFAULT_PORT
    k: int = 5
    threshold: float = 0.5
    stream: bool = False
    config_path: str = ""
    output_topic: str = DEFAULT_MATCH_TOPIC
    group: str = "fvc-reid"
    start_at: str = "earliest"


class ReidService:
    """The parts of one service and their life cycle."""

    def __init__(self, settings: Settings, options: ReidOptions) -> None:
        self.settings, self.options = settings, options
        self.k, self.threshold = options.k, options.threshold
        self.state = ReidState(settings.index_type, settings.device)
        self.metrics = ReidMetrics()
        self.follower = Follower(settings, options.topic, self.state, self.metrics)
        self.matcher: StreamMatcher | None = None
        if options.stream:
            config = load_config(options.config_path)
            self.matcher = StreamMatcher(
                settings, config, self.state, self.metrics, self.follower.ready,
                output_topic=options.output_topic, group=options.group, k=options.k,
                threshold=options.threshold, start_at=options.start_at,
            )
        self.started_at = time.time()

    def failure(self) -> str:
        """Why a part of the service stopped working ('' while all is well)."""
        parts = [("follower", self.follower.failure)]
        if self.matcher is not None:
            parts.append(("stream matcher", self.matcher.failure))
        return "; ".join(f"{name}: {why}" for name, why in parts if why)

    def stats(self) -> dict[str, Any]:
        """What ``/stats`` shows."""
        body: dict[str, Any] = {
            "clusters": len(self.state), "dimension": self.state.dimension,
            "merged_ids": len(self.state.view.merged_into), "left_out": self.state.dropped,
            "index": self.settings.index_type,
            "k": self.k, "threshold": self.threshold,
            "uptime_s": round(time.time() - self.started_at, 1),
            "follower": self.follower.stats(),
        }
        if self.matcher is not None:
            body["stream"] = {"status": self.matcher.status, "group": self.options.group,
                              "input_topics": sorted(self.matcher.streams),
                              "output_topic": self.options.output_topic}
        return body

    def prepare(self) -> None:
        """Streaming mode: create the camera and output topics the matcher needs if missing."""
        if self.matcher is not None:
            ensure_topics(self.settings, [*self.matcher.streams, self.options.output_topic])

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set, or until SIGTERM / SIGINT."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(make_app(self), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.options.host, self.options.port).start()
            self.follower.start()
            if self.matcher is not None:
                self.matcher.start()
            log.info("re-identification on http://%s:%d from %s with %s", self.options.host,
                     self.options.port, self.options.topic, asdict(self.options))
            await stop.wait()
            log.info("stopping")
        finally:
            await runner.cleanup()
            if self.matcher is not None:
                await asyncio.to_thread(self.matcher.stop)
            await asyncio.to_thread(self.follower.stop)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
