"""The batch scratch: its similarities are those of the touched clusters as they are now.

The scratch keeps them a block of observations at a time and patches the rows written during a
block; whatever the order of writes, deletions and block boundaries, what ``best`` returns must
equal a direct product against the current states.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.scratch import BatchScratch
from app.engine.types import Cluster, ClusterId


def cluster(key: str, state: np.ndarray) -> Cluster:
    return Cluster.from_state(
        state, id=ClusterId(0, key, "cam"), num_observations=1, realized=True, first_time=0,
        last_time=0, streams=("cam",), retention_ms=0, version=1, pending=0, pending_since=0,
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 100),
    keys=st.integers(1, 12),
    delete_share=st.floats(0.0, 0.3),
)
def test_best_is_the_most_similar_current_cluster(
    seed: int, size: int, keys: int, delete_share: float
) -> None:
    rng = np.random.default_rng(seed)
    units = rng.normal(size=(size, 6)).astype(np.float32)
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    scratch = BatchScratch(units)
    current: dict[str, np.ndarray | None] = {}
    for position in range(size):
        key, sim = scratch.best(position, lambda c: True)
        alive = {k: s for k, s in current.items() if s is not None}
        if not alive:
            assert key is None
        else:
            direct = {k: float(units[position] @ (s / np.linalg.norm(s))) for k, s in alive.items()}
            assert key is not None
            assert abs(sim - max(direct.values())) < 1e-5
            assert abs(direct[key] - sim) < 1e-5
        written = f"c{int(rng.integers(keys))}"
        if rng.random() < delete_share:
            current[written] = None
            scratch.record(written, None)
        else:
            state = rng.normal(size=6).astype(np.float32)
            current[written] = state
            scratch.record(written, cluster(written, state))


def test_a_cluster_the_observation_may_not_join_is_passed_over() -> None:
    units = np.eye(3, dtype=np.float32)
    scratch = BatchScratch(units)
    scratch.record("near", cluster("near", np.array([1, 0.1, 0], dtype=np.float32)))
    scratch.record("far", cluster("far", np.array([0.5, 1, 0], dtype=np.float32)))
    key, _ = scratch.best(0, lambda c: c.id.first_detection_key != "near")
    assert key == "far"
    key, _ = scratch.best(0, lambda c: True)  # the block's figures are left as they were
    assert key == "near"
