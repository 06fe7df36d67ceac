"""A worker's records released in event-time order, as far as what it has read allows.

Kafka hands a worker its partitions in chunks: reading a backlog, one partition's next 500
records may arrive before another's next one, tens of seconds of event time apart. Deciding
them in that order is not the order the cameras saw (batch mode's and ``fvc evaluate``'s), and
clusters come out different. So bulk ingest buffers what it reads and releases records by
(event time, stream, partition, offset), like batch mode's ``EventOrder``, with two limits
that keep a live stream moving:

* a partition with nothing buffered holds the others back only while the consumer knows it has
  more to read (its position is below its high watermark) and for at most ``wait_s`` of wall
  clock since it last gave a record: a quiet camera does not stop the others;
* nothing is released later than ``bound`` (the other workers' watermark plus a lookahead),
  so workers sharing the partitions move through event time together.

Hand-written for the same reason as ``EventOrder``: a k-way merge over live, unbounded
partitions that must hold back for a partition's unknown next record.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable

from app.worker.pipeline import RawRecord

Partition = tuple[str, int]


class LiveOrder:
    """Buffered records of the assigned partitions, released in event-time order.

    >>> order = LiveOrder(stream_of=lambda topic: topic, wait_s=1.0)
    >>> order.assign({("a", 0): 0, ("b", 0): 0}, now=0.0)
    >>> order.add([RawRecord("a", 0, 0, None, b"", 30)], now=0.0)
    >>> order.release(highwater={("a", 0): 1, ("b", 0): 1}, bound=None, now=0.5)  # b may precede
    []
    >>> order.add([RawRecord("b", 0, 0, None, b"", 20)], now=0.6)
    >>> [str(r) for r in order.release({("a", 0): 1, ("b", 0): 1}, None, now=0.6)]
    ['b[0]@0', 'a[0]@0']
    """

    def __init__(self, stream_of: Callable[[str], str], wait_s: float) -> None:
        self._stream_of = stream_of
        self._wait_s = wait_s
        self._buffers: dict[Partition, deque[RawRecord]] = {}
        self._next: dict[Partition, int] = {}  # the next offset each partition will give
        self._heard: dict[Partition, float] = {}  # wall clock it last gave a record (or assigned)

    def __len__(self) -> int:
        return sum(len(buffer) for buffer in self._buffers.values())

    def buffered(self, partition: Partition) -> int:
        """Records of ``partition`` waiting for their turn."""
        return len(self._buffers.get(partition, ()))

    def assign(self, starts: dict[Partition, int], now: float) -> None:
        """The partitions now assigned, each with the offset it is read from; others are dropped.

        A dropped partition's buffered records were never applied: its next owner reads them
        again from the offsets stored with the state.
        """
        self._buffers = {p: self._buffers.get(p, deque()) for p in starts}
        self._next = {p: self._next.get(p, start) for p, start in starts.items()}
        self._heard = {p: self._heard.get(p, now) for p in starts}

    def add(self, records: Iterable[RawRecord], now: float) -> None:
        """Take records as read (each partition's in offset order)."""
        for record in records:
            where = (record.topic, record.partition)
            buffer = self._buffers.get(where)
            if buffer is None:  # revoked since it was read
                continue
            buffer.append(record)
            self._next[where] = record.offset + 1
            self._heard[where] = now

    def release(
        self, highwater: dict[Partition, int], bound: int | None, now: float
    ) -> list[RawRecord]:
        """Records whose place in event-time order is known, up to event time ``bound``."""
        heads = [(self._rank(b[0]), where) for where, b in self._buffers.items() if b]
        heapq.heapify(heads)
        waiting = self._waiting(highwater, now)
        out: list[RawRecord] = []
        while heads and not waiting:
            rank, where = heads[0]
            if bound is not None and rank[0] > bound:
                break
            heapq.heappop(heads)
            buffer = self._buffers[where]
            out.append(buffer.popleft())
            if buffer:
                heapq.heappush(heads, (self._rank(buffer[0]), where))
            elif self._behind(where, highwater, now):
                waiting = True
        return out

    def _waiting(self, highwater: dict[Partition, int], now: float) -> bool:
        return any(self._behind(p, highwater, now) for p, b in self._buffers.items() if not b)

    def _behind(self, where: Partition, highwater: dict[Partition, int], now: float) -> bool:
        """Whether an empty partition has more to give soon: then its next record may come first."""
        high = highwater.get(where)
        more = high is not None and self._next[where] < high
        return more and now - self._heard[where] < self._wait_s

    def _rank(self, record: RawRecord) -> tuple[int, str, str, int, int]:
        stream = self._stream_of(record.topic)
        return (record.timestamp, stream, record.topic, record.partition, record.offset)


__all__ = ["LiveOrder"]
