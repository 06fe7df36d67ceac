"""Keeps Python's cyclic garbage collector off the clusters a worker holds.

A worker holds two or three objects the collector tracks per cluster (the ``Cluster``, its
``ClusterId``, ...). A full collection walks all of them: at 1M clusters about 430 ms, a stall
taken whenever the oldest generation has grown by a quarter, that grows with the cluster count.
Clusters form no reference cycles, so they never need the collector: reference counting frees
a version as soon as the next one replaces it. ``settle`` collects once, then moves every
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
