"""Batches give exactly the result of one-by-one processing (property tests).

The reference below is a plain sequential leader clusterer written independently of the engine:
each observation is compared with every current cluster and the update rules are applied inline.
"""

from __future__ import annotations

import numpy as np
from engine_support import make_config, scene
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine import Engine, Observation


def reference(observations: list[Observation], threshold: float, method: str, alpha: float):
    """Sequential leader clustering: (assignment index per observation, states, counts)."""
    states: list[np.ndarray] = []
    counts: list[int] = []
    assignment = []
    for o in observations:
        u = o.vector.astype(np.float64) / np.linalg.norm(o.vector)
        sims = [float(u @ (s / np.linalg.norm(s))) for s in states]
        best = int(np.argmax(sims)) if sims else -1
        if best >= 0 and threshold < 1.0 and sims[best] >= threshold:
            if method == "SIMPLE_AVERAGE":
                states[best] = states[best] + o.count * u
            elif method == "EXP_AVERAGE":
                w = 1 - (1 - alpha) ** o.count
                states[best] = (1 - w) * states[best] + w * u
            else:
                states[best] = u
            counts[best] += o.count
            assignment.append(best)
        else:
            states.append(u * o.count if method == "SIMPLE_AVERAGE" else u)
            counts.append(o.count)
            assignment.append(len(states) - 1)
    return assignment, states, counts


def run(engine: Engine, observations: list[Observation], batch: int) -> list[str]:
    keys = []
    for start in range(0, len(observations), batch):
        keys += [d.cluster_key for d in engine.step(observations[start : start + batch]).decisions]
    return keys


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 120),
    centres=st.integers(1, 12),
    noise=st.floats(0.05, 1.0),
    threshold=st.floats(0.2, 0.98),
    batch=st.sampled_from([1, 2, 5, 16, 64, 512]),
    method=st.sampled_from(["SIMPLE_AVERAGE", "EXP_AVERAGE", "USE_LAST"]),
)
def test_batched_engine_equals_sequential_reference(
    seed: int, n: int, centres: int, noise: float, threshold: float, batch: int, method: str
) -> None:
    observations = scene(seed, n, centres, noise)
    config = make_config(threshold, method=method, streams=("a", "b"), ema_alpha=0.3)
    engine = Engine(config, search_k=2)
    keys = run(engine, observations, batch)
    assignment, states, counts = reference(observations, threshold, method, 0.3)
    order = list(dict.fromkeys(keys))
    assert [order.index(k) for k in keys] == assignment
    for key, state, count in zip(order, states, counts, strict=True):
        cluster = engine.clusters[key]
        assert cluster.num_observations == count
        np.testing.assert_allclose(cluster.representative, state / np.linalg.norm(state), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.sampled_from([2, 7, 33, 200]),
    action=st.sampled_from(["KEEP_REALIZED", "UNREALIZE", "REMOVE"]),
    interval=st.sampled_from([0, 3]),
)
def test_batches_emit_the_same_events_as_single_steps(
    seed: int, batch: int, action: str, interval: int
) -> None:
    observations = scene(seed, 150, 6, 0.4)
    realization = {"num_samples": 3, "time_limit_ms": 20, "realized_cluster_action": action}
    config = make_config(
        0.8, streams=("a", "b"), cluster_realization=realization, min_update_interval_ms=interval
    )

    def events(size: int) -> list[tuple[str, str, int]]:
        engine = Engine(config)
        out = []
        for start in range(0, len(observations), size):
            result = engine.step(observations[start : start + size])
            out += [(e.event_id, e.type.value, e.time) for e in result.events]
        return out

    assert events(batch) == events(1)


def test_a_whole_scene_in_batches_of_any_size_gives_one_answer() -> None:
    observations = scene(7, 2000, 40, 0.3, dim=32)
    answers = {
        batch: run(Engine(make_config(0.7, streams=("a", "b"))), observations, batch)
        for batch in (1, 64, 512)
    }
    assert answers[1] == answers[64] == answers[512]
