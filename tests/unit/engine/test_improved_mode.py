"""The improved mode (clustering_config.improved_mode, app/engine/repair.py).

Off, it is the plain engine exactly; on, joins and merges test the mean similarity between
members against a size-aware threshold, every repair is an ordinary merge that a store accepts
and a downstream view can apply, and observation counts are conserved.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from engine_support import E1, E2, make_config, obs, scene
from hypothesis import given, settings
from hypothesis import strategies as st

from app.codec.encode import event_to_dict
from app.config import ImprovedModeConfig, MergingConfig
from app.downstream.view import ClusterView
from app.engine import Cluster, ClusterId, Engine, Observation, StepResult
from app.engine.repair import candidate_pairs, mean_member_similarity, merge_threshold
from app.store import MemoryStore
from app.store.base import Commit

MERGING = {
    "initial_threshold": 0.9,
    "threshold_discount_rate": 0.97,
    "min_threshold": 0.6,
    "time_interval_ms": 5,
}


def config(threshold: float = 0.9, improved: dict | None = None, **clustering: object):
    if improved is not None:
        clustering["improved_mode"] = improved
    floor = min(MERGING["min_threshold"], threshold)
    merging = dict(MERGING, initial_threshold=threshold, min_threshold=floor)
    clustering.setdefault("cluster_merging", merging)
    return make_config(threshold, streams=("a", "b"), **clustering)


def unit_at(degrees: float) -> np.ndarray:
    rad = np.deg2rad(degrees)
    return np.array([np.cos(rad), np.sin(rad), 0.0, 0.0], dtype=np.float32)


def cluster(key: str, members: list[np.ndarray], time: int = 0) -> Cluster:
    """A SIMPLE_AVERAGE cluster holding ``members`` (unit vectors), as the store would."""
    state = np.sum(members, axis=0).astype(np.float32)
    return Cluster.from_state(
        id=ClusterId(time, key, "a"), state=state, num_observations=len(members), realized=True,
        first_time=time, last_time=time, streams=("a",), retention_ms=0, version=1, pending=0,
        pending_since=time, emitted=True,
    )


def drive(engine: Engine, observations: list[Observation], batch: int, every: int = 2):
    """Batches with a merge pass and an advance every ``every`` batches; all results."""
    results: list[StepResult] = []
    for i, start in enumerate(range(0, len(observations), batch)):
        for result in (engine.process(observations[start : start + batch]),):
            engine.apply(result)
            results.append(result)
        if i % every == every - 1:
            for compute in (engine.merge, lambda: engine.advance(engine.watermark)):
                result = compute()
                engine.apply(result)
                results.append(result)
    final = engine.merge()
    engine.apply(final)
    return [*results, final]


def summary(result: StepResult) -> tuple:
    return (
        tuple((d.cluster_key, d.created) for d in result.decisions),
        tuple((e.event_id, e.type.value, e.time, tuple(c.key for c in e.merged_clusters))
              for e in result.events),
        tuple((c.key, c.version, c.num_observations) for c in result.upserts),
        result.deletions,
        tuple(sorted(result.expected.items())),
        result.merged,
    )


# -- off means off ------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    threshold=st.floats(0.3, 0.95),
    batch=st.sampled_from([1, 7, 64]),
    discount=st.sampled_from([0.0, 0.1, 0.5]),
    realization=st.sampled_from([None, {"num_samples": 3, "time_limit_ms": 20}]),
)
def test_mode_off_gives_exactly_the_plain_engine(
    seed: int, threshold: float, batch: int, discount: float, realization: dict | None
) -> None:
    observations = scene(seed, 150, 8, 0.5)
    extra = {} if realization is None else {"cluster_realization": realization}
    plain = config(threshold, **extra)
    off = config(threshold, {"enabled": False, "size_discount": discount}, **extra)
    assert off.improved_mode is None and plain.improved is None
    a = drive(Engine(plain), observations, batch)
    b = drive(Engine(off), observations, batch)
    assert [summary(r) for r in a] == [summary(r) for r in b]


# -- joins --------------------------------------------------------------------------------------


def test_a_loose_cluster_is_joined_only_when_its_members_are_alike() -> None:
    loose = cluster("loose", [unit_at(30), unit_at(-30)])  # representative E1, members 60 deg apart
    for mode, created in ((None, False), ({"enabled": True, "size_discount": 0.03}, True)):
        engine = Engine(config(0.9, mode))
        engine.load([loose])
        (decision,) = engine.step([obs(E1, 5, stream="a")]).decisions
        # plain: cosine 1.0 to the representative; improved: mean member similarity cos 30 = 0.87
        assert decision.created is created


def test_a_large_tight_cluster_takes_a_slightly_less_similar_member() -> None:
    tight = cluster("tight", [unit_at(0)] * 50)
    x = unit_at(float(np.degrees(np.arccos(0.945))))  # cosine 0.945 to every member
    for mode, created in ((None, True), ({"enabled": True, "size_discount": 0.03}, False)):
        engine = Engine(config(0.95, mode))
        engine.load([tight])
        (decision,) = engine.step([obs(x.tolist(), 5, stream="a")]).decisions
        # improved: 0.945 >= 0.95 - 0.03 * (1 - sqrt((1 + 1/50) / 2)) = 0.9414
        assert decision.created is created


def test_mean_member_similarity_is_exact_from_the_sum() -> None:
    rng = np.random.default_rng(1)
    members = [v / np.linalg.norm(v) for v in rng.normal(size=(7, 4)).astype(np.float32)]
    c = cluster("c", members)
    x = members[0]
    sim = float(x @ c.representative)
    assert mean_member_similarity(c, sim) == pytest.approx(np.mean([x @ m for m in members]), 1e-5)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    threshold=st.floats(0.3, 0.95),
    batch=st.sampled_from([2, 5, 16, 512]),
    discount=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_improved_batches_decide_as_one_by_one(
    seed: int, threshold: float, batch: int, discount: float
) -> None:
    observations = scene(seed, 120, 10, 0.6)
    mode = {"enabled": True, "size_discount": discount}

    def keys(size: int) -> list[tuple[str, bool]]:
        engine = Engine(config(threshold, mode), search_k=2)
        out = []
        for start in range(0, len(observations), size):
            out += [(d.cluster_key, d.created)
                    for d in engine.step(observations[start : start + size]).decisions]
        return out

    assert keys(batch) == keys(1)


# -- repairs ------------------------------------------------------------------------------------


def test_split_clusters_whose_members_are_alike_are_merged_into_the_oldest() -> None:
    old = cluster("old", [unit_at(0), unit_at(4)] * 5, time=1)
    young = cluster("young", [unit_at(6), unit_at(10)] * 5, time=2)
    engine = Engine(config(0.995, {"enabled": True, "size_discount": 0.03}))
    engine.load([old, young])
    result = engine.merge()
    assert result.merged == (("a:young", "a:old"),)
    assert result.deletions == ("a:young",) and [c.key for c in result.upserts] == ["a:old"]
    assert result.expected == {"a:old": 1, "a:young": 1}
    (event,) = result.events
    assert event.type.value == "MERGE_EVENT" and [c.key for c in event.merged_clusters] == [
        "a:young"
    ]
    engine.apply(result)
    assert engine.clusters["a:old"].num_observations == 20


def test_close_means_of_loose_clusters_are_not_merged() -> None:
    a = cluster("a1", [unit_at(40), unit_at(-40)], time=1)
    b = cluster("b1", [unit_at(45), unit_at(-35)], time=2)  # means 5 degrees apart
    plain = Engine(config(0.95))
    plain.load([a, b])
    assert plain.merge().merged  # the plain pass compares means: cosine 0.996
    improved = Engine(config(0.95, {"enabled": True, "size_discount": 0.03}))
    improved.load([a, b])
    assert improved.merge().merged == ()  # mean member similarity about 0.58


def test_candidate_margins_follow_the_documented_threshold() -> None:
    clusters = [cluster(f"c{i}", [unit_at(i * 3 + j) for j in range(i + 1)], time=i)
                for i in range(5)]
    merging = MergingConfig(0.99, 1.0, 0.5, 5)
    mode = ImprovedModeConfig(True, 0.04)
    engine = Engine(config(0.99, {"enabled": True, "size_discount": 0.04}))
    engine.load(clusters)
    pairs = candidate_pairs(engine, sorted(engine.clusters), merging, mode)
    assert pairs
    for margin, key_a, key_b in pairs:
        ca, cb = engine.clusters[key_a], engine.clusters[key_b]
        mean = float(ca.state @ cb.state) / (ca.num_observations * cb.num_observations)
        expected = mean - merge_threshold(merging, mode, ca.num_observations, cb.num_observations)
        assert margin == pytest.approx(expected, abs=1e-5) and margin >= 0


def test_discount_is_zero_for_two_observations_and_grows_to_the_setting() -> None:
    mode = ImprovedModeConfig(True, 0.04)
    assert mode.discount(1, 1) == 0.0
    assert 0 < mode.discount(1, 2) < mode.discount(5, 5) < mode.discount(500, 500) < 0.04


@pytest.mark.parametrize("realization", [None, {"num_samples": 3, "time_limit_ms": 50}])
@pytest.mark.parametrize("seed", [3, 11])
def test_events_of_the_improved_mode_rebuild_the_engine_clusters(
    seed: int, realization: dict | None
) -> None:
    observations = scene(seed, 600, 25, 0.7, dim=16)
    extra = {} if realization is None else {"cluster_realization": realization}
    engine = Engine(config(0.75, {"enabled": True, "size_discount": 0.15}, **extra))
    store = MemoryStore()
    results = drive(engine, observations, 32)

    async def commit_all() -> None:  # the store checks every step's expected versions
        await store.start()
        for r in results:
            if r.upserts or r.deletions:
                await store.commit(
                    Commit(expected=r.expected, upserts=r.upserts, deletions=r.deletions)
                )
        await store.close()

    asyncio.run(commit_all())
    merged = [pair for r in results for pair in r.merged]
    assert merged, "the scene should need repairs"
    for r in results:
        for absorbed, survivor in r.merged:
            assert absorbed in r.deletions and survivor in r.expected and absorbed in r.expected
    total = sum(c.num_observations for c in engine.clusters.values())
    assert total == sum(o.count for o in observations)  # counts conserved
    view = ClusterView().apply_all(event_to_dict(e) for r in results for e in r.events)
    realized = {k: c for k, c in engine.clusters.items() if c.realized}
    assert set(view.clusters) == set(realized)
    for key, c in realized.items():
        assert view.clusters[key].num_observations == c.num_observations
        np.testing.assert_allclose(view.clusters[key].representative, c.representative, atol=1e-6)


def test_improved_mode_is_refused_without_sums_or_a_merge_timer() -> None:
    from app.errors import ConfigError

    with pytest.raises(ConfigError, match="needs method SIMPLE_AVERAGE"):
        make_config(0.9, method="EXP_AVERAGE", improved_mode={"enabled": True},
                    cluster_merging=MERGING)
    with pytest.raises(ConfigError, match="needs cluster_merging"):
        make_config(0.9, improved_mode={"enabled": True})
    off = make_config(0.9, method="EXP_AVERAGE", improved_mode={"enabled": False})
    assert off.improved_mode is None


def test_merge_pass_with_nothing_to_do_is_empty() -> None:
    engine = Engine(config(0.9, {"enabled": True}))
    engine.step([obs(E1, 1, stream="a"), obs(E2, 2, stream="b", key="2_1")])
    result = engine.merge()
    assert (result.merged, result.events, result.upserts, result.deletions) == ((), (), (), ())
