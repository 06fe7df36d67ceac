"""Deferred decisions (improved_mode.deferral_ms): a window's groups decided as one.

A window's observations are grouped by average linkage and each group joins or starts one
cluster; the result must not depend on how windows are packed into batches, must conserve
every observation, and its events must rebuild the engine's clusters for a consumer.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_support import make_config, obs, scene
from hypothesis import given, settings
from hypothesis import strategies as st

from app.codec.encode import event_to_dict
from app.config import ConfigError
from app.downstream.view import ClusterView
from app.engine import Engine, Observation, StepResult
from app.engine.window import groups, pack, runs
from tests.unit.test_reid_view import assert_view_is_engine

MERGING = {"threshold_discount_rate": 1.0, "time_interval_ms": 1_000}


def deferred_config(threshold: float, deferral_ms: int = 100, **mode: object):
    merging = dict(MERGING, initial_threshold=threshold, min_threshold=0.0)
    improved = {"enabled": True, "size_discount": 0.1, "deferral_ms": deferral_ms, **mode}
    return make_config(threshold, streams=("a", "b", "cam"), cluster_merging=merging,
                       improved_mode=improved)


def at(degrees: float) -> list[float]:
    rad = np.deg2rad(degrees)
    return [float(np.cos(rad)), float(np.sin(rad)), 0.0, 0.0]


def decide(engine: Engine, observations: list[Observation], batch: int) -> list[StepResult]:
    """Whole windows packed into batches of ``batch``, each applied; a merge pass at the end."""
    times = [o.time for o in observations]
    windows = [observations[s:e] for s, e in runs(times, engine.deferral_ms,
                                                   engine.max_window_size)]
    results = []
    for part in pack(windows, batch):
        result = engine.process(part)
        engine.apply(result)
        results.append(result)
    final = engine.merge()
    engine.apply(final)
    return [*results, final]


def test_a_visit_decided_together_keeps_its_outlier_image() -> None:
    # c first, 30 degrees from a: alone it is too far (cos 30 = 0.866 < 0.9) and starts a
    # cluster of its own; with a and b beside it, its mean similarity to them (0.903) passes
    visit = [obs(at(30), 0, key="c"), obs(at(0), 10, key="a"), obs(at(10), 20, key="b")]
    one_by_one = Engine(make_config(
        0.9, cluster_merging=dict(MERGING, initial_threshold=0.9, min_threshold=0.0),
        improved_mode={"enabled": True, "size_discount": 0.1}))
    alone = one_by_one.process(visit)
    assert len({d.cluster_key for d in alone.decisions}) == 2
    together = Engine(deferred_config(0.9)).process(visit)
    assert [(d.cluster_key, d.created) for d in together.decisions] == [
        ("cam:c", True), ("cam:c", False), ("cam:c", False)
    ]
    (cluster,) = together.upserts
    assert cluster.num_observations == 3 and cluster.version == 3  # one version per member


def test_a_group_joins_a_cluster_only_when_its_members_are_alike_on_average() -> None:
    engine = Engine(deferred_config(0.9, size_discount=0.0))
    engine.apply(engine.process([obs(at(0), 0, key="x"), obs(at(2), 1, key="y")]))
    near = engine.process([obs(at(20), 200, key="p"), obs(at(22), 210, key="q")])
    assert {d.cluster_key for d in near.decisions} == {"cam:x"}  # mean cos ~20 deg = 0.94
    far = engine.process([obs(at(30), 200, key="p"), obs(at(34), 210, key="q")])
    assert [d.created for d in far.decisions] == [True, False]  # mean cos ~31 deg = 0.86


def test_late_observations_stay_in_the_window_they_came_in() -> None:
    assert runs([0, 150, 90, 210], 100, 64) == [(0, 1), (1, 3), (3, 4)]


def test_a_camera_clock_far_ahead_holds_no_more_than_max_window_size() -> None:
    # one record an hour ahead opens its window, and the others' records are late for it:
    # they join it until it holds max_window_size, then their own windows are cut as usual
    times = [3_600_000] + list(range(0, 2_000, 10))
    cut = runs(times, 100, 32)
    assert cut[0] == (0, 32)
    for start, end in cut[1:]:
        assert len({t // 100 for t in times[start:end]}) == 1  # one window of event time each
    assert max(end - start for start, end in cut[1:]) == 10


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.floats(0.5, 0.9),
       deferral=st.sampled_from([10, 50, 250]), limit=st.sampled_from([2, 7, 2048]))
def test_any_packing_of_whole_windows_gives_the_same_clusters_and_events(
    seed: int, threshold: float, deferral: int, limit: int
) -> None:
    observations = scene(seed, 300, 12, 0.6, dim=16)
    outcomes = []
    for batch in (1, 37, 10_000):
        engine = Engine(deferred_config(threshold, deferral, max_window_size=limit))
        results = decide(engine, observations, batch)
        clusters = sorted((c.key, c.version, c.num_observations, c.unit.tobytes())
                          for c in engine.clusters.values())
        events = [(e.event_id, e.type.value, e.time) for r in results for e in r.events]
        outcomes.append((clusters, events))
    assert outcomes[0] == outcomes[1] == outcomes[2]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), deferral=st.sampled_from([20, 100]),
       realization=st.sampled_from([None, {"num_samples": 3, "time_limit_ms": 20}]))
def test_deferred_decisions_conserve_counts_and_match_the_downstream_view(
    seed: int, deferral: int, realization: dict | None
) -> None:
    observations = scene(seed, 400, 20, 0.7, dim=16)
    extra = {} if realization is None else {"cluster_realization": realization}
    merging = dict(MERGING, initial_threshold=0.75, min_threshold=0.0)
    engine = Engine(make_config(0.75, streams=("a", "b"), cluster_merging=merging, **extra,
                                improved_mode={"enabled": True, "size_discount": 0.15,
                                               "deferral_ms": deferral}))
    results = decide(engine, observations, 64)
    decided = [d for r in results for d in r.decisions]
    assert len(decided) == len(observations)  # one decision per observation, none twice
    total = sum(c.num_observations for c in engine.clusters.values())
    assert total == sum(o.count for o in observations)
    view = ClusterView().apply_all(event_to_dict(e) for r in results for e in r.events)
    assert_view_is_engine(view, engine)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)),
                min_size=1, max_size=30),
       st.floats(-0.5, 0.99))
def test_groups_partition_the_window_and_each_is_alike_enough_on_average(
    rows: list[tuple[float, float, float]], threshold: float
) -> None:
    vectors = np.array(rows, dtype=np.float32) + np.float32(1e-3)
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    found = groups(units, threshold)
    assert sorted(r for g in found for r in g) == list(range(len(rows)))
    assert [g[0] for g in found] == sorted(g[0] for g in found)
    for g in found:
        if len(g) > 1:
            sims = units[g] @ units[g].T
            mean = (sims.sum() - np.trace(sims)) / (len(g) * (len(g) - 1))
            assert mean >= threshold - 1e-5  # average linkage: pairs within reach on average


def test_deferral_is_refused_with_track_linking_and_an_interval_it_does_not_divide() -> None:
    merging = dict(MERGING, initial_threshold=0.8, min_threshold=0.0, time_interval_ms=1_500)
    with pytest.raises(ConfigError) as refused:
        make_config(0.8, cluster_merging=merging,
                    improved_mode={"enabled": True, "deferral_ms": 1_000},
                    track_linking={"track_id_path": "track", "track_threshold": 0.5})
    message = str(refused.value)
    assert "improved_mode.deferral_ms" in message and "track_linking" in message
    assert "must divide cluster_merging.time_interval_ms (1500)" in message


def test_a_config_with_deferral_round_trips() -> None:
    config = deferred_config(0.8, 500, window_threshold=0.85, max_window_size=300)
    assert config.deferral_ms == 500 and config.improved_mode.window_threshold == 0.85
    assert config.max_window_size == 300
    again = make_config(0.8)  # no improved mode: nothing deferred
    assert again.deferral_ms == 0 and again.max_window_size == 2048
    from app.config import parse_config

    assert parse_config(config.to_dict()) == config
    assert "max_window_size" not in str(deferred_config(0.8).to_dict())  # the default: left out
    with pytest.raises(ConfigError) as refused:
        deferred_config(0.8, max_window_size=1)
    assert "improved_mode.max_window_size" in str(refused.value)


def test_a_threshold_of_one_keeps_every_observation_alone_even_deferred() -> None:
    engine = Engine(deferred_config(1.0))
    result = engine.process([obs(at(0), 0, key="a"), obs(at(0), 10, key="b")])
    assert [d.created for d in result.decisions] == [True, True]
