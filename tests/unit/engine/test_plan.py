"""Batches decided with array operations (app/engine/plan.py) equal one-at-a-time decisions.

Each scene runs through two engines, one planning every batch and one deciding every
observation in turn, and everything they emit and keep must be the same: the choices, the
events, and the clusters' states to the bit. Scenes vary what the plan must get right:
clusters the batch creates and joins again, clusters that expire in the middle of a batch,
streams that never join, searches too short to find an untouched cluster, and plans that need
more correcting rounds than allowed (the rest of the batch is then decided one at a time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from engine_support import make_config, scene
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import parse_config
from app.engine import Engine, Observation, plan
from app.engine import engine as engine_module
from app.index.numpy_index import NumpyIndex


@pytest.fixture(autouse=True, scope="module")
def always_plan() -> Iterator[None]:
    """Plan every batch: no pause after a plan that needed many rounds."""
    pause = engine_module.UNPLANNED_BATCHES
    engine_module.UNPLANNED_BATCHES = 0
    yield
    engine_module.UNPLANNED_BATCHES = pause


def run(engine: Engine, observations: list[Observation], batch: int) -> list[tuple]:
    """Everything the engine decided and emitted (with the states events carry), batch by batch."""
    out: list[tuple] = []
    for start in range(0, len(observations), batch):
        result = engine.step(observations[start : start + batch])
        out += [(d.cluster_key, d.created) for d in result.decisions]
        out += [
            (e.event_id, e.type.value, e.time, e.input_key, described(e)) for e in result.events
        ]
        out.append((sorted(c.key for c in result.upserts), sorted(result.deletions)))
    return out


def described(event) -> tuple | None:
    """The state an event carries, to the bit (None for a delete)."""
    cluster = event.cluster
    if cluster is None:
        return None
    return cluster.unit.tobytes(), replace(cluster, unit=None)


def assert_same_clusters(a: Engine, b: Engine) -> None:
    assert a.clusters.keys() == b.clusters.keys()
    for key, cluster in a.clusters.items():
        other = b.clusters[key]
        assert np.array_equal(cluster.unit, other.unit), key
        assert replace(cluster, unit=None) == replace(other, unit=None)


class Unbounded(NumpyIndex):
    """An index whose top k the engine may not trust to be exact, as IVF's or HNSW's."""

    exact_top_k = False


def engines(config, search_k: int, exact: bool = True) -> tuple[Engine, Engine]:
    index = NumpyIndex() if exact else Unbounded()
    planned = Engine(config, index, search_k=search_k)
    return planned, Engine(config, search_k=search_k, planned=False)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 160),
    centres=st.integers(1, 15),
    noise=st.floats(0.05, 1.0),
    threshold=st.floats(0.2, 0.95),
    batch=st.sampled_from([2, 7, 33, 160]),
    method=st.sampled_from(["SIMPLE_AVERAGE", "EXP_AVERAGE", "USE_LAST"]),
    search_k=st.sampled_from([1, 2, 8]),
    rounds=st.sampled_from([1, 2, plan.MAX_ROUNDS]),
    confirmed=st.sampled_from([0, 8, plan.MIN_CONFIRMED]),
    exact=st.booleans(),
    discount=st.sampled_from([None, 0.0, 0.05, 0.3]),
)
def test_planned_batches_equal_one_at_a_time(
    seed: int,
    n: int,
    centres: int,
    noise: float,
    threshold: float,
    batch: int,
    method: str,
    search_k: int,
    rounds: int,
    confirmed: int,
    exact: bool,
    discount: float | None,
) -> None:
    """Exact or not, an index's hits bound what the plan compares each observation with.

    With a ``discount``, the improved mode: the mean similarity to members, with its size
    discount, read from the plan's versions (its sums need SIMPLE_AVERAGE).
    """
    clustering: dict[str, object] = {"method": method, "ema_alpha": 0.3}
    if discount is not None:
        clustering = {
            "improved_mode": {"enabled": True, "size_discount": discount},
            "cluster_merging": {
                "initial_threshold": threshold,
                "threshold_discount_rate": 0.97,
                "min_threshold": threshold / 2,
                "time_interval_ms": 5,
            },
        }
    config = make_config(threshold, streams=("a", "b"), **clustering)
    observations = scene(seed, n, centres, noise)
    planned, single = engines(config, search_k, exact)
    defaults = plan.MAX_ROUNDS, plan.MIN_CONFIRMED
    plan.MAX_ROUNDS, plan.MIN_CONFIRMED = rounds, confirmed
    try:
        assert run(planned, observations, batch) == run(single, observations, batch)
    finally:
        plan.MAX_ROUNDS, plan.MIN_CONFIRMED = defaults
    assert_same_clusters(planned, single)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    retention=st.sampled_from([3, 10, 40]),
    batch=st.sampled_from([5, 50, 200]),
    action=st.sampled_from(["KEEP_REALIZED", "UNREALIZE"]),
    search_k=st.sampled_from([1, 3]),
)
def test_expiry_realization_and_emission_inside_a_planned_batch(
    seed: int, retention: int, batch: int, action: str, search_k: int
) -> None:
    realization = {"num_samples": 3, "time_limit_ms": 15, "realized_cluster_action": action}
    config = make_config(
        0.75,
        streams=("a", "b"),
        retention_ms=retention,
        cluster_realization=realization,
        min_update_interval_ms=4,
    )
    observations = scene(seed, 200, 8, 0.4)
    planned, single = engines(config, search_k)
    assert run(planned, observations, batch) == run(single, observations, batch)
    assert_same_clusters(planned, single)


def test_a_stream_that_never_joins_creates_a_cluster_per_observation() -> None:
    streams = [
        {
            "stream_id": stream,
            "fv_field_selector": {"feature_vector_path": "features"},
            "reg_stream_config": {"reg_threshold": threshold},
        }
        for stream, threshold in (("a", 0.5), ("b", 1.0))
    ]
    data = {"clustering_config": {"method": "SIMPLE_AVERAGE"}, "input_stream_configs": streams}
    config = parse_config(data)
    observations = scene(3, 120, 2, 0.1)
    planned, single = engines(config, 8)
    assert run(planned, observations, 120) == run(single, observations, 120)
    created_by_b = [
        d.created
        for o, d in zip(observations, Engine(config).step(observations).decisions, strict=True)
        if o.stream_id == "b"
    ]
    assert created_by_b and all(created_by_b)


@pytest.mark.parametrize("method", ["SIMPLE_AVERAGE", "EXP_AVERAGE", "USE_LAST"])
def test_one_person_seen_many_times_in_one_batch(method: str) -> None:
    """Every observation joins the cluster the first created: a chain of versions to follow."""
    rng = np.random.default_rng(5)
    centre = rng.normal(size=16)
    observations = [
        Observation((centre + 0.2 * rng.normal(size=16)).astype(np.float32), "a", f"k{i}", i)
        for i in range(300)
    ]
    planned, single = engines(make_config(0.6, method=method, streams=("a",)), 8)
    assert run(planned, observations, 300) == run(single, observations, 300)
    assert len(planned.clusters) == len(single.clusters)
    assert_same_clusters(planned, single)


def test_a_plan_that_took_many_rounds_pauses_planning() -> None:
    """After a costly plan the next batches are decided one at a time, with the same result."""
    rng = np.random.default_rng(9)
    centres = rng.normal(size=(8, 16))
    observations = [
        Observation((centres[i // 20] + 0.2 * rng.normal(size=16)).astype(np.float32), "a",
                    f"k{i}", i)
        for i in range(160)
    ]
    config = make_config(0.6, streams=("a",))
    engine_module.UNPLANNED_BATCHES = 3
    try:
        planned, single = engines(config, 4)
        calls = []
        decide = plan.decide

        def counting(batch: plan.Batch) -> plan.Plan:
            calls.append(len(batch.units))
            return decide(batch)

        plan.decide = counting
        try:
            assert run(planned, observations, 40) == run(single, observations, 40)
        finally:
            plan.decide = decide
    finally:
        engine_module.UNPLANNED_BATCHES = 0
    assert len(calls) < 4  # every batch repeats its people: after the first plan, a pause
    assert_same_clusters(planned, single)
