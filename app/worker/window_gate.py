"""Holds a deferral window's records until the window is complete, then hands it on whole.

With ``improved_mode.deferral_ms`` the engine decides a window of event time at once
(app/engine/window.py); it must therefore get each window whole, in one batch, whatever the
consumer's batch size. Records come here in the order the worker decides them (event time,
from ``LiveOrder`` or ``EventOrder``). A window closes when a record of a later window comes:
everything held is handed on, and that record opens the next. A late record (an earlier
window than the open one) joins the open window, as the engine cuts windows the same way
(``app.engine.window.runs``), so a window's batch is one run there too. A window that holds
``limit`` records (``improved_mode.max_window_size``) closes as well, as the engine's cut does:
that bounds what is held when a camera clock runs far ahead of the others.

What is held is a suffix of what was released, so each partition's records handed on are a
prefix of its records in offset order: the offsets stored with the state never pass a record
still held, and a worker that stops or loses its partitions loses nothing (the next owner reads
the held records again). The wall clock closes a window only when no record has come for
``deferral_ms`` (an idle input), the one place the wall clock may drive anything.
"""

from __future__ import annotations

from app.engine.window import pack, window_of
from app.worker.pipeline import RawRecord


class WindowGate:
    """Records of the open window, held until a later window's record (or idleness) closes it.

    >>> gate = WindowGate(deferral_ms=1_000, limit=64)
    >>> rec = lambda offset, time: RawRecord("cam", 0, offset, None, b"", time)
    >>> gate.add([rec(0, 100), rec(1, 900)], now=0.0)
    []
    >>> [[str(r) for r in w] for w in gate.add([rec(2, 1_100), rec(3, 950)], now=0.1)]
    [['cam[0]@0', 'cam[0]@1']]
    >>> gate.due(now=0.5), gate.due(now=1.2)
    (False, True)
    >>> [str(r) for r in gate.flush()]
    ['cam[0]@2', 'cam[0]@3']
    """

    def __init__(self, deferral_ms: int, limit: int) -> None:
        self.deferral_ms = deferral_ms
        self.limit = limit  # the most records one window holds
        self._held: list[RawRecord] = []
        self._last_added = 0.0

    def __len__(self) -> int:
        return len(self._held)

    def add(self, records: list[RawRecord], now: float) -> list[list[RawRecord]]:
        """Take records in decision order; returns the windows they closed, each whole."""
        if self.deferral_ms <= 0:  # (a reload switched deferral off: what is held goes first)
            return [batch for batch in (self.flush(), records) if batch]
        closed: list[list[RawRecord]] = []
        for record in records:
            if self._held and (len(self._held) >= self.limit or self._later(record)):
                closed.append(self._held)
                self._held = []
            self._held.append(record)
        if records:
            self._last_added = now
        return closed

    def batches(
        self, records: list[RawRecord], now: float, size: int, *, ended: bool = False
    ) -> list[list[RawRecord]]:
        """Take records; return the closed windows in batches of whole windows, <= ``size``.

        The open window goes too once the input has ``ended`` or been idle ``deferral_ms``.
        """
        windows = self.add(records, now)
        if self._held and (ended or self.due(now)):
            windows.append(self.flush())
        return list(pack(windows, size))

    def _later(self, record: RawRecord) -> bool:
        """Whether ``record`` is of a later window than the held ones.

        Those are all of the first one's window or earlier. It is read from the first record's
        time, so that a reload changing ``deferral_ms`` judges what is held by the new windows.
        """
        first = self._held[0].timestamp
        return window_of(record.timestamp, self.deferral_ms) > window_of(first, self.deferral_ms)

    def due(self, now: float) -> bool:
        """Whether the open window has waited ``deferral_ms`` of wall clock with no new record."""
        return bool(self._held) and now - self._last_added >= self.deferral_ms / 1000

    def flush(self) -> list[RawRecord]:
        """Hand on the open window as it is (input idle or ended)."""
        held, self._held = self._held, []
        return held

    def drop(self) -> None:
        """Forget what is held (partitions revoked): their next owner reads it again."""
        self._held = []


__all__ = ["WindowGate"]
