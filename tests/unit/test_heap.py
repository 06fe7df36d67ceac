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


def test_settled_clusters_are_out_of_the_collectors_walk(unfrozen: None) -> None:
    engine = Engine(ClusteringConfig.for_threshold(0.99, ["cam"]))
    vectors = np.random.default_rng(0).standard_normal((2_000, 16), dtype=np.float32)
    engine.step([Observation(v, "cam", f"k{i}", i) for i, v in enumerate(vectors)])
    assert len(engine.clusters) > 1_500
    heap.settle()
    assert gc.get_freeze_count() > 2 * len(engine.clusters)  # each cluster and its id
    tracked = {id(o) for o in gc.get_objects()}
    some = next(iter(engine.clusters.values()))
    assert id(some) not in tracked and id(some.id) not in tracked


def test_a_settled_cluster_is_still_freed_once_replaced(unfrozen: None) -> None:
    engine = Engine(ClusteringConfig.for_threshold(0.5, ["cam"]))
    engine.step([Observation(np.ones(4, np.float32), "cam", "a", 0)])
    heap.settle()
    first = engine.clusters["cam:a"]
    state = first.unit
    held = sys.getrefcount(state)
    del first
    engine.step([Observation(np.ones(4, np.float32), "cam", "b", 1)])  # a new version of cam:a
    assert engine.clusters["cam:a"].version == 2
    assert sys.getrefcount(state) < held  # the old version is gone: no cycle kept it
