"""Keeps Python's cyclic garbage collector off the long-lived objects a worker holds.

The engine holds its clusters as rows of arrays (app/engine/columns.py), not as objects; what
a worker still keeps for long (due-time entries, track sets, modules, caches) would be walked
by every full collection, a stall taken whenever the oldest generation has grown by a quarter.
Those objects form no reference cycles, so they never need the collector: reference counting
frees each as soon as it is dropped. ``settle`` collects once, then moves every
survivor into the permanent generation (``gc.freeze``), where collections no longer walk it;
later collections cost what was created since. Reference cycles made after a ``settle`` are
collected as usual, and the next ``settle`` collects before it freezes, so nothing is kept
that the collector would have freed.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

SETTLE_INTERVAL_S = 300.0  # how often a worker settles the objects made since the last time


def settle() -> float:
    """Collect, then freeze every surviving object; returns the collection's seconds."""
    began = time.perf_counter()
    gc.collect()
    seconds = time.perf_counter() - began
    gc.freeze()
    log.debug("heap settled: %.1f ms collecting, %d objects frozen", seconds * 1000,
              gc.get_freeze_count())
    return seconds


__all__ = ["SETTLE_INTERVAL_S", "settle"]
