"""The processing core shared by the Faust worker and batch mode: records in, one commit out.

For a batch of raw input records: drop those at or below the partition offsets already stored
(a replay changes nothing), decode the rest (bad ones become dead letters, ones without the
selected field are skipped as UVAP skips them; both still count as applied), run the engine,
and store clusters, events, dead letters and the new offsets in one atomic commit. Events and
dead letters reach Kafka later, from the outbox, so none is lost if the process dies here.

With ``overlap`` a batch's commit is sent and the next batch decided while the store works on
it: the result is applied to the engine when sent, and taken back if the store refuses it
(``_InFlight``); its records are then handled again, one commit at a time, before anything
else. Offsets and outbox records are only ever what the store holds, so a worker that dies
with a commit in flight loses nothing where the next owner of its partitions starts from the
stored offsets (bulk ingest, batch mode; the Faust agent does not, so it never overlaps).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
from prometheus_client import Histogram

from app.codec.decode import decode
from app.config import ClusteringConfig, parse_config
from app.engine import Engine, Observation, StepResult
from app.engine.clock import NOT_HOLDING, ORDERED, EventClock, PartitionTime, Scan, boundary
from app.engine.engine import Checkpoint
from app.errors import (
    AlreadyApplied,
    ClockMoved,
    ConfigChanged,
    DecodeError,
    SkippedRecord,
    VersionConflict,
)
from app.settings import Settings
from app.store.base import ClockState, Commit, StateStore
from app.worker.metrics import stage_histogram
from app.worker.outbox import OutboxWriter

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 50
REPLAYED = "replayed:"  # the prefix of a store generation rebuilt by replaying the inputs
ACTIVE_WINDOW_MS = 2_000  # another worker's partition this quiet no longer holds this one back
WIRE_TURNS = 3  # event-loop turns a commit is given to reach Redis (``_on_the_wire``)


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
    the records skipped as UVAP skips them (no selected field), their offsets applied; ``late``
    counts observations older than the watermark when they came (applied all the same);
    ``merges`` the merge passes the batch's event time brought.
    """

    observations: int = 0
    dead_letters: tuple[tuple[RawRecord, DecodeError], ...] = ()
    skipped: int = 0
    conflicts: int = 0
    skipped_records: tuple[tuple[RawRecord, SkippedRecord], ...] = ()
    late: int = 0
    merges: int = 0


@dataclass(slots=True)
class _Decoded:
    """A batch's fresh records decoded: observations with the index of their record."""

    records: list[RawRecord]
    observations: list[Observation]
    rows: list[int]
    dead: list[tuple[int, DecodeError]]
    ignored: list[tuple[int, SkippedRecord]]

    def between(self, start: int, end: int) -> tuple[
        list[tuple[RawRecord, DecodeError]], list[tuple[RawRecord, SkippedRecord]]
    ]:
        """Dead letters and skipped records among records ``start:end``."""
        dead = [(self.records[r], e) for r, e in self.dead if start <= r < end]
        ignored = [(self.records[r], e) for r, e in self.ignored if start <= r < end]
        return dead, ignored


@dataclass(slots=True)
class _Tally:
    """Running totals of one batch over its segments and retries."""

    observations: int = 0
    dead: list[tuple[RawRecord, DecodeError]] = field(default_factory=list)
    ignored: list[tuple[RawRecord, SkippedRecord]] = field(default_factory=list)
    conflicts: int = 0
    late: int = 0
    merges: int = 0

    def outcome(self, skipped: int) -> BatchOutcome:
        return BatchOutcome(
            self.observations, tuple(self.dead), skipped, self.conflicts, tuple(self.ignored),
            self.late, self.merges,
        )


@dataclass(frozen=True, slots=True)
class _Redo:
    """A segment's records with the offsets and clock from before it: what takes it back."""

    records: list[RawRecord]
    applied: dict[str, int]
    clock: tuple[dict[str, PartitionTime], int | None, int | None]


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A commit sent to the store and applied here, not yet confirmed."""

    task: asyncio.Task[None]
    redo: _Redo
    engine: Checkpoint


class _Redone(Exception):
    """A commit in flight was refused and its records handled again: decide this batch anew."""


def wall_ms() -> int:
    """The wall clock in ms: only idle inputs let it move the watermark (app/engine/clock.py)."""
    return int(time.time() * 1000)


class Pipeline:
    """Engine plus store plus codecs; every change goes through ``_commit``.

    One asyncio lock serialises this process's batches and timer steps, so a result is always
    computed from the engine state it is committed over; other workers are caught by the
    store's version checks and answered by reloading the clusters named and trying again.

    Event time drives the timers (app/engine/clock.py): a batch is cut where its watermark
    crosses a merge boundary, the part before it is stored, the merge pass runs and is stored
    (once per boundary, whichever worker gets there), then the rest of the batch follows, so
    every mode and batch size gives the same clusters. ``ordered`` is for input released in
    event-time order (batch mode, bulk ingest): the watermark is then the newest event time
    seen. ``batch`` is for input read to its end: no partition is ever idle. ``overlap``
    decides the next batch while the last one's commit is in flight (module docstring).
    Everything but ``handle`` waits for a commit in flight first (``exclusive``).
    """

    def __init__(
        self,
        engine: Engine,
        store: StateStore,
        config: ClusteringConfig,
        settings: Settings,
        stage_seconds: Histogram | None = None,
        *,
        ordered: bool = False,
        batch: bool = False,
        overlap: bool = False,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.overlap = overlap
        self._inflight: _InFlight | None = None
        self._unsettled: list[RawRecord] = []  # records of a refused commit, to handle again
        self._redoing = False
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
        self.now_ms = now_ms
        self.config_version: int | None = None  # the stored config's (None: unchecked)
        self.on_config: list[Callable[[ClusteringConfig], None]] = []  # after a reload here
        self.clock_partitions: Mapping[str, PartitionTime] = {}  # each one's, as stored
        self.frontiers: Mapping[str, PartitionTime] = {}  # the bulk workers' published places
        self.clock = EventClock(
            None,
            lateness_ms=settings.allowed_lateness_ms,
            idle_ms=0 if batch else settings.idle_timeout_s * 1000,
            ordered=ordered,
        )
        self.reconfigure(config)

    def use_generation(self, marker: str) -> None:
        """Build commits on store generation ``marker``.

        A generation rebuilt by replaying inputs (``replayed:<id>``) tags its event ids with
        ``~<id[:8]>``: an id published before the store was lost never comes back with other
        content. Otherwise ids are the plain ``<cluster>@<version>``.
        """
        self.generation = marker
        replayed = marker.startswith(REPLAYED)
        self.outbox.epoch = marker[len(REPLAYED) :][:8] if replayed else ""

    def reconfigure(self, config: ClusteringConfig) -> None:
        """Use a new clustering config from now on (the engine keeps its clusters)."""
        self.config = config
        self.engine.reconfigure(config)
        self.outbox.reconfigure(config)
        self._streams = {s.topic: s for s in config.streams}
        self.clock.interval_ms = None if config.merging is None else config.merging.time_interval_ms

    async def load_offsets(self) -> None:
        """Take the stored partition offsets and event clock (at start, after a rebalance).

        Under the batch lock, so a batch in flight never sees its offsets replaced midway.
        """
        async with self.exclusive():
            self.applied = await self.store.offsets()
            self._take_clock(await self.store.clock())

    def _take_clock(self, state: ClockState) -> None:
        """Merge the stored clock into this pipeline's: times only grow, boundaries only move on."""
        clock = self.clock
        stored = dict(state.partitions)
        self.clock_partitions, self.frontiers = stored, state.frontiers
        if clock.ordered and stored:
            newest = max(p.event_time for p in stored.values())
            stored = {ORDERED: PartitionTime(newest, max(p.active_ms for p in stored.values()))}
        for position, theirs in stored.items():
            ours = clock.partitions.get(position)
            if ours is None or (theirs.event_time, theirs.active_ms) > (
                ours.event_time, ours.active_ms
            ):
                clock.partitions[position] = theirs
        if state.merge_last is not None:
            clock.merge_last = max(state.merge_last, clock.merge_last or state.merge_last)
        clock.watermark = clock.now(self.now_ms())

    async def handle(self, records: Sequence[RawRecord]) -> BatchOutcome:
        """Process one batch of input records exactly once into the store.

        A consumer may deliver records again (a seek back to the committed offsets after a
        rebalance can repeat what a batch already holds): repeated (partition, offset) pairs are
        dropped, each partition's records are taken in offset order, and the store refuses a
        commit whose first offset of a partition is not past the stored one.
        """
        async with self.lock:
            return await self._handle(records, overlap=self.overlap)

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """The batch lock, with the commit in flight confirmed (or its records handled again)."""
        async with self.lock:
            await self._settle()
            yield

    async def settle(self) -> None:
        """Wait until every batch handled so far is in the store (before stopping, say)."""
        async with self.exclusive():
            pass

    async def confirm(self) -> None:
        """``settle`` if the store has answered the commit in flight; never waits for one.

        (A batch handled meanwhile may have sent another: that one is left in flight.)
        """
        if self._answered():
            async with self.lock:
                if self._answered():
                    await self._settle()

    def _answered(self) -> bool:
        """Whether a refused commit's records wait, or the store answered the one in flight."""
        inflight = self._inflight
        return bool(self._unsettled) or (inflight is not None and inflight.task.done())

    async def _settle(self) -> bool:
        """Confirm the commit in flight; True when it was refused and its records handled again.

        A refused commit is taken back (engine, offsets, clock) and its records handled again
        one commit at a time, with the usual retries. If that fails too (the store is down),
        the records wait for the next call: nothing is decided before them.
        """
        inflight = self._inflight
        if inflight is not None:
            try:
                with self.stage_seconds.labels("store").time():
                    await asyncio.shield(inflight.task)  # a cancelled caller leaves it running
            except Exception as exc:  # noqa: BLE001 - whatever refused it, the records go again
                log.info("a commit in flight was refused (%s); handling its %d records again",
                         type(exc).__name__, len(inflight.redo.records))
                self.engine.restore(inflight.engine)
                self.applied = inflight.redo.applied
                self.clock.restore(inflight.redo.clock)
                self._unsettled = inflight.redo.records
            self._inflight = None
        if not self._unsettled or self._redoing:  # (the redo's own commits come through here)
            return False
        self._redoing = True
        try:
            await self._handle(self._unsettled, overlap=False)
        finally:
            self._redoing = False
        self._unsettled = []  # kept until stored, so frontiers wait for them too
        return True

    async def _handle(self, records: Sequence[RawRecord], overlap: bool) -> BatchOutcome:
        """``handle`` with the batch lock held."""
        ordered = _unique_in_order(records)
        tally = _Tally()
        for _ in range(MAX_CONFLICT_RETRIES):
            fresh = [r for r in ordered if r.offset > self.applied.get(r.position, -1)]
            if not fresh:
                return tally.outcome(len(records))
            with self.stage_seconds.labels("decode").time():
                decoded = self._decode(fresh)
            try:
                await self._segments(decoded, tally, overlap)
            except _Redone:
                continue
            except AlreadyApplied:
                log.info("offsets moved under this batch (a replay, or another worker)")
                self.applied = await self.store.offsets()
                continue
            except ClockMoved:
                self._take_clock(await self.store.clock())
                continue
            except ConfigChanged:
                await self._follow_config()
                continue
            return tally.outcome(len(records) - len(fresh))
        message = "input offsets kept moving under this batch; giving up on it"
        raise AlreadyApplied(message)

    async def _segments(self, decoded: _Decoded, tally: _Tally, overlap: bool) -> None:
        """Store the batch in segments cut at merge boundaries, each pass between two."""
        observations, rows = decoded.observations, decoded.rows
        positions = [decoded.records[r].position for r in rows]
        times = [o.time for o in observations]
        start_rec = start_obs = 0
        while start_rec < len(decoded.records):
            scan = self.clock.scan(positions[start_obs:], times[start_obs:], self.now_ms())
            end_obs = start_obs + scan.cut
            end_rec = len(decoded.records) if scan.merge_at is None else rows[end_obs]
            if end_rec > start_rec:
                part = observations[start_obs:end_obs]
                tally.conflicts += await self._store_segment(
                    decoded, start_rec, end_rec, part, positions[start_obs:end_obs], scan, tally,
                    overlap,
                )
            if scan.merge_at is not None:
                tally.merges += await self._timers(scan.merge_at)
            start_rec, start_obs = end_rec, end_obs

    async def _store_segment(
        self,
        decoded: _Decoded,
        start: int,
        end: int,
        observations: list[Observation],
        positions: list[str],
        scan: Scan,
        tally: _Tally,
        overlap: bool,
    ) -> int:
        """Commit records ``start:end`` of the batch with their observations; version retries.

        ``positions`` are the observations' partitions, for their newest event times. With
        ``overlap`` the commit is sent and this returns at once (``_settle`` confirms it).
        """
        segment = decoded.records[start:end]
        dead, ignored = decoded.between(start, end)
        first_offsets, offsets = _offset_ranges(segment)
        event_times: dict[str, int] = {}
        for where, obs in zip(positions, observations, strict=True):
            event_times[where] = max(obs.time, event_times.get(where, obs.time))
        start_clock = None if scan.merge_start is None else (None, scan.merge_start)
        redo = _Redo(segment, dict(self.applied), self.clock.checkpoint()) if overlap else None
        _, tries = await self._commit(
            lambda: self.engine.process(observations),
            offsets=offsets,
            first_offsets=first_offsets,
            dead_letters=dead,
            observations=observations,
            event_times=event_times,
            merge_clock=start_clock,
            redo=redo,
        )
        self.applied.update(offsets)
        self.clock.adopt(scan)
        tally.observations += len(observations)
        tally.dead += dead
        tally.ignored += ignored
        tally.late += scan.late
        return tries

    async def _timers(self, at: int) -> int:
        """Realization and retention up to watermark ``at``, then its merge pass if one is due.

        Returns 1 when this pipeline stored a merge pass. Another worker may have stored the
        pass for the same boundary first: then the store refuses this one (``ClockMoved``)
        and that worker's result stands.
        """
        await self._commit(lambda: self.engine.advance(at))
        clock = self.clock
        if not clock.merge_due(at) or clock.interval_ms is None:
            clock.watermark = at if clock.watermark is None else max(clock.watermark, at)
            return 0
        move = (clock.merge_last, boundary(at, clock.interval_ms))
        try:
            await self._commit(lambda: self.engine.merge(at), merge_clock=move)
        except ClockMoved as exc:
            log.debug("merge pass at %d stored by another worker", at)
            clock.merge_last = exc.held
            return 0
        clock.merged(at)
        return 1

    async def follow_config(self) -> bool:
        """Take the deployment's stored config when a reload moved it on; True if it did.

        Every commit names the config version it was computed under and the store refuses a
        stale one, so after a reload nothing is stored under the old config, by any worker.
        """
        async with self.exclusive():
            return await self._follow_config()

    async def _follow_config(self) -> bool:
        """``follow_config`` with the batch lock held."""
        stored = await self.store.config()
        if stored is None or stored.version == self.config_version:
            return False
        config = parse_config(orjson.loads(stored.body))
        self.reconfigure(config)
        self.config_version = stored.version
        log.info("config version %d in force", stored.version)
        for listener in self.on_config:
            listener(config)
        return True

    async def store_config(self, config: ClusteringConfig) -> int:
        """Store ``config`` as the deployment's next version and follow it; returns the version.

        A reload that raced another one follows the winner and tries once more on top of it.
        """
        body = orjson.dumps(config.to_dict(), option=orjson.OPT_SORT_KEYS)
        async with self.exclusive():
            for _ in range(2):
                stored = await self.store.config()
                if stored is not None and stored.body == body:
                    break
                held = 0 if stored is None else stored.version
                try:
                    await self.store.commit(Commit(config_version=held, new_config=body,
                                                   generation=self.generation))
                    break
                except ConfigChanged:
                    continue
            await self._follow_config()
        return self.config_version or 0

    async def expect(self, positions: list[str]) -> None:
        """Input partitions the watermark waits for until heard from (``EventClock.expect``)."""
        async with self.exclusive():
            self.clock.expect(positions, self.now_ms())

    async def refresh_clock(self) -> None:
        """Take the other workers' partition times and merge boundary from the store.

        Every worker does this every second, so its watermark follows partitions it does not
        read, and a partition counts as idle only when no worker applied anything from it.
        """
        async with self.exclusive():
            self._take_clock(await self.store.clock())

    async def release_bound(
        self, mine: set[str], refresh: bool
    ) -> tuple[int, str, str, int] | None:
        """The first place in event-time order this worker may not decide yet, or None.

        A place is (event time, stream, topic, partition), the order bulk ingest releases
        records in (app/worker/live_order.py). Each partition another worker reads holds this
        one back at its frontier, the next record it has not applied (or, before one is
        published, the last it applied), plus ``FVC_LOOKAHEAD_MS``; one quiet for
        ``ACTIVE_WINDOW_MS`` of wall clock does not. With no lookahead, the workers decide in
        the one order a single reader would, so they give its clusters.
        ``refresh`` reads the others' places from the store first (a worker waiting on them).
        """
        if refresh:
            await self.refresh_clock()
        now = self.now_ms()
        places = []
        for where in self.clock_partitions.keys() | self.frontiers.keys():
            if where in mine:
                continue
            held = self.frontiers.get(where)
            if held is None or now - held.active_ms >= ACTIVE_WINDOW_MS:
                held = self.clock_partitions.get(where)
                if held is None or now - held.active_ms >= ACTIVE_WINDOW_MS:
                    continue
            if held.event_time == NOT_HOLDING:
                continue
            topic, _, partition = where.rpartition(":")
            stream = self._streams[topic].stream_id if topic in self._streams else topic
            places.append((held.event_time + self.settings.lookahead_ms, stream, topic,
                           int(partition)))
        return min(places) if places else None

    async def publish_frontiers(self, frontiers: dict[tuple[str, int], int]) -> bool:
        """Store where this worker's partitions stand, for the others' ``release_bound``.

        Only once the batches handled before are stored: another worker must be able to read
        the clusters of every record before a frontier. The commit in flight is waited for
        without the batch lock, so the next batch is decided meanwhile. False when one was
        refused (its records are handled again first): these frontiers are not published.
        """
        inflight = self._inflight
        if inflight is not None:
            try:
                await asyncio.shield(inflight.task)
            except Exception:  # noqa: BLE001 - the next batch or timer handles it again
                return False
        if self._unsettled:
            return False
        await self.store.publish_frontiers(
            {position(t, p): time for (t, p), time in frontiers.items()}, self.now_ms()
        )
        return True

    async def tick(self) -> int:
        """Timer: the watermark from every worker's partitions; the timers due at it.

        Returns the merge passes stored. Inputs that stopped arriving let the watermark move
        with the wall clock once idle (``FVC_IDLE_TIMEOUT``): the only wall-clock step.
        """
        async with self.exclusive():
            self._take_clock(await self.store.clock())
            at = self.clock.watermark
            try:
                return 0 if at is None else await self._timers(at)
            except ConfigChanged:
                await self._follow_config()
                return 0

    async def step(self, compute: Callable[[], StepResult]) -> StepResult:
        """Commit an operator step (remove, merge on request) like a batch."""
        async with self.exclusive():
            result, _ = await self._commit(compute)
            return result

    async def _commit(
        self,
        compute: Callable[[], StepResult],
        offsets: dict[str, int] | None = None,
        first_offsets: dict[str, int] | None = None,
        dead_letters: Sequence[tuple[RawRecord, DecodeError]] = (),
        observations: Sequence[Observation] = (),
        event_times: dict[str, int] | None = None,
        merge_clock: tuple[int | None, int] | None = None,
        redo: _Redo | None = None,
    ) -> tuple[StepResult, int]:
        """Compute, store atomically, apply; on a version conflict reload and recompute.

        The result is computed on top of the commit in flight, if any, which is confirmed
        before this one is stored; refused, it was handled again and ``_Redone`` says that
        this batch must be decided anew. With ``redo`` this commit is sent, applied and left
        in flight.
        """
        for attempt in range(MAX_CONFLICT_RETRIES):
            with self.stage_seconds.labels("engine").time():
                result = compute()
            with self.stage_seconds.labels("encode").time():
                records = self.outbox.records(result, dead_letters, offsets, observations)
            if await self._settle():
                raise _Redone
            changes = result.upserts or result.deletions or records
            if not (changes or offsets or merge_clock):
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
                event_times=event_times or {},
                active_ms=self.now_ms(),
                merge_clock=merge_clock,
                config_version=self.config_version,
            )
            if redo is not None:
                checkpoint = self.engine.checkpoint(result)
                with self.stage_seconds.labels("apply").time():
                    self.engine.apply(result)
                task = asyncio.get_running_loop().create_task(self.store.commit(commit))
                self._inflight = _InFlight(task, redo, checkpoint)
                await _on_the_wire()
                return result, attempt
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

    def _decode(self, records: list[RawRecord]) -> _Decoded:
        """Observations, dead letters and skipped records, each with the index of its record."""
        decoded = _Decoded(records, [], [], [], [])
        observations, rows = decoded.observations, decoded.rows
        dead, ignored = decoded.dead, decoded.ignored
        for row, record in enumerate(records):
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
                ignored.append((row, exc))
                continue
            except DecodeError as exc:
                log.debug("dead letter %s: %s", record, exc)
                dead.append((row, exc))
                continue
            if obs is not None:
                self.dimension = self.dimension or len(obs.vector)
                observations.append(obs)
                rows.append(row)
        return decoded


async def _on_the_wire() -> None:
    """Let a commit just started reach Redis before this thread decides the next batch.

    The next batch is decided on the event loop, which cannot send while it decides: the
    commit must be written to the socket first. redis-py needs two turns of the loop for that
    (a zero-timeout read that checks the pooled connection, then the write, which the kernel
    takes whole on a local socket); the third is a spare. Fewer turns cost only speed: Redis
    then gets the commit when the next batch has been decided (``benchmarks/overlap.py``
    shows which).
    """
    for _ in range(WIRE_TURNS):
        await asyncio.sleep(0)


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
