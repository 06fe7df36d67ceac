"""Event time: the watermark over the input partitions, and where the merge pass falls due.

fvc's timers run on event time, never on the wall clock, so a replay at any speed, batch mode
and ``fvc evaluate`` give a live run's result (DESIGN.md section 4, docs/time.md):

* Each input partition's time is the latest event time applied from it. The **watermark** is
  the smallest of them, less the allowed lateness: every partition has reached it, so the
  timers may act on it. A partition with no record applied for ``idle_ms`` of wall clock stops
  holding it back; when every partition is idle, the watermark moves on with the wall clock
  from the newest event time (the only place a wall clock drives anything). Input read in
  event-time order (batch mode, ``fvc evaluate``) is one partition: the newest time seen.
* The **merge pass** is due at the first observation whose watermark crosses the next
  ``time_interval_ms`` boundary (multiples of the interval; with an interval of 0, every new
  watermark): UVAP's "first input after the interval", at the same place in every mode.
  The pass runs before that observation is decided.

Pure and small: the pipeline and the offline evaluator drive it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ORDERED = ""  # the one partition of input read in event-time order
UNKNOWN = -(2**62)  # the time of a partition expected but not heard from yet
NOT_HOLDING = 2**62  # the frontier of a partition with nothing to give soon


@dataclass(frozen=True, slots=True)
class PartitionTime:
    """Latest event time applied from a partition, and the wall clock (ms) it was applied at."""

    event_time: int
    active_ms: int


def watermark(
    partitions: Mapping[str, PartitionTime], *, now_ms: int, lateness_ms: int, idle_ms: int
) -> int | None:
    """The watermark over ``partitions`` (None before any record).

    >>> parts = {"a": PartitionTime(5_000, 0), "b": PartitionTime(9_000, 0)}
    >>> watermark(parts, now_ms=1_000, lateness_ms=100, idle_ms=0)
    4900
    >>> watermark(parts, now_ms=70_000, lateness_ms=0, idle_ms=60_000)  # both idle 10 s past
    19000
    """
    if not partitions:
        return None
    times = partitions.values()
    active = [p for p in times if idle_ms <= 0 or now_ms - p.active_ms < idle_ms]
    if active:
        oldest = min(p.event_time for p in active)
        return None if oldest == UNKNOWN else oldest - lateness_ms
    newest = max(p.event_time for p in times)
    if newest == UNKNOWN:
        return None
    last_active = max(p.active_ms for p in times)
    return newest - lateness_ms + max(0, now_ms - last_active - idle_ms)


def boundary(watermark: int, interval_ms: int) -> int:
    """The merge boundary at or before ``watermark`` (every watermark when the interval is 0).

    >>> boundary(12_345, 5_000), boundary(12_345, 0)
    (10000, 12345)
    """
    return watermark if interval_ms <= 0 else watermark - watermark % interval_ms


@dataclass(frozen=True, slots=True)
class Scan:
    """How far a run of observations goes before the merge pass falls due.

    ``cut`` observations come before it (all of them when ``merge_at`` is None); ``merge_at``
    is the watermark the pass runs at, the one the observation at ``cut`` brings. ``late``
    counts observations older than the watermark when they came. ``partitions`` and
    ``watermark`` are the clock after the first ``cut`` observations; ``merge_start`` is set
    when this scan started the merge schedule (the boundary of the very first watermark).
    """

    cut: int
    merge_at: int | None
    late: int
    partitions: dict[str, PartitionTime]
    watermark: int | None
    merge_start: int | None = None


class EventClock:
    """The event-time clock of one pipeline: partition times, watermark, last merge boundary.

    ``interval_ms`` None means no merging. ``ordered`` is for input read in event-time order:
    every observation counts towards one partition, so the watermark is the newest time seen.

    >>> clock = EventClock(1_000)
    >>> scan = clock.scan(["p"] * 4, [100, 600, 1_200, 1_300], now_ms=0)  # starts the schedule
    >>> scan.cut, scan.merge_at, scan.merge_start
    (2, 1200, 0)
    """

    def __init__(
        self,
        interval_ms: int | None,
        *,
        lateness_ms: int = 0,
        idle_ms: int = 0,
        ordered: bool = False,
    ) -> None:
        self.interval_ms = interval_ms
        self.lateness_ms = lateness_ms
        self.idle_ms = idle_ms
        self.ordered = ordered
        self.partitions: dict[str, PartitionTime] = {}
        self.watermark: int | None = None
        self.merge_last: int | None = None

    def now(self, now_ms: int) -> int | None:
        """The watermark at wall time ``now_ms`` (it never goes back)."""
        current = watermark(
            self.partitions, now_ms=now_ms, lateness_ms=self.lateness_ms, idle_ms=self.idle_ms
        )
        if current is None or self.watermark is None:
            return current if self.watermark is None else self.watermark
        return max(self.watermark, current)

    def expect(self, positions: list[str], now_ms: int) -> None:
        """Partitions to wait for: until one is heard from (or idle), the watermark holds.

        A worker that starts on a backlog must not let the first partitions it reads move
        time on for the others: their first records would all be late, and clusters they
        would have joined already expired.
        """
        if self.ordered:
            return
        for position in positions:
            self.partitions.setdefault(position, PartitionTime(UNKNOWN, now_ms))

    def merge_due(self, at: int | None) -> bool:
        """Whether a merge pass falls due at watermark ``at``."""
        if self.interval_ms is None or at is None or self.merge_last is None:
            return False
        return boundary(at, self.interval_ms) > self.merge_last

    def scan(self, positions: Sequence[str], times: Sequence[int], now_ms: int) -> Scan:
        """Walk observations (their partitions and event times) up to the next merge pass.

        Changes nothing: ``adopt`` takes the result once the observations are stored.
        """
        partitions = dict(self.partitions)
        current = self.watermark
        merge_last, merge_start = self.merge_last, None
        late = 0
        lateness, idle = self.lateness_ms, self.idle_ms
        for i, (position, time) in enumerate(zip(positions, times, strict=True)):
            if current is not None and time < current:
                late += 1
            key = ORDERED if self.ordered else position
            before = partitions.get(key)
            newest = time if before is None else max(time, before.event_time)
            partitions[key] = PartitionTime(newest, now_ms)
            moved = watermark(partitions, now_ms=now_ms, lateness_ms=lateness, idle_ms=idle)
            if moved is None:
                moved = current
            elif current is not None:
                moved = max(current, moved)
            if self.interval_ms is not None and moved is not None:
                if merge_last is None:
                    merge_last = merge_start = boundary(moved, self.interval_ms)
                elif boundary(moved, self.interval_ms) > merge_last:
                    _restore(partitions, key, before)
                    return Scan(i, moved, late, partitions, current, merge_start)
            current = moved
        return Scan(len(times), None, late, partitions, current, merge_start)

    def adopt(self, scan: Scan) -> None:
        """Make a stored scan's partition times and watermark current."""
        self.partitions = scan.partitions
        self.watermark = scan.watermark
        if scan.merge_start is not None:
            self.merge_last = scan.merge_start

    def checkpoint(self) -> tuple[dict[str, PartitionTime], int | None, int | None]:
        """Partition times, watermark and last merge boundary as they are, for ``restore``."""
        return dict(self.partitions), self.watermark, self.merge_last

    def restore(self, held: tuple[dict[str, PartitionTime], int | None, int | None]) -> None:
        """Go back to a ``checkpoint`` (a scan adopted since was refused by the store)."""
        partitions, self.watermark, self.merge_last = held
        self.partitions = dict(partitions)

    def merged(self, at: int) -> None:
        """A merge pass ran (here or elsewhere) at watermark ``at``."""
        if self.interval_ms is not None:
            self.merge_last = boundary(at, self.interval_ms)
        self.watermark = at if self.watermark is None else max(self.watermark, at)


def _restore(partitions: dict[str, PartitionTime], key: str, before: PartitionTime | None) -> None:
    """Undo the last observation's change to ``partitions``."""
    if before is None:
        del partitions[key]
    else:
        partitions[key] = before


__all__ = [
    "NOT_HOLDING", "ORDERED", "UNKNOWN", "EventClock", "PartitionTime", "Scan", "boundary",
    "watermark",
]
