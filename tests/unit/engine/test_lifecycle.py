"""Realization, realized-cluster actions, emission rules, retention and removal."""

from __future__ import annotations

import pytest
from engine_support import E1, E2, NEAR_E1, make_config, obs

from app.engine import DeleteReason, Engine, EventType
from app.errors import UnknownCluster


def realizing(num: int = 3, limit: int = 0, action: str = "KEEP_REALIZED", **kw: object):
    """A config whose clusters realize after ``num`` observations or ``limit`` ms."""
    realization = {"num_samples": num, "time_limit_ms": limit, "realized_cluster_action": action}
    return make_config(0.9, cluster_realization=realization, **kw)


def types(result) -> list[str]:
    return [e.type.value for e in result.events]


def test_a_cluster_realizes_after_num_samples_and_only_then_emits() -> None:
    engine = Engine(realizing(3))
    first = engine.step([obs(E1, 1), obs(NEAR_E1, 2)])
    assert first.events == ()
    assert not engine.clusters["cam:1_0"].realized
    third = engine.step([obs(E1, 3)])
    assert types(third) == ["REG_EVENT"]
    assert third.events[0].cluster.realized and third.events[0].cluster.num_observations == 3
    fourth = engine.step([obs(E1, 4)])
    assert types(fourth) == ["REG_EVENT"]


def test_a_cluster_realizes_by_event_time() -> None:
    engine = Engine(realizing(10, limit=1000))
    engine.step([obs(E1, 0)])
    assert engine.advance(999).events == ()
    result = engine.advance(1000)
    assert types(result) == ["REG_EVENT"]
    assert result.upserts[0].realized and result.upserts[0].version == 2
    engine.apply(result)
    assert engine.advance(5000).events == ()


def test_num_samples_0_realizes_by_time_only() -> None:
    """UVAP's unset num_samples (a config with only time_limit_ms): no count makes it due."""
    engine = Engine(realizing(0, limit=1000))
    assert engine.step([obs(E1, 0), obs(NEAR_E1, 10), obs(E1, 20)]).events == ()
    result = engine.advance(1000)
    assert types(result) == ["REG_EVENT"]
    assert result.upserts[0].num_observations == 3


def test_an_update_past_the_time_limit_finds_it_realized_at_its_deadline() -> None:
    """The realization the timer would have made at 1000 comes first, then the update."""
    engine = Engine(realizing(10, limit=1000))
    result = engine.step([obs(E1, 0), obs(NEAR_E1, 1500)])
    assert types(result) == ["REG_EVENT", "REG_EVENT"]
    assert [e.time for e in result.events] == [1000, 1500]
    assert [e.event_id for e in result.events] == ["cam:0_0@2", "cam:0_0@3"]


def test_realization_by_time_is_the_same_whether_the_timer_or_an_update_comes_first() -> None:
    by_timer = Engine(realizing(10, limit=1000))
    by_timer.step([obs(E1, 0)])
    realized = by_timer.advance(1200)
    by_timer.apply(realized)
    timer_events = [*realized.events, *by_timer.step([obs(NEAR_E1, 1500)]).events]
    by_update = Engine(realizing(10, limit=1000))
    by_update.step([obs(E1, 0)])
    update_events = list(by_update.step([obs(NEAR_E1, 1500)]).events)
    assert [(e.event_id, e.time) for e in timer_events] == [
        (e.event_id, e.time) for e in update_events
    ]


def test_an_observation_never_joins_an_expired_cluster() -> None:
    """Retention at the decision: the timer that deletes the cluster need not have run."""
    engine = Engine(realizing(1, retention_ms=1000))
    engine.step([obs(E1, 0)])
    result = engine.step([obs(E1, 1001)])
    assert result.decisions[0].created
    assert engine.step([obs(E1, 1500)]).decisions[0].cluster_key == "cam:1001_0"
    expired = engine.advance(2000)
    assert expired.deletions == ("cam:0_0",)
    assert expired.events[0].time == 1000  # the end of its retention, not the watermark


def test_an_observation_never_joins_a_cluster_removed_at_its_deadline() -> None:
    engine = Engine(realizing(10, limit=1000, action="REMOVE"))
    engine.step([obs(E1, 0)])
    result = engine.step([obs(E1, 1000)])
    assert result.decisions[0].created


def test_unrealize_restarts_the_count() -> None:
    engine = Engine(realizing(2, action="UNREALIZE"))
    result = engine.step([obs(E1, 1), obs(E1, 2), obs(E1, 3), obs(E1, 4)])
    assert types(result) == ["REG_EVENT", "REG_EVENT"]
    assert [e.cluster.num_observations for e in result.events] == [2, 4]
    assert not engine.clusters["cam:1_0"].realized


def test_remove_action_deletes_after_realizing() -> None:
    engine = Engine(realizing(2, action="REMOVE"))
    result = engine.step([obs(E1, 1), obs(E1, 2), obs(E1, 3)])
    assert types(result) == ["REG_EVENT", "DELETE_EVENT"]
    assert result.events[1].reason is DeleteReason.REALIZED
    assert list(engine.clusters) == ["cam:3_0"]


def test_emit_unrealized_emits_registrations() -> None:
    engine = Engine(realizing(3, emit_unrealized=True))
    result = engine.step([obs(E1, 1)])
    assert types(result) == ["REG_EVENT"]
    assert not result.events[0].cluster.realized


def test_min_update_interval_throttles_updates_of_a_realized_cluster() -> None:
    engine = Engine(make_config(0.9, min_update_interval_ms=1000))
    result = engine.step([obs(E1, 0), obs(E1, 500), obs(E1, 1000), obs(E1, 1200)])
    assert [e.time for e in result.events] == [0, 1000]


def test_retention_expires_idle_clusters_and_tells_only_if_seen() -> None:
    engine = Engine(realizing(2, retention_ms=1000))
    engine.step([obs(E1, 0), obs(E1, 10), obs(E2, 20)])
    result = engine.advance(1010)
    assert result.deletions == ()
    result = engine.advance(1011)
    assert result.deletions == ("cam:0_0",)
    assert types(result) == ["DELETE_EVENT"] and result.events[0].reason is DeleteReason.EXPIRED
    engine.apply(result)
    result = engine.advance(1021)
    assert result.deletions == ("cam:20_0",) and result.events == ()


def test_retention_is_the_largest_of_the_streams_and_zero_is_forever() -> None:
    short = make_config(0.9, streams=("short",), retention_ms=100)
    forever = make_config(0.9, streams=("forever",), retention_ms=0)
    fields = {f: getattr(short, f) for f in short.__slots__}
    engine = Engine(type(short)(**{**fields, "streams": short.streams + forever.streams}))
    engine.step([obs(E1, 0, "short"), obs(NEAR_E1, 1, "forever"), obs(E2, 2, "short")])
    assert engine.clusters["short:0_0"].retention_ms == 0
    result = engine.advance(10_000)
    assert result.deletions == ("short:2_0",)


def test_removal_on_request() -> None:
    engine = Engine(make_config(0.9))
    engine.step([obs(E1, 1)])
    result = engine.remove("cam:1_0", 5)
    assert types(result) == ["DELETE_EVENT"] and result.events[0].reason is DeleteReason.REMOVED
    assert result.expected == {"cam:1_0": 1}
    engine.apply(result)
    assert engine.clusters == {}
    with pytest.raises(UnknownCluster):
        engine.remove("cam:1_0")


def test_event_ids_are_unique_and_deterministic() -> None:
    def run() -> list[str]:
        engine = Engine(realizing(2, action="REMOVE"))
        result = engine.step([obs(E1, t) for t in range(9)])
        return [e.event_id for e in result.events]

    ids = run()
    assert ids == run()
    assert len(set(ids)) == len(ids)
    assert EventType.DELETE_EVENT.value == "DELETE_EVENT"
