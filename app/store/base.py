"""The state store contract: what the engine's results need from a place that keeps them.

Two implementations behave identically (one contract test suite runs over both): ``MemoryStore``
for offline runs and unit tests, ``RedisStore`` for workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.engine.clock import PartitionTime
from app.engine.types import Cluster


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A record waiting to be published: topic, Kafka key, value, timestamp and headers.

    An empty ``value`` is a tombstone (compacted topics); an empty ``topic`` means the
    downstream event topic.
    """

    event_id: str
    key: bytes
    value: bytes
    timestamp: int
    topic: str = ""
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox record as read back, with the store's own id used to acknowledge it."""

    entry_id: str
    record: OutboxRecord


@dataclass(frozen=True, slots=True)
class Commit:
    """One atomic write: cluster changes, their events and the input offsets that caused them.

    ``expected`` maps each touched key to the version the writer started from (0 = absent);
    ``offsets`` maps ``"topic:partition"`` to the last input offset this commit applies, and
    ``first_offsets`` to the first (a partition absent there starts at its last): the store
    refuses the commit when a first offset is not past the stored one, so a batch that is even
    partly a replay never applies. ``writer`` names who wrote it, so that writer's change
    follower can leave it out: a worker has its own commits in its engine already ("" =
    anonymous, followed by everyone). ``generation``, when given, must be the store's generation
    marker (``StoreLost`` otherwise), so nothing lands on a store that lost its data.

    ``event_times`` maps partitions to the newest event time this commit applies from them
    (stored times only grow), each marked active at wall time ``active_ms``: the watermark is
    computed from them (app/engine/clock.py). ``merge_clock`` ``(expected, new)`` moves the last
    merge boundary only if the store holds ``expected`` (None = none yet; ``ClockMoved``
    otherwise), so each boundary's merge pass is stored once, by whichever worker gets there.

    ``config_version``, when given, must be the version of the deployment's stored config (0
    before any; ``ConfigChanged`` otherwise), so nothing is stored under a config a reload
    replaced; with ``new_config`` (its canonical JSON) the commit stores the next version.
    """

    expected: Mapping[str, int] = field(default_factory=dict)
    upserts: Sequence[Cluster] = ()
    deletions: Sequence[str] = ()
    outbox: Sequence[OutboxRecord] = ()
    offsets: Mapping[str, int] = field(default_factory=dict)
    first_offsets: Mapping[str, int] = field(default_factory=dict)
    writer: str = ""
    generation: str = ""
    event_times: Mapping[str, int] = field(default_factory=dict)
    active_ms: int = 0
    merge_clock: tuple[int | None, int] | None = None
    config_version: int | None = None
    new_config: bytes = b""

    def offset_ranges(self) -> list[tuple[str, int, int]]:
        """``(partition, first, last)`` for every partition this commit moves."""
        return [(p, self.first_offsets.get(p, last), last) for p, last in self.offsets.items()]


@dataclass(frozen=True, slots=True)
class StoredConfig:
    """The deployment's clustering config: its canonical JSON and version (1, 2, ...)."""

    version: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ClockState:
    """The stored event-time clock: each partition's time, and the last merge boundary.

    ``frontiers`` are what bulk workers published of the partitions they read: the event time
    of each one's next record not yet applied (``NOT_HOLDING`` for one with nothing to give
    soon), with the wall time it was published at (app/worker/live_order.py).
    """

    partitions: Mapping[str, PartitionTime] = field(default_factory=dict)
    merge_last: int | None = None
    frontiers: Mapping[str, PartitionTime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Changes since a cursor: clusters now current, keys now deleted, and the next cursor.

    ``reset`` is True when the cursor was too old to follow: reload everything instead.
    """

    cursor: str
    upserts: Sequence[Cluster] = ()
    deletions: Sequence[str] = ()
    reset: bool = False


class StateStore(Protocol):
    """Where cluster state lives; every method may raise ``StoreUnavailable``."""

    async def start(self) -> None:
        """Connect and check the store answers."""

    async def close(self) -> None:
        """Release connections."""

    async def commit(self, commit: Commit) -> None:
        """Apply ``commit`` atomically.

        Raises ``StoreLost`` when the commit names a generation the store does not hold,
        ``AlreadyApplied`` when an offset is not past the stored one, ``VersionConflict``
        (naming the keys) when a key's version differs from ``expected``, ``ClockMoved``
        when the merge boundary is not the one ``merge_clock`` expects, and ``ConfigChanged``
        when the stored config is not at ``config_version``, checked in that order; in every
        case nothing is written.
        """

    async def generation(self) -> str | None:
        """The generation marker: written once when the state is built, gone if it is lost."""

    async def claim_generation(self, generation: str, ttl_s: float | None = None) -> str:
        """Write ``generation`` unless a marker exists; returns the marker now in force.

        With ``ttl_s`` the claim lapses after that long (a claim to rebuild the store).
        """

    async def set_generation(self, generation: str) -> None:
        """Write the marker, replacing any (the rebuild that claimed it is done)."""

    async def release_generation(self, generation: str) -> None:
        """Remove the marker if it is still ``generation`` (a rebuild that failed lets go)."""

    async def persistence_problems(self) -> list[str]:
        """Server settings that break fvc's guarantees (a restart or eviction loses state)."""

    async def get(self, keys: Sequence[str]) -> dict[str, Cluster]:
        """Current clusters for ``keys`` (absent keys are left out), in one round trip."""

    def load_all(self, chunk: int = 10_000) -> AsyncIterator[list[Cluster]]:
        """Every cluster, in chunks, without a round trip per key (index bootstrap)."""

    async def count(self) -> int:
        """Number of clusters."""

    async def offsets(self) -> dict[str, int]:
        """Last applied offset of every ``"topic:partition"`` seen."""

    async def config(self) -> StoredConfig | None:
        """The deployment's stored config (None before the first worker stored one)."""

    async def clock(self) -> ClockState:
        """The partitions' event times and the last merge boundary, in one round trip."""

    async def publish_frontiers(self, frontiers: Mapping[str, int], now_ms: int) -> None:
        """Store where the partitions a worker reads stand (``ClockState.frontiers``).

        Outside any commit: a frontier only says how far others may go without waiting, so
        one published late (lower than the truth) makes them wait longer, never decide wrong.
        """

    async def change_cursor(self) -> str:
        """A cursor at the end of the change stream (take it before ``load_all``)."""

    async def changes(
        self, cursor: str, limit: int = 10_000, *, skip_writer: str = ""
    ) -> ChangeBatch:
        """Cluster changes after ``cursor``, for keeping an index replica current.

        Changes committed by ``skip_writer`` are left out (the cursor still moves past them).
        """

    async def outbox_pending(self, limit: int = 1_000) -> list[OutboxEntry]:
        """Oldest events not yet acknowledged as published, in commit order."""

    async def outbox_ack(self, entries: Sequence[OutboxEntry]) -> None:
        """Forget published events."""

    async def clear(self) -> None:
        """Delete everything under this store's namespace (tests, ``fvc local`` resets)."""
