"""One worker's moving parts and their life cycle, independent of Faust.

The Faust agents and timers (``agents/``) and batch mode (``app/worker/run.py``) call these methods;
keeping them here makes the worker's behaviour testable without a Faust app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from app import heap
from app.config import ClusteringConfig, load_config
from app.engine import Engine
from app.errors import ConfigError, StoreLost, StoreUnavailable
from app.index import make_index
from app.index.timed import TimedIndex
from app.settings import Settings
from app.store import store_for
from app.store.base import OutboxRecord, StateStore
from app.store.guard import ROUND_TRIPS
from app.worker.coherence import CoherenceSummary
from app.worker.metrics import WorkerMetrics
from app.worker.outage import EXIT_STORE_LOST, Outage
from app.worker.outbox import EVENT_TYPE_HEADER
from app.worker.pipeline import REPLAYED, BatchOutcome, Pipeline, RawRecord

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Send = Callable[[OutboxRecord], Awaitable[None]]


REBUILDING = "rebuilding:"  # a generation marker's prefix while one worker rebuilds the store
REBUILD_CLAIM_S = 300.0

class Runtime:
    """Config, engine, store, pipeline and metrics of one worker process."""

    def __init__(
        self,
        settings: Settings,
        config_path: str,
        store: StateStore | None = None,
        *,
        batch: bool = False,
    ) -> None:
        self.config_errors: list[str] = []
        try:
            config = load_config(config_path).for_output_profile(settings.output_profile)
        except ConfigError as exc:  # UVAP's behaviour: stay up, idle, until a valid one comes
            self.config_errors = _problems(exc)
            log.error("invalid config %s; idle until a valid one is loaded: %s", config_path, exc)
            config = _idle_config()
        # A UVAP microservice config names its output (target) and internal-state topics;
        # an FVC_* variable or flag that sets one explicitly wins.
        if overrides := config.settings_overrides(settings.model_fields_set):
            settings = settings.with_overrides(**overrides)
        self.settings = settings
        self.config_path = config_path
        self.store = store or store_for(settings)
        self.metrics = WorkerMetrics()
        stages = self.metrics.stage_seconds
        index = make_index(settings.index_type, settings.device, fp16=settings.gpu_fp16_active)
        self.index = TimedIndex(index, stages)
        self.engine = Engine(config, self.index)
        self.pipeline = Pipeline(
            self.engine, self.store, config, settings, stages,
            ordered=batch or settings.ingest == "bulk", batch=batch,  # both release in order
            # The Faust agent acknowledges a batch to Kafka as it takes the next, and a partition's
            # next owner starts from Kafka's offsets there: its commits are confirmed at once.
            # Bulk ingest and batch mode start from the offsets in the store.
            overlap=settings.overlap_commits and (batch or settings.ingest == "bulk"),
        )
        self.metrics.watch(self.engine)
        self.metrics.watermark.set_function(lambda: self.pipeline.clock.watermark or 0)
        self.outage = Outage(settings.store_outage_s, self.metrics.store_available)
        self.broker_outage = Outage(
            settings.broker_outage_s, self.metrics.broker_available, service="broker"
        )
        self.exit_process: Callable[[int], object] = os._exit
        self.coherence = CoherenceSummary()
        self.on_topics: list[Callable[[tuple[str, ...]], None]] = []  # ingest resubscribes
        self.pipeline.on_config.append(self._config_changed)
        self.ready = False
        self.assigned: int | None = None
        self.cursor = "0-0"
        self.started_at = time.time()
        self.batches = 0

    @property
    def config(self) -> ClusteringConfig:
        """The clustering config in force."""
        return self.pipeline.config

    def create_topics(self) -> None:
        """Create the topics this worker reads and writes that do not exist yet."""
        from app.kafka_client import ensure_topics

        settings, config = self.settings, self.config
        ensure_topics(settings, [*config.topics, settings.dead_letter_topic])
        # consumers such as `fvc reid` rebuild their view from the whole event history; UVAP's
        # profile publishes on one partition (app/worker/publisher.py), so it creates just one
        partitions = 1 if settings.output_profile == "uvap" else None
        ensure_topics(settings, [settings.output_topic], partitions, keep_forever=True)
        if config.save_internal_state or config.start_from_internal_state:
            ensure_topics(settings, [settings.internal_state_topic], compacted=True)
        if settings.assignments_topic:
            ensure_topics(settings, [settings.assignments_topic])

    async def start(self, recover: bool = False) -> None:
        """Connect to the store and load every cluster into the engine and its index.

        With ``recover`` (workers), an empty store is first rebuilt from the internal-state
        topic when the config says so, or else the consumer group is rewound to replay inputs.
        """
        await self.store.start()
        if recover:
            for problem in await self.store.persistence_problems():
                log.warning("redis settings: %s", problem)
            await self._rebuild_if_empty()
        self.pipeline.use_generation(await self.store.claim_generation(uuid.uuid4().hex))
        await self.bootstrap()
        await self.pipeline.load_offsets()
        await self._settle_config()
        self.ready = True

    async def _settle_config(self) -> None:
        """Agree on the deployment's config.

        This worker's file, stored as the next version when it differs from the stored one; or
        the stored one when the file is invalid; or none (idle) when neither is there.
        """
        if not self.config_errors:
            await self.pipeline.store_config(self.config)
        elif await self.pipeline.follow_config():
            log.warning("config file %s is invalid; following the deployment's stored config",
                        self.config_path)
        else:
            self.pipeline.config_version = 0  # nothing stored: a valid config will be

    async def sync(self) -> None:
        """Timer: follow the deployment: the stored config and every partition's event time."""
        await self.pipeline.follow_config()
        await self.pipeline.refresh_clock()

    def _config_changed(self, config: ClusteringConfig) -> None:
        """A new config version is in force: processing resumes, ingest follows its topics."""
        self.config_errors = []
        for resubscribe in self.on_topics:
            resubscribe(config.topics)

    async def _rebuild_if_empty(self) -> None:
        """Rebuild an empty store, one worker at a time: the others wait for its generation.

        The store's generation marker says a state was built on it. Without one, the first
        worker to claim ``rebuilding:...`` (for ``REBUILD_CLAIM_S``, so a worker that dies
        rebuilding does not block the others) rebuilds, then writes the new generation.
        """
        while (marker := await self.store.generation()) is None or marker.startswith(REBUILDING):
            if marker is None:
                if not await self._empty():
                    return  # a store written before generation markers: claimed in start()
                mine = f"{REBUILDING}{uuid.uuid4().hex}"
                if await self.store.claim_generation(mine, ttl_s=REBUILD_CLAIM_S) == mine:
                    log.info("the store is empty; this worker rebuilds it")
                    try:
                        replayed = await self._recover()
                    except Exception as exc:  # the next worker (or this one restarted) retries
                        log.critical("rebuilding the store failed; not starting: %s", exc)
                        await self.store.release_generation(mine)
                        raise
                    prefix = REPLAYED if replayed else ""
                    await self.store.set_generation(f"{prefix}{uuid.uuid4().hex}")
                    return
            await asyncio.sleep(0.5)  # another worker rebuilds: wait for its generation

    async def _empty(self) -> bool:
        """Neither clusters nor offsets: nothing was ever built here, or it was all lost."""
        return await self.store.count() == 0 and not await self.store.offsets()

    async def _recover(self) -> bool:
        """Fill an empty store; True when inputs consumed before are replayed to rebuild it.

        A replay over several partitions interleaves them as Kafka hands them over, not as
        the first time, so a cluster's version n may come out different: the new generation
        then says so, and its event ids differ from the lost ones (``Pipeline.use_generation``).
        """
        from app.worker.internal_state import restore, rewind_group

        if self.config.start_from_internal_state:
            await restore(self.settings, self.store)
            return False
        # Kafka refuses to move the offsets of a group with members: the workers of a lost
        # store all exit, and their sessions must time out first.
        wait_s = 3 * self.settings.group_session_timeout_s + 10
        moved = await asyncio.to_thread(rewind_group, self.settings, self.config, wait_s=wait_s)
        return moved > 0

    def store_lost(self, error: StoreLost) -> None:
        """Stop at once: nothing may be committed over a lost store; a restart rebuilds it."""
        log.critical("state store lost its data (%s); exiting so a restart rebuilds it", error)
        logging.shutdown()
        self.exit_process(EXIT_STORE_LOST)

    async def stop(self) -> None:
        """Confirm the commit in flight, then release the store."""
        try:
            await self.pipeline.settle()
        except Exception:  # the stored offsets say where the next worker starts: nothing is lost
            log.warning("stopping with a batch not stored", exc_info=True)
        await self.store.close()

    async def bootstrap(self) -> None:
        """Full load from the store; the cursor is taken first so no change is missed."""
        began = time.perf_counter()
        self.cursor = await self.store.change_cursor()
        total = 0
        # room for every cluster at once, and an approximate index built once, at the end
        with self.engine.loading(await self.store.count()):
            async for chunk in self.store.load_all():
                self.engine.load(chunk, force=True)
                total += len(chunk)
        self.pipeline.dimension = self.pipeline.dimension or self.engine.dimension
        heap.settle()  # the clusters just loaded: out of every later collection's walk
        log.info("loaded %d clusters in %.2fs", total, time.perf_counter() - began)

    async def handle(self, records: Sequence[RawRecord]) -> BatchOutcome:
        """Process a batch; while the config is invalid, wait (holding the partitions)."""
        while self.config_errors:
            await asyncio.sleep(0.2)
        began = time.perf_counter()
        try:
            outcome = await self._retrying(self.pipeline.handle, records)
        except StoreLost as exc:
            self.store_lost(exc)
            raise
        self._count(outcome, records)
        self.metrics.batch_seconds.observe(time.perf_counter() - began)
        self.batches += 1
        return outcome

    async def follow_changes(self) -> int:
        """Take other workers' changes into the local engine; returns how many.

        Every worker runs this every ``FOLLOW_INTERVAL_S``: it first settles a commit in flight
        that the store has answered, so a refused one is handled again even when no batch
        follows it.
        """
        try:
            await self.pipeline.confirm()
        except StoreLost as exc:  # a refused commit's records handled again: nothing may land
            self.store_lost(exc)
            return 0
        # this worker's own commits are in its engine already: only other writers' are read
        batch = await self.store.changes(self.cursor, skip_writer=self.pipeline.writer)
        if batch.reset and await self.store.generation() != self.pipeline.generation:
            self.store_lost(StoreLost(f"generation {self.pipeline.generation} is gone"))
            return 0
        if batch.reset:
            log.warning("change stream trimmed past our cursor; reloading everything")
            async with self.pipeline.exclusive():  # never in the middle of a batch
                await self.bootstrap()
            return len(self.engine.clusters)
        self.cursor = batch.cursor
        if batch.upserts or batch.deletions:
            # not waiting for a commit in flight: if the store refuses it for a change taken
            # here, the version checks make its batch reload that cluster and decide again
            async with self.pipeline.lock:
                self.engine.load(batch.upserts, batch.deletions)
        return len(batch.upserts) + len(batch.deletions)

    async def tick(self) -> None:
        """Timer: realization, retention and merging due at the deployment's watermark."""
        try:
            self.metrics.merge_passes.inc(await self.pipeline.tick())
        except StoreLost as exc:
            self.store_lost(exc)

    async def remove(self, key: str) -> None:
        """Operator request: delete one cluster."""
        await self.pipeline.step(lambda: self.engine.remove(key))

    async def publish(self, send: Send, flush: Callable[[], Awaitable[None]]) -> int:
        """Publish pending outbox records in order, then acknowledge them."""
        entries = await self.store.outbox_pending(2000)
        if not entries:
            self.metrics.outbox_pending.set(0)
            return 0
        with self.metrics.stage_seconds.labels("publish").time():
            for entry in entries:
                await send(entry.record)
            await flush()
            await self.store.outbox_ack(entries)
        for entry in entries:
            if entry.record.topic == self.settings.output_topic:
                self.metrics.events_out.labels(_event_type(entry.record)).inc()
        return len(entries)

    async def reload(self) -> list[str]:
        """Re-read the config file and store it as the deployment's next version.

        Every worker follows the stored version (``follow_config``), and no commit computed
        under the old one is accepted after it, so all workers switch at the same point of
        the stored history. An invalid file pauses this worker's processing until a valid
        config comes (UVAP's behaviour); the others carry on.
        """
        try:
            config = load_config(self.config_path).for_output_profile(
                self.settings.output_profile
            )
        except ConfigError as exc:
            self.config_errors = _problems(exc)
            log.error("invalid config %s; processing paused: %s", self.config_path, exc)
            return self.config_errors
        version = await self.pipeline.store_config(config)
        self.config_errors = []
        log.info("config %s reloaded as version %d", self.config_path, version)
        return []

    async def stats(self) -> dict[str, object]:
        """What ``/stats`` shows; ``coherence`` summarises clusters of two or more observations."""
        clusters = self.engine.clusters
        return {
            "clusters": len(clusters),
            "realized": clusters.realized_count(),
            "index_size": len(self.engine.index),
            "watermark": self.pipeline.clock.watermark,
            "newest_event_time": self.engine.watermark,
            "ready": self.ready,
            "config_errors": self.config_errors,
            "config_version": self.pipeline.config_version,
            "streams": list(self.config.stream_ids),
            "uptime_s": round(time.time() - self.started_at, 1),
            "applied_offsets": dict(self.pipeline.applied),
            "stage_seconds": {k: round(v, 4) for k, v in self.metrics.stage_totals().items()},
            "batches": self.batches,
            "store_round_trips": dict(ROUND_TRIPS),
            "cpu_seconds": round(time.process_time(), 3),
            "coherence": await self.coherence.get(self.config.method, clusters),
        }

    async def settle(self) -> None:
        """Wait until every batch handled so far is stored, waiting out an outage like a batch."""
        await self._retrying(self.pipeline.settle)

    async def _retrying(self, work: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Run ``work`` (a batch), retrying while the store is unavailable, with backoff."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(StoreUnavailable),
            wait=wait_exponential(multiplier=0.1, max=5.0) + wait_random(0, 0.1),
            before_sleep=self._note_outage,
        )
        result = await retrying(work, *args)
        self.outage.recovered()
        return result

    def _note_outage(self, state: RetryCallState) -> None:
        """Count the failure against the outage limit, and say how long the batch waits."""
        error = state.outcome.exception() if state.outcome else None
        if error is not None:
            self.outage.failed(error)
        log.info("store unavailable, retrying in %.1fs: %s", state.upcoming_sleep, error)

    def _count(self, outcome: BatchOutcome, records: Sequence[RawRecord]) -> None:
        m = self.metrics
        m.replayed.inc(outcome.skipped)
        m.version_conflicts.inc(outcome.conflicts)
        m.late_records.inc(outcome.late)
        m.merge_passes.inc(outcome.merges)
        for _, error in outcome.dead_letters:
            m.dead_letters.labels(error.reason).inc()
        for _, skip in outcome.skipped_records:
            m.skipped_records.labels(skip.reason).inc()
        by_topic = {s.topic: s.stream_id for s in self.config.streams}
        for topic, count in Counter(record.topic for record in records).items():
            m.records_in.labels(by_topic.get(topic, topic)).inc(count)


def _problems(error: ConfigError) -> list[str]:
    """A config's problems as ``/stats`` and ``/reload`` show them."""
    return [f"{path}: {value!r} {rule}" for path, value, rule in error.problems]


def _idle_config() -> ClusteringConfig:
    """A config with no stream: what a worker holds until a valid one is loaded."""
    return dataclasses.replace(ClusteringConfig.for_threshold(1.0, ["none"]), streams=())


def _event_type(record: OutboxRecord) -> str:
    """The event's type from its header (events stored by older versions have none)."""
    for name, value in record.headers:
        if name == EVENT_TYPE_HEADER:
            return value.decode()
    return "unknown"
