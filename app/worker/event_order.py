"""Records of many partitions, released in event-time order: how batch mode reads a recording.

Kafka orders records within a partition only; a worker takes partitions as they come. Batch
mode reads a bounded recording, so it can do better and replay it as the cameras saw it: by
event time, then stream, then partition and offset, the order ``fvc evaluate`` clusters a file
in (``app.offline.evaluate.event_order``). Hand-written because a k-way merge over live
partitions must hold back until every unfinished partition has shown its next record, which
``heapq.merge`` over blocking iterators cannot do.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

from app.worker.pipeline import RawRecord

Partition = tuple[str, int]
Rank = tuple[int, str, str, int, int]


class EventOrder:
    """Buffers records per partition; ``ready`` gives those whose place in the order is known.

    >>> order = EventOrder({("a", 0): 2, ("b", 0): 1}, stream_of=lambda topic: topic)
    >>> order.add(RawRecord("a", 0, 0, None, b"", 30))
    True
    >>> order.ready()  # b's first record may come before 30: hold on
    []
    >>> order.add(RawRecord("b", 0, 0, None, b"", 20))
    True
    >>> [str(r) for r in order.ready()]  # then a's next is unknown: the rest waits for it
    ['b[0]@0', 'a[0]@0']
    >>> order.add(RawRecord("a", 0, 1, None, b"", 40))
    True
    >>> [str(r) for r in order.ready()], order.done
    (['a[0]@1'], True)
    """

    def __init__(self, ends: dict[Partition, int], stream_of: Callable[[str], str]) -> None:
        self._ends = dict(ends)  # exclusive end offset of each partition still to be read
        self._stream_of = stream_of
        self._buffers: dict[Partition, deque[RawRecord]] = {p: deque() for p in ends}
        self._complete: set[Partition] = set()  # every record up to the end is buffered

    @property
    def done(self) -> bool:
        """Every record was read and released."""
        return len(self._complete) == len(self._ends) and not any(self._buffers.values())

    def buffered(self, partition: Partition) -> int:
        """Records of ``partition`` waiting for their turn (to pause a partition far ahead)."""
        return len(self._buffers.get(partition, ()))

    def add(self, record: RawRecord) -> bool:
        """Take a record read from Kafka; False when it is outside the range to replay."""
        where = (record.topic, record.partition)
        end = self._ends.get(where)
        if end is None or record.offset >= end or where in self._complete:
            return False
        self._buffers[where].append(record)
        if record.offset + 1 >= end:
            self._complete.add(where)
        return True

    def ready(self) -> list[RawRecord]:
        """Records released in order, up to the first one a partition not yet seen may precede."""
        heads = [(self._rank(buf[0]), where) for where, buf in self._buffers.items() if buf]
        heapq.heapify(heads)
        out: list[RawRecord] = []
        while heads and not self._waiting():
            _, where = heapq.heappop(heads)
            buffer = self._buffers[where]
            out.append(buffer.popleft())
            if buffer:
                heapq.heappush(heads, (self._rank(buffer[0]), where))
        return out

    def _waiting(self) -> bool:
        """Whether a partition still to be read has nothing buffered (its next is unknown)."""
        return any(not self._buffers[p] for p in self._ends if p not in self._complete)

    def _rank(self, record: RawRecord) -> Rank:
        stream = self._stream_of(record.topic)
        return (record.timestamp, stream, record.topic, record.partition, record.offset)


__all__ = ["EventOrder"]
