"""The processing core shared by the Faust worker and batch mode: records in, one commit out.

For a batch of raw input records: drop those at or below the partition offsets already stored
(a replay changes nothing), decode the rest (bad ones become dead letters, ones without the
selected field are skipped as UVAP skips them; both still count as applied), run the engine,
and store clusters, events, dead letters and the new offsets in one atomic commit. Events and
dead letters reach Kafka later, from the outbox, so none is lost if the process dies here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Histogram

from app.codec.decode import decode
from app.config import ClusteringConfig
from app.engine import Engine, Observation, StepResult
from app.errors import AlreadyApplied, DecodeError, SkippedRecord, VersionConflict
from app.settings import Settings
from app.store.base import Commit, StateStore
from app.worker.metrics import stage_histogram
from app.worker.outbox import OutboxWriter

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 50


def position(topic: str, partition: int) -> str:
    """``topic:partition``, the key of a partition's stored offset."""
    return f"{topic}:{partition}"


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka message as read, before decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int

    @property
    def position(self) -> str:
        """``topic:partition``, the key of stored offsets."""
        return position(self.topic, self.partition)

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one batch did, for metrics and tests.

    ``skipped`` counts records dropped as already applied (a replay); ``skipped_records`` are
    the records skipped as UVAP skips them (no selected field), their offsets applied.
    """

    observations: int = 0
    dead_letters: tuple[tuple[RawRecord, DecodeError], ...] = ()
    skipped: int = 0
    result: StepResult | None = None
    conflicts: int = 0
    skipped_records: tuple[tuple[RawRecord, SkippedRecord], ...] = ()


class Pipeline:
    """Engine plus store plus codecs; every change goes through ``_commit``.

    One asyncio lock serialises this process's batches and timer steps, so a result is always
    computed from the engine state it is committed over; other workers are caught by the
    store's version checks and answered by reloading the clusters named and trying again.
    """

    def __init__(
        self,
        engine: Engine,
        store: StateStore,
        config: ClusteringConfig,
        settings: Settings,
        stage_seconds: Histogram | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.settings = settings
        self.outbox = OutboxWriter(settings, config)
        self.applied: dict[str, int] = {}
        self.lock = asyncio.Lock()
        self.dimension = settings.expected_dimension
        self.stage_seconds = stage_histogram() if stage_seconds is None else stage_seconds
        self.writer = uuid.uuid4().hex  # names this pipeline's commits in the change stream
        self.generation = ""  # the store generation commits build on ("" = unchecked)
        self.reconfigure(config)

    def reconfigure(self, config: ClusteringConfig) -> None:
        """Use a new clustering config from now on (the engine keeps its clusters)."""
        self.config = config
        self.engine.reconfigure(config)
        self.outbox.reconfigure(config)
        self._streams = {s.topic: s for s in config.streams}

    async def load_offsets(self) -> None:
        """Take the stored partition offsets (at start and after a rebalance).

        Under the batch lock, so a batch in flight never sees its offsets replaced midway.
        """
        async with self.lock:
            self.applied = await self.store.offsets()

    async def handle(self, records: Sequence[RawRecord]) -> BatchOutcome:
        """Process one batch of input records exactly once into the store.

        A consumer may deliver records again (a seek back to the committed offsets after a
        rebalance can repeat what a batch already holds): repeated (partition, offset) pairs are
        dropped, each partition's records are taken in offset order, and the store refuses a
        commit whose first offset of a partition is not past the stored one.
        """
        async with self.lock:
            ordered = _unique_in_order(records)
            skipped_total, conflicts = 0, 0
            for _ in range(MAX_CONFLICT_RETRIES):
                fresh = [r for r in ordered if r.offset > self.applied.get(r.position, -1)]
                skipped_total = len(records) - len(fresh)
                if not fresh:
                    return BatchOutcome(skipped=skipped_total)
                with self.stage_seconds.labels("decode").time():
                    observations, dead, ignored = self._decode(fresh)
                first_offsets, offsets = _offset_ranges(fresh)
                try:
                    result, tries = await self._commit(
                        lambda obs=observations: self.engine.process(obs),
                        offsets=offsets,
                        first_offsets=first_offsets,
                        dead_letters=dead,
                        observations=observations,
                    )
                except AlreadyApplied:
                    log.info("offsets moved under this batch (a replay, or another worker)")
                    self.applied = await self.store.offsets()
                    continue
                conflicts += tries
                self.applied.update(offsets)
                return BatchOutcome(
                    len(observations), tuple(dead), skipped_total, result, conflicts,
                    tuple(ignored),
                )
            message = "input offsets kept moving under this batch; giving up on it"
            raise AlreadyApplied(message)

    async def step(self, compute: Callable[[], StepResult]) -> StepResult:
        """Commit a timer or operator step (advance, merge, remove) like a batch."""
        async with self.lock:
            result, _ = await self._commit(compute)
            return result

    async def _commit(
        self,
        compute: Callable[[], StepResult],
        offsets: dict[str, int] | None = None,
        first_offsets: dict[str, int] | None = None,
        dead_letters: Sequence[tuple[RawRecord, DecodeError]] = (),
        observations: Sequence[Observation] = (),
    ) -> tuple[StepResult, int]:
        """Compute, store atomically, apply; on a version conflict reload and recompute."""
        for attempt in range(MAX_CONFLICT_RETRIES):
            with self.stage_seconds.labels("engine").time():
                result = compute()
            with self.stage_seconds.labels("encode").time():
                records = self.outbox.records(result, dead_letters, offsets, observations)
            if not (result.upserts or result.deletions or records or offsets):
                self.engine.apply(result)
                return result, attempt
            commit = Commit(
                expected=result.expected,
                upserts=result.upserts,
                deletions=result.deletions,
                outbox=records,
                offsets=offsets or {},
                first_offsets=first_offsets or {},
                writer=self.writer,
                generation=self.generation,
            )
            try:
                with self.stage_seconds.labels("store").time():
                    await self.store.commit(commit)
            except VersionConflict as exc:
                await self._reload(exc.keys)
                continue
            except AlreadyApplied:
                # Offsets this step names were applied already: by another worker, or by this
                # very commit whose reply was lost (the retry is what the store refused). Then
                # the clusters it wrote are in the store but not in the engine, and the change
                # follower skips this writer's own changes: take what it touched from the store.
                await self._reload(_touched(result))
                raise
            with self.stage_seconds.labels("apply").time():
                self.engine.apply(result)
            return result, attempt
        message = f"{MAX_CONFLICT_RETRIES} version conflicts in a row"
        raise VersionConflict([message])

    async def _reload(self, keys: Sequence[str]) -> None:
        current = await self.store.get(keys)
        gone = [k for k in keys if k not in current]
        self.engine.load(current.values(), deletions=gone, force=True)

    def _decode(self, records: Sequence[RawRecord]) -> tuple[
        list[Observation],
        list[tuple[RawRecord, DecodeError]],
        list[tuple[RawRecord, SkippedRecord]],
    ]:
        """Observations, dead letters and skipped records; every record is in the offset range."""
        observations: list[Observation] = []
        dead: list[tuple[RawRecord, DecodeError]] = []
        ignored: list[tuple[RawRecord, SkippedRecord]] = []
        for record in records:
            stream = self._streams.get(record.topic)
            try:
                if stream is None:
                    message = f"topic {record.topic!r} belongs to no configured stream"
                    raise DecodeError("unknown_stream", message, record.value or b"")
                obs = decode(
                    record.value or b"",
                    self.settings.input_format,
                    stream,
                    stream_id=stream.stream_id,
                    key=_key_text(record),
                    timestamp=record.timestamp,
                    max_bytes=self.settings.max_record_bytes,
                    dimension=self.dimension,
                    strict=self.settings.strict_input,
                )
            except SkippedRecord as exc:
                log.debug("skipped %s: %s", record, exc)
                ignored.append((record, exc))
                continue
            except DecodeError as exc:
                log.debug("dead letter %s: %s", record, exc)
                dead.append((record, exc))
                continue
            if obs is not None:
                self.dimension = self.dimension or len(obs.vector)
                observations.append(obs)
        return observations, dead, ignored


def _key_text(record: RawRecord) -> str:
    """The detection key; a record without one gets ``<timestamp>_<partition>_<offset>``."""
    if record.key:
        return record.key.decode("utf-8", errors="replace")
    return f"{record.timestamp}_{record.partition}_{record.offset}"


def _touched(result: StepResult) -> list[str]:
    """Every cluster key a step reads or writes."""
    keys = dict.fromkeys(result.expected)
    keys.update(dict.fromkeys(c.key for c in result.upserts))
    keys.update(dict.fromkeys(result.deletions))
    return list(keys)


def _unique_in_order(records: Sequence[RawRecord]) -> list[RawRecord]:
    """Each (partition, offset) once, every partition's records in offset order.

    Partitions keep the places their records had in the batch; only the order within each
    partition changes, back to Kafka's.
    """
    by_partition: dict[str, dict[int, RawRecord]] = {}
    for record in records:
        by_partition.setdefault(record.position, {}).setdefault(record.offset, record)
    queues = {p: iter(sorted(found.items())) for p, found in by_partition.items()}
    slots = [r.position for r in records]
    wanted = {p: len(found) for p, found in by_partition.items()}
    ordered: list[RawRecord] = []
    for slot in slots:
        if wanted[slot]:
            wanted[slot] -= 1
            ordered.append(next(queues[slot])[1])
    return ordered


def _offset_ranges(records: Sequence[RawRecord]) -> tuple[dict[str, int], dict[str, int]]:
    """First and last offset of every partition in ``records`` (in offset order)."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for record in records:
        first.setdefault(record.position, record.offset)
        last[record.position] = record.offset
    return first, last
