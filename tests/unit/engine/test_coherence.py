"""Coherence from the accumulator equals the brute-force mean cosine of members to representative.

The engine runs on small random clusters (observations counting several times, merges, more
observations after a merge); beside it the test keeps every cluster's members with their
weights, computed independently: counts for SIMPLE_AVERAGE, the moving average applied one
observation at a time for EXP_AVERAGE, scaled by the counts on a merge.
"""

from __future__ import annotations

import numpy as np
from engine_support import make_config
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine import Engine, Observation, StepResult
from app.engine.rules import coherence

DIM = 6


def merging_config(method: str, alpha: float):  # noqa: ANN201 - ClusteringConfig
    """Registration at 0.9 (people split into several clusters) and a merge pass at 0.6."""
    merging = {"initial_threshold": 0.6, "threshold_discount_rate": 1.0,
               "min_threshold": 0.6, "time_interval_ms": 1000}
    return make_config(0.9, method=method, ema_alpha=alpha, cluster_merging=merging)


class Members:
    """Each cluster's unit members and their weights, kept beside the engine."""

    def __init__(self, method: str, alpha: float) -> None:
        self.method, self.alpha = method, alpha
        self.weights: dict[str, list[tuple[np.ndarray, float]]] = {}

    def observe(self, result: StepResult, observations: list[Observation]) -> None:
        for o, decision in zip(observations, result.decisions, strict=True):
            unit = o.vector.astype(np.float64) / np.linalg.norm(o.vector.astype(np.float64))
            members = self.weights.setdefault(decision.cluster_key, [])
            if self.method == "SIMPLE_AVERAGE":
                members.append((unit, float(o.count)))
                continue
            if decision.created:
                members.append((unit, 1.0))
                continue
            for _ in range(o.count):  # the moving average, once per observation counted
                members[:] = [(u, w * (1 - self.alpha)) for u, w in members]
                members.append((unit, self.alpha))

    def merge(self, result: StepResult, sizes: dict[str, int]) -> None:
        for absorbed, survivor in result.merged:
            a, b = self.weights[survivor], self.weights.pop(absorbed)
            if self.method == "EXP_AVERAGE":
                n_a, n_b = sizes[survivor], sizes[absorbed]
                a = [(u, w * n_a / (n_a + n_b)) for u, w in a]
                b = [(u, w * n_b / (n_a + n_b)) for u, w in b]
            self.weights[survivor] = a + b

    def brute_force(self, key: str) -> float:
        """Weighted mean cosine of the members to the weighted mean direction."""
        members = self.weights[key]
        total = sum(w for _, w in members)
        mean = sum(w * u for u, w in members)
        rep = mean / np.linalg.norm(mean)
        return sum(w * float(u @ rep) for u, w in members) / total


def people(rng: np.random.Generator, n: int, start: int) -> list[Observation]:
    """Noisy views of three people, each counting 1 to 5 times (as FVCluster inputs do)."""
    centres = rng.normal(size=(3, DIM))
    labels = rng.integers(0, 3, n)
    x = centres[labels] + 0.35 * rng.normal(size=(n, DIM))
    counts = rng.integers(1, 6, n)
    return [
        Observation(x[i].astype(np.float32), "cam", f"k{start + i}", start + i, int(counts[i]))
        for i in range(n)
    ]


def run(method: str, alpha: float, seed: int) -> tuple[Engine, Members, int]:
    """Observations, a merge pass, more observations, another pass; returns merges made."""
    rng = np.random.default_rng(seed)
    engine, members, merges = Engine(merging_config(method, alpha)), Members(method, alpha), 0
    for round_ in range(2):
        batch = people(rng, 12, 100 * round_)
        members.observe(engine.step(batch), batch)
        sizes = {k: c.num_observations for k, c in engine.clusters.items()}
        result = engine.merge()
        engine.apply(result)
        members.merge(result, sizes)
        merges += len(result.merged)
    return engine, members, merges


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(["SIMPLE_AVERAGE", "EXP_AVERAGE"]),
    alpha=st.floats(0.05, 0.9),
    seed=st.integers(0, 2**32 - 1),
)
def test_coherence_equals_the_brute_force_mean_cosine(method, alpha, seed):
    engine, members, _ = run(method, alpha, seed)
    assert sorted(members.weights) == sorted(engine.clusters)
    for key, cluster in engine.clusters.items():
        got = coherence(method, cluster.norm, cluster.num_observations)
        assert abs(got - members.brute_force(key)) <= 1e-6, (key, cluster.num_observations)


def test_the_scenes_have_multi_member_clusters_and_merges():
    """The property above is not vacuous: its scenes merge and grow clusters."""
    for method in ("SIMPLE_AVERAGE", "EXP_AVERAGE"):
        engine, members, merges = run(method, 0.3, seed=7)
        assert merges > 0
        assert max(len(m) for m in members.weights.values()) >= 4


def test_use_last_has_no_coherence():
    assert coherence("USE_LAST", 1.0, 5) is None
