"""The reference state store in plain Python dicts, for offline runs and unit tests.

It follows the same contract as ``RedisStore`` (one suite tests both): versioned writes,
partition offsets, a trimmed change log read by cursor, and an outbox. Clusters are frozen
values, so they are kept and handed out by reference: no vector is ever copied here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from app.engine.clock import PartitionTime
from app.engine.types import Cluster
from app.errors import AlreadyApplied, ClockMoved, ConfigChanged, StoreLost, VersionConflict
from app.store.base import (
    ChangeBatch,
    ClockState,
    Commit,
    OutboxEntry,
    OutboxRecord,
    StoredConfig,
)

DEFAULT_CHANGES_MAXLEN = 1_000_000


def _cursor(seq: int) -> str:
    """A cursor shaped like a Redis stream id, so callers can treat both alike."""
    return f"0-{seq}"


def _seq(cursor: str) -> int:
    """The sequence number inside a cursor made by ``_cursor`` (or ``"0-0"``)."""
    return int(cursor.rpartition("-")[2])


class MemoryStore:
    """All cluster state of one process; ``commit`` is atomic because nothing awaits inside."""

    def __init__(self, changes_maxlen: int = DEFAULT_CHANGES_MAXLEN) -> None:
        """Keep about ``changes_maxlen`` change entries, as Redis trims its change stream."""
        self._maxlen = changes_maxlen
        self._clusters: dict[str, Cluster] = {}
        self._offsets: dict[str, int] = {}
        self._changes: list[tuple[int, str, str]] = []  # sequence, key, writer
        self._last_seq = 0
        self._cleared_at = 0
        self._trimmed = False
        self._outbox: dict[int, OutboxRecord] = {}
        self._outbox_seq = 0
        self._generation: str | None = None
        self._times: dict[str, PartitionTime] = {}
        self._frontiers: dict[str, PartitionTime] = {}
        self._merge_last: int | None = None
        self._config: StoredConfig | None = None

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def generation(self) -> str | None:
        """The marker, None until claimed or after ``clear()``."""
        return self._generation

    async def claim_generation(self, generation: str, ttl_s: float | None = None) -> str:
        """Set the marker unless one is set; the marker in force (one process: no lapse)."""
        if self._generation is None:
            self._generation = generation
        return self._generation

    async def set_generation(self, generation: str) -> None:
        """Replace the marker."""
        self._generation = generation

    async def release_generation(self, generation: str) -> None:
        """Drop the marker if it is still ``generation``."""
        if self._generation == generation:
            self._generation = None

    async def persistence_problems(self) -> list[str]:
        """None to report: this store lives and dies with its process by design."""
        return []

    async def commit(self, commit: Commit) -> None:
        """Check offsets, then versions, then apply everything (see ``StateStore.commit``)."""
        if commit.generation and commit.generation != self._generation:
            message = f"generation {commit.generation} is not the store's ({self._generation})"
            raise StoreLost(message)
        self._check_offsets(commit)
        self._check_versions(commit)
        if commit.config_version is not None:
            held = 0 if self._config is None else self._config.version
            if held != commit.config_version:
                raise ConfigChanged(held)
        if commit.merge_clock is not None:
            expected, new = commit.merge_clock
            if self._merge_last != expected:
                raise ClockMoved(self._merge_last)
            self._merge_last = new
        for cluster in commit.upserts:
            self._clusters[cluster.key] = cluster
            self._log(cluster.key, commit.writer)
        for key in commit.deletions:
            self._clusters.pop(key, None)
            self._log(key, commit.writer)
        for record in commit.outbox:
            self._outbox_seq += 1
            self._outbox[self._outbox_seq] = record
        self._offsets.update(commit.offsets)
        if commit.new_config and commit.config_version is not None:
            self._config = StoredConfig(commit.config_version + 1, commit.new_config)
        for partition, event_time in commit.event_times.items():
            stored = self._times.get(partition)
            newest = event_time if stored is None else max(event_time, stored.event_time)
            self._times[partition] = PartitionTime(newest, commit.active_ms)

    def _check_offsets(self, commit: Commit) -> None:
        """Refuse a replay, even a partial one: every first offset must be past the stored one."""
        for partition, first, _last in commit.offset_ranges():
            stored = self._offsets.get(partition, -1)
            if first <= stored:
                message = f"{partition}@{first} is not past stored offset {stored}"
                raise AlreadyApplied(message)

    def _check_versions(self, commit: Commit) -> None:
        """Refuse the write if another writer moved any expected key."""
        clusters = self._clusters
        stale = [
            key
            for key, version in commit.expected.items()
            if (clusters[key].version if key in clusters else 0) != version
        ]
        if stale:
            raise VersionConflict(stale)

    def _log(self, key: str, writer: str) -> None:
        """Append to the change log, dropping old entries in bulk (like ``MAXLEN ~``)."""
        self._last_seq += 1
        self._changes.append((self._last_seq, key, writer))
        excess = len(self._changes) - self._maxlen
        if excess > self._maxlen // 10:
            del self._changes[:excess]
            self._trimmed = True

    async def get(self, keys: Sequence[str]) -> dict[str, Cluster]:
        """Current clusters for the keys present."""
        clusters = self._clusters
        return {key: clusters[key] for key in keys if key in clusters}

    async def load_all(self, chunk: int = 10_000) -> AsyncIterator[list[Cluster]]:
        """Every cluster as of the call, in lists of at most ``chunk``."""
        snapshot = list(self._clusters.values())
        for start in range(0, len(snapshot), chunk):
            yield snapshot[start : start + chunk]

    async def count(self) -> int:
        """Number of clusters."""
        return len(self._clusters)

    async def offsets(self) -> dict[str, int]:
        """Last applied offset of every partition seen."""
        return dict(self._offsets)

    async def config(self) -> StoredConfig | None:
        """The stored config."""
        return self._config

    async def clock(self) -> ClockState:
        """Every partition's event time and the last merge boundary."""
        return ClockState(dict(self._times), self._merge_last, dict(self._frontiers))

    async def publish_frontiers(self, frontiers: Mapping[str, int], now_ms: int) -> None:
        """Keep each frontier with the wall time it was published at."""
        for partition, event_time in frontiers.items():
            self._frontiers[partition] = PartitionTime(event_time, now_ms)

    async def change_cursor(self) -> str:
        """The cursor of the newest change (``"0-0"`` before any since the last clear)."""
        return self._end_cursor()

    def _end_cursor(self) -> str:
        """Cursor after the newest change; ``"0-0"`` as Redis says of a stream not yet made."""
        return _cursor(0 if self._last_seq == self._cleared_at else self._last_seq)

    async def changes(
        self, cursor: str, limit: int = 10_000, *, skip_writer: str = ""
    ) -> ChangeBatch:
        """Changes after ``cursor`` but ``skip_writer``'s.

        ``reset`` when some were dropped or cleared since it.
        """
        after = _seq(cursor)
        if self._is_stale(after):
            return ChangeBatch(cursor=self._end_cursor(), reset=True)
        start = max(after + 1 - self._first_seq(), 0)
        taken = self._changes[start : start + limit]
        if not taken:
            return ChangeBatch(cursor=cursor)
        keys = dict.fromkeys(key for _, key, w in taken if not skip_writer or w != skip_writer)
        current = self._clusters
        return ChangeBatch(
            cursor=_cursor(taken[-1][0]),
            upserts=[current[key] for key in keys if key in current],
            deletions=[key for key in keys if key not in current],
        )

    def _is_stale(self, after: int) -> bool:
        """Whether a reader at ``after`` may have missed changes, decided as ``changes.lua`` does.

        Before the first retained entry only ``0`` is a cursor of this log, and only while
        nothing was trimmed; any other one comes from before a trim or a clear.
        """
        first = self._first_seq()
        return after > self._last_seq or (after < first and (after != 0 or self._trimmed))

    def _first_seq(self) -> int:
        """Sequence number of the oldest retained change (the next one when there is none)."""
        return self._changes[0][0] if self._changes else self._last_seq + 1

    async def outbox_pending(self, limit: int = 1_000) -> list[OutboxEntry]:
        """Oldest unacknowledged events first."""
        entries = []
        for seq, record in self._outbox.items():
            if len(entries) >= limit:
                break
            entries.append(OutboxEntry(entry_id=_cursor(seq), record=record))
        return entries

    async def outbox_ack(self, entries: Sequence[OutboxEntry]) -> None:
        """Forget published events (unknown ids are ignored, as XDEL does)."""
        for entry in entries:
            self._outbox.pop(_seq(entry.entry_id), None)

    async def clear(self) -> None:
        """Forget everything; cursors taken before now read as too old (``reset``)."""
        self._clusters.clear()
        self._offsets.clear()
        self._changes.clear()
        self._last_seq += 1
        self._cleared_at = self._last_seq
        self._trimmed = False
        self._outbox.clear()
        self._generation = None
        self._times.clear()
        self._frontiers.clear()
        self._merge_last = None
        self._config = None
