"""Registration and update rules of DESIGN.md section 4, on hand-built 4-d vectors."""

from __future__ import annotations

import numpy as np
import pytest
from engine_support import E1, E2, NEAR_E1, make_config, obs

from app.engine import Engine, EventType
from app.errors import UnknownStream


def test_similar_observation_updates_and_dissimilar_registers() -> None:
    engine = Engine(make_config(0.9))
    result = engine.step([obs(E1, 1), obs(NEAR_E1, 2), obs(E2, 3)])
    assert [d.created for d in result.decisions] == [True, False, True]
    assert len(engine.clusters) == 2
    first = engine.clusters["cam:1_0"]
    assert first.num_observations == 2
    assert first.id.first_detection_time == 1
    assert first.id.first_detection_key == "1_0"
    assert first.id.first_detection_stream_id == "cam"


def test_one_global_cluster_db_across_streams() -> None:
    engine = Engine(make_config(0.9, streams=("a", "b")))
    engine.step([obs(E1, 1, stream="a"), obs(NEAR_E1, 2, stream="b")])
    (cluster,) = engine.clusters.values()
    assert cluster.streams == ("a", "b")
    assert cluster.id.first_detection_stream_id == "a"


def test_threshold_one_makes_every_vector_its_own_cluster() -> None:
    engine = Engine(make_config(1.0))
    engine.step([obs(E1, 1), obs(E1, 2), obs(E1, 3)])
    assert len(engine.clusters) == 3


def test_thresholds_are_per_stream() -> None:
    config = make_config(0.995, streams=("strict",))
    loose = make_config(0.5, streams=("loose",))
    config = type(config)(**{**{f: getattr(config, f) for f in config.__slots__},
                             "streams": config.streams + loose.streams})
    engine = Engine(config)
    engine.step([obs(E1, 1, "strict"), obs(NEAR_E1, 2, "strict"), obs(NEAR_E1, 3, "loose")])
    sizes = sorted(c.num_observations for c in engine.clusters.values())
    assert sizes == [1, 2]


def test_simple_average_is_the_count_weighted_mean() -> None:
    engine = Engine(make_config(0.0))
    engine.step([obs(E1, 1), obs(E2, 2, count=3)])
    (cluster,) = engine.clusters.values()
    expected = np.array([1, 3, 0, 0], dtype=np.float32) / np.sqrt(10)
    np.testing.assert_allclose(cluster.representative, expected, atol=1e-6)
    assert cluster.num_observations == 4


def test_exp_average_moves_by_alpha() -> None:
    engine = Engine(make_config(0.0, method="EXP_AVERAGE", ema_alpha=0.25))
    engine.step([obs(E1, 1), obs(E2, 2)])
    (cluster,) = engine.clusters.values()
    expected = np.array([0.75, 0.25, 0, 0]) / np.linalg.norm([0.75, 0.25])
    np.testing.assert_allclose(cluster.representative, expected, atol=1e-6)


def test_use_last_takes_the_last_vector() -> None:
    engine = Engine(make_config(0.1, method="USE_LAST"))
    engine.step([obs(E1, 1), obs(NEAR_E1, 2), obs([0.8, 0.6, 0, 0], 3)])
    (cluster,) = engine.clusters.values()
    np.testing.assert_allclose(cluster.representative, [0.8, 0.6, 0, 0], atol=1e-6)
    assert cluster.num_observations == 3


def test_an_fv_cluster_input_counts_as_its_observations() -> None:
    engine = Engine(make_config(0.9))
    engine.step([obs(E1, 1, count=7), obs(NEAR_E1, 2)])
    (cluster,) = engine.clusters.values()
    assert cluster.num_observations == 8


def test_vectors_need_not_be_unit_length() -> None:
    engine = Engine(make_config(0.9))
    engine.step([obs([5.0, 0, 0, 0], 1), obs([0.0, 0.0, 3.0, 0.0], 2), obs([2.0, 0.1, 0, 0], 3)])
    assert sorted(c.num_observations for c in engine.clusters.values()) == [1, 2]


def test_a_cluster_created_in_a_batch_is_matched_later_in_that_batch() -> None:
    engine = Engine(make_config(0.9))
    result = engine.step([obs(E1, 1), obs(E2, 2), obs(NEAR_E1, 3), obs(E2, 4)])
    assert [d.created for d in result.decisions] == [True, True, False, False]
    assert [d.cluster_key for d in result.decisions] == ["cam:1_0", "cam:2_0", "cam:1_0", "cam:2_0"]


def test_process_changes_nothing_until_apply() -> None:
    engine = Engine(make_config(0.9))
    result = engine.process([obs(E1, 1)])
    assert engine.clusters == {} and len(engine.index) == 0
    engine.apply(result)
    assert list(engine.clusters) == ["cam:1_0"]
    assert result.expected == {"cam:1_0": 0}


def test_unknown_stream_is_refused_with_its_name() -> None:
    engine = Engine(make_config(0.9))
    with pytest.raises(UnknownStream, match="nowhere"):
        engine.step([obs(E1, 1, stream="nowhere")])


def test_a_repeated_detection_key_still_gets_a_unique_cluster() -> None:
    engine = Engine(make_config(0.9))
    engine.step([obs(E1, 1, key="k"), obs(E2, 1, key="k")])
    assert sorted(engine.clusters) == ["cam:k", "cam:k~2"]


def test_without_realization_every_change_is_an_event() -> None:
    engine = Engine(make_config(0.9))
    result = engine.step([obs(E1, 1), obs(NEAR_E1, 2)])
    assert [e.type for e in result.events] == [EventType.REG_EVENT] * 2
    assert [e.cluster.num_observations for e in result.events] == [1, 2]
    assert [e.event_id for e in result.events] == ["cam:1_0@1", "cam:1_0@2"]
    assert all(e.cluster.realized for e in result.events)


def test_load_takes_newer_versions_only() -> None:
    engine = Engine(make_config(0.9))
    engine.step([obs(E1, 1), obs(NEAR_E1, 2)])
    current = engine.clusters["cam:1_0"]
    older = type(current)(**{**{f: getattr(current, f) for f in current.__slots__}, "version": 1})
    engine.load([older])
    assert engine.clusters["cam:1_0"].version == 2
    engine.load([], deletions=["cam:1_0"])
    assert engine.clusters == {} and len(engine.index) == 0
