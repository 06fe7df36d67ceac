"""The merge pass: discounted threshold, greedy best-first, oldest id survives, no chaining."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from engine_support import E1, E2, make_config, obs

from app.engine import Engine


def merging(initial: float = 0.95, rate: float = 1.0, floor: float = 0.5, **kw: object):
    """Registration at 0.99 (nothing joins by itself) with a merge timer."""
    settings = {
        "initial_threshold": initial,
        "threshold_discount_rate": rate,
        "min_threshold": floor,
        "time_interval_ms": 1000,
    }
    return make_config(0.99, cluster_merging=settings, **kw)


def unit_at(degrees: float) -> list[float]:
    rad = np.deg2rad(degrees)
    return [float(np.cos(rad)), float(np.sin(rad)), 0.0, 0.0]


def test_similar_clusters_merge_into_the_oldest() -> None:
    engine = Engine(merging(0.9))
    engine.step([obs(E1, 1), obs(unit_at(10), 2, count=3), obs(E2, 3)])
    result = engine.merge()
    engine.apply(result)
    assert sorted(engine.clusters) == ["cam:1_0", "cam:3_0"]
    merged = engine.clusters["cam:1_0"]
    assert merged.num_observations == 4
    expected = (np.array(E1) + 3 * np.array(unit_at(10))) / 4
    np.testing.assert_allclose(merged.representative, expected / np.linalg.norm(expected), 1e-6)
    (event,) = result.events
    assert event.type.value == "MERGE_EVENT"
    assert [c.key for c in event.merged_clusters] == ["cam:2_0"]
    assert result.expected == {"cam:1_0": 1, "cam:2_0": 1}


def test_each_cluster_merges_at_most_once_per_pass() -> None:
    engine = Engine(merging(0.9))
    engine.step([obs(unit_at(0), 1), obs(unit_at(14), 2), obs(unit_at(24), 3)])
    first = engine.merge()
    engine.apply(first)
    assert len(first.events) == 1 and len(engine.clusters) == 2
    assert first.events[0].cluster_id.key == "cam:2_0"  # the closest pair, not a chain
    assert [c.key for c in first.events[0].merged_clusters] == ["cam:3_0"]


def test_the_threshold_falls_as_clusters_grow() -> None:
    engine = Engine(merging(0.99, rate=0.9, floor=0.9))
    engine.step([obs(E1, 1), obs(unit_at(20), 2)])  # cosine 0.94
    assert len(engine.merge().upserts) == 1  # max(0.9, 0.99 * 0.9**2) = 0.9 <= 0.94
    engine2 = Engine(merging(0.99, rate=0.999, floor=0.5))
    engine2.step([obs(E1, 1), obs(unit_at(20), 2)])
    assert engine2.merge().upserts == ()  # 0.99 * 0.999**2 = 0.988 > 0.94
    engine3 = Engine(merging(0.99, rate=0.98, floor=0.5))
    engine3.step([obs(E1, 1, count=3), obs(unit_at(20), 2, count=3)])
    assert len(engine3.merge().upserts) == 1  # 0.99 * 0.98**6 = 0.88 < 0.94


def test_merged_cluster_is_realized_if_any_member_was() -> None:
    realization = {"num_samples": 3}
    engine = Engine(merging(0.9, cluster_realization=realization))
    engine.step([obs(E1, 1), obs(unit_at(10), 2, count=3)])
    assert not engine.clusters["cam:1_0"].realized and engine.clusters["cam:2_0"].realized
    result = engine.merge()
    engine.apply(result)
    assert engine.clusters["cam:1_0"].realized


def test_unchanged_clusters_are_not_looked_at_again() -> None:
    engine = Engine(merging(0.9))
    engine.step([obs(E1, 1), obs(E2, 2)])
    first = engine.merge()
    engine.apply(first)
    assert sorted(first.swept) == ["cam:1_0", "cam:2_0"]
    engine.step([obs(unit_at(10), 3)])
    second = engine.merge()
    assert second.swept == ("cam:3_0",)
    assert len(second.events) == 1


def test_merge_without_config_does_nothing() -> None:
    engine = Engine(make_config(0.99))
    engine.step([obs(E1, 1), obs(unit_at(5), 2)])
    assert engine.merge().upserts == ()


def test_a_requested_merge_is_the_merge_the_pass_makes() -> None:
    """The operator's merge shares the pass's code: same survivor, state, flags and event."""
    from app.engine.maintenance import requested_merge

    config = merging(0.9, cluster_realization={"num_samples": 3})
    engine = Engine(config)
    engine.step([obs(E1, 1), obs(unit_at(10), 2, count=3), obs(E2, 3)])
    a, b = engine.clusters["cam:2_0"], engine.clusters["cam:1_0"]
    by_pass = engine.merge()
    asked = requested_merge(config, a, b, engine.watermark)
    assert asked.merged == by_pass.merged == (("cam:2_0", "cam:1_0"),)
    assert asked.expected == by_pass.expected
    assert asked.deletions == by_pass.deletions == ("cam:2_0",)
    ((kept,), (expected,)) = asked.upserts, by_pass.upserts
    np.testing.assert_array_equal(kept.unit, expected.unit)
    assert replace(kept, unit=None) == replace(expected, unit=None)
    assert (kept.num_observations, kept.realized, kept.version) == (4, True, 2)
    assert [(e.type, e.event_id, e.merged_clusters) for e in asked.events] == [
        (e.type, e.event_id, e.merged_clusters) for e in by_pass.events
    ]
