"""app.heap: clusters held by a worker leave the garbage collector's walk, and are still freed."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from app import heap
from app.config import ClusteringConfig
from app.engine import Engine, Observation


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Give the rest of the test run its collector back."""
    yield
    gc.unfreeze()


def test_held_clusters_add_nothing_to_the_collectors_walk() -> None:
    """Clusters are rows of arrays (app/engine/columns.py): no object per cluster to walk."""
    engine = Engine(ClusteringConfig.for_threshold(0.99, ["cam"]))
    vectors = np.random.default_rng(0).standard_normal((2_000, 16), dtype=np.float32)
    observations = [Observation(v, "cam", f"k{i}", i) for i, v in enumerate(vectors)]
    engine.step(observations[:50])
    gc.collect()
    before = len(gc.get_objects())
    engine.step(observations[50:])
    gc.collect()
    assert len(engine.clusters) > 1_500
    assert len(gc.get_objects()) - before < 50


def test_settle_freezes_what_survives_and_still_frees_what_is_replaced(unfrozen: None) -> None:
    kept, dropped = [[1]], [[2]]
    heap.settle()
    tracked = {id(o) for o in gc.get_objects()}
    assert id(kept) not in tracked and id(dropped) not in tracked  # frozen: out of the walk
    inner = dropped[0]
    held = sys.getrefcount(inner)
    del dropped
    assert sys.getrefcount(inner) < held  # reference counting still frees a frozen object
