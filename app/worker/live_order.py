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
* nothing is released at or past ``bound``, the first place in that order the other workers'
  partitions may still fill (their published frontiers, plus a lookahead): with a lookahead of
  0, workers sharing the partitions decide in the one order a single reader would.

``frontiers`` says where each partition stands for the other workers: the event time of its
next record (buffered, or not read yet but no earlier than its last one's), or ``NOT_HOLDING``
for a partition quiet for ``wait_s``.

Hand-written for the same reason as ``EventOrder``: a k-way merge over live, unbounded
partitions that must hold back for a partition's unknown next record.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable

from app.engine.clock import NOT_HOLDING, UNKNOWN
from app.worker.pipeline import RawRecord

Partition = tuple[str, int]
Rank = tuple[int, str, str, int]  # (event time, stream, topic, partition): a place in the order


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
        self._last: dict[Partition, int] = {}  # event time of the last record released

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
        self._last = {p: t for p, t in self._last.items() if p in starts}

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
        self, highwater: dict[Partition, int], bound: Rank | None, now: float
    ) -> list[RawRecord]:
        """Records whose place in event-time order is known, before place ``bound``."""
        heads = [(self._rank(b[0]), where) for where, b in self._buffers.items() if b]
        heapq.heapify(heads)
        waiting = self._waiting(highwater, now)
        out: list[RawRecord] = []
        while heads and not waiting:
            rank, where = heads[0]
            if bound is not None and rank > bound:
                break
            heapq.heappop(heads)
            buffer = self._buffers[where]
            out.append(buffer.popleft())
            self._last[where] = out[-1].timestamp
            if buffer:
                heapq.heappush(heads, (self._rank(buffer[0]), where))
                continue
            self._heard[where] = now  # empty from now: its next fetch has ``wait_s`` to come
            if self._behind(where, highwater, now):
                waiting = True
        return out

    def frontiers(self, highwater: dict[Partition, int], now: float) -> dict[Partition, int]:
        """Each partition's place for the other workers.

        An empty partition with more to read, or heard from (or assigned) in the last
        ``wait_s``, may give a record any moment, no earlier than its last one (``UNKNOWN``
        before it gave one: it holds everything); one quiet longer does not hold the others
        back.

        >>> order = LiveOrder(stream_of=lambda topic: topic, wait_s=1.0)
        >>> order.assign({("a", 0): 0, ("b", 0): 0, ("c", 0): 0}, now=0.0)
        >>> order.add([RawRecord("a", 0, 0, None, b"", 30), RawRecord("b", 0, 0, None, b"", 20)],
        ...           now=0.0)
        >>> fetched = {("a", 0): 1, ("b", 0): 1, ("c", 0): 0}  # c: fetched, empty
        >>> [str(r) for r in order.release(fetched, None, now=0.5)]
        ['b[0]@0', 'a[0]@0']
        >>> order.frontiers({}, now=0.5)  # as if none was fetched yet: c's time is not known
        {('a', 0): 30, ('b', 0): 20, ('c', 0): -4611686018427387904}
        >>> order.frontiers(fetched | {("a", 0): 5}, now=2.0)  # a has more; b and c are quiet
        {('a', 0): 30, ('b', 0): 4611686018427387904, ('c', 0): 4611686018427387904}
        """
        out = {}
        for where, buffer in self._buffers.items():
            if buffer:
                out[where] = buffer[0].timestamp
            elif not self._more(where, highwater) and now - self._heard[where] >= self._wait_s:
                out[where] = NOT_HOLDING
            else:
                out[where] = self._last.get(where, UNKNOWN)
        return out

    def _waiting(self, highwater: dict[Partition, int], now: float) -> bool:
        return any(self._behind(p, highwater, now) for p, b in self._buffers.items() if not b)

    def _behind(self, where: Partition, highwater: dict[Partition, int], now: float) -> bool:
        """Whether an empty partition has more to give soon: then its next record may come first."""
        return self._more(where, highwater) and now - self._heard[where] < self._wait_s

    def _more(self, where: Partition, highwater: dict[Partition, int]) -> bool:
        """Whether ``where`` may have records not read yet: known so, or not fetched yet."""
        high = highwater.get(where)
        return high is None or self._next[where] < high

    def _rank(self, record: RawRecord) -> tuple[int, str, str, int, int]:
        stream = self._stream_of(record.topic)
        return (record.timestamp, stream, record.topic, record.partition, record.offset)


__all__ = ["LiveOrder"]
