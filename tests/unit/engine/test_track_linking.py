"""Track linking: the frames of one tracker track stay in one cluster (docs/tracks.md)."""

from __future__ import annotations

import numpy as np
from engine_support import E1, E2, make_config, obs
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine import Engine, Observation

TRACKS = {"track_id_path": "track_id", "track_threshold": 0.5, "time_window_ms": 1000}
SIDEWAYS = [0.6, 0.8, 0.0, 0.0]  # cosine 0.6 to E1: above the track bar, below reg_threshold


def linked_engine(threshold: float = 0.9, streams: tuple[str, ...] = ("cam",)) -> Engine:
    return Engine(make_config(threshold, streams=streams, track_linking=TRACKS))


def test_a_frame_below_reg_threshold_joins_its_tracks_cluster() -> None:
    engine = linked_engine()
    first = engine.step([obs(E1, 0, track="7")]).decisions[0]
    second = engine.step([obs(SIDEWAYS, 100, track="7")]).decisions[0]
    assert not second.created
    assert second.cluster_key == first.cluster_key
    assert abs(second.similarity - 0.6) < 1e-6
    cluster = engine.clusters[first.cluster_key]
    assert (cluster.num_observations, cluster.track, cluster.track_time) == (2, "cam/7", 100)


def test_without_a_track_the_same_frame_starts_a_new_cluster() -> None:
    engine = linked_engine()
    engine.step([obs(E1, 0, track="7")])
    assert engine.step([obs(SIDEWAYS, 100)]).decisions[0].created
    other_track = engine.step([obs([0.6, 0.0, 0.8, 0.0], 200, track="8")]).decisions[0]
    assert other_track.created


def test_the_link_ends_after_the_time_window() -> None:
    engine = linked_engine()
    engine.step([obs(E1, 0, track="7")])
    assert not engine.step([obs(SIDEWAYS, 1000, track="7")]).decisions[0].created
    assert engine.step([obs(SIDEWAYS, 2001, track="7")]).decisions[0].created


def test_a_frame_below_the_track_threshold_starts_a_cluster_that_takes_the_track() -> None:
    engine = linked_engine()
    first = engine.step([obs(E1, 0, track="7")]).decisions[0]
    odd = engine.step([obs([0.3, 0.954, 0.0, 0.0], 100, track="7")]).decisions[0]
    assert odd.created
    follow = engine.step([obs([0.0, 1.0, 0.0, 0.0], 200, track="7")]).decisions[0]
    assert follow.cluster_key == odd.cluster_key != first.cluster_key


def test_a_better_cluster_above_reg_threshold_wins_and_the_track_follows_it() -> None:
    engine = linked_engine(threshold=0.8)
    tracked = engine.step([obs(E1, 0, track="7")]).decisions[0].cluster_key
    other = engine.step([obs(E2, 10, key="b")]).decisions[0].cluster_key
    near_other = [0.5, 0.866, 0.0, 0.0]  # 0.5 to the track's cluster, 0.866 to the other
    moved = engine.step([obs(near_other, 100, track="7")]).decisions[0]
    assert moved.cluster_key == other
    assert engine.clusters[other].track == engine.clusters[tracked].track == "cam/7"
    # Both name the track; the one that took it last holds it.
    between = [0.75, 0.66, 0.0, 0.0]  # below 0.8 to both, closer to the first cluster
    assert engine.step([obs(between, 200, track="7")]).decisions[0].cluster_key == other


def test_tracks_are_per_stream() -> None:
    engine = linked_engine(streams=("a", "b"))
    engine.step([obs(E1, 0, stream="a", track="7")])
    assert engine.step([obs(SIDEWAYS, 100, stream="b", track="7")]).decisions[0].created


def test_streams_without_track_linking_ignore_track_ids() -> None:
    engine = Engine(make_config(0.9))
    engine.step([obs(E1, 0, track="7")])
    assert engine.step([obs(SIDEWAYS, 100, track="7")]).decisions[0].created
    assert all(c.track == "" for c in engine.clusters.values())


def test_a_replica_loaded_from_the_clusters_links_like_the_engine_that_made_them() -> None:
    engine = linked_engine(threshold=0.8)
    engine.step([obs(E1, 0, track="7"), obs(E2, 10, key="b"), obs([0.5, 0.866, 0, 0], 100,
                                                                    track="7")])
    replica = linked_engine(threshold=0.8)
    replica.load(list(engine.clusters.values()))
    frame = [obs([0.75, 0.66, 0.0, 0.0], 200, track="7")]
    assert replica.process(frame).decisions == engine.process(frame).decisions


def test_the_link_goes_with_a_deleted_cluster() -> None:
    engine = linked_engine()
    key = engine.step([obs(E1, 0, track="7")]).decisions[0].cluster_key
    engine.apply(engine.remove(key))
    assert engine.track_members == {}
    assert engine.step([obs(SIDEWAYS, 100, track="7")]).decisions[0].created


def tracked_scene(seed: int, n: int) -> list[Observation]:
    """Walks of 2-6 noisy frames of a few people on two streams, walks interleaved in time."""
    rng = np.random.default_rng(seed)
    people = rng.normal(size=(5, 8))
    rows = []
    time, walk = 0, 0
    while len(rows) < n:
        person, stream = int(rng.integers(5)), str(rng.choice(["a", "b"]))
        for _ in range(int(rng.integers(2, 7))):
            time += int(rng.integers(0, 400))
            rows.append((people[person] + 0.9 * rng.normal(size=8), stream, walk, time))
        walk = (walk + 1) % 4  # track ids come back, as a tracker's do
    rows.sort(key=lambda r: r[3])
    return [
        Observation(v.astype(np.float32), s, f"k{i}", t, track=str(w))
        for i, (v, s, w, t) in enumerate(rows[:n])
    ]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.sampled_from([2, 5, 17, 300]))
def test_batches_link_tracks_exactly_as_single_steps(seed: int, batch: int) -> None:
    observations = tracked_scene(seed, 120)
    config = make_config(0.8, streams=("a", "b"), track_linking=TRACKS)

    def decisions(size: int) -> list[tuple[str, bool]]:
        engine = Engine(config)
        out = []
        for start in range(0, len(observations), size):
            out += [(d.cluster_key, d.created) for d in
                    engine.step(observations[start : start + size]).decisions]
        return out

    assert decisions(batch) == decisions(1)


def test_a_merged_cluster_keeps_the_track_that_fed_either_last() -> None:
    merging = {"initial_threshold": 0.5, "threshold_discount_rate": 1.0, "min_threshold": 0.5,
               "time_interval_ms": 1000}
    engine = Engine(make_config(0.95, track_linking=TRACKS, cluster_merging=merging))
    older = engine.step([obs(E1, 0, key="old", track="1")]).decisions[0].cluster_key
    engine.step([obs([0.8, 0.6, 0.0, 0.0], 50, key="young", track="2")])
    result = engine.merge()
    engine.apply(result)
    assert result.merged and set(engine.clusters) == {older}
    survivor = engine.clusters[older]
    assert (survivor.track, survivor.track_time) == ("cam/2", 50)
    assert not engine.step([obs([0.3, 0.954, 0.0, 0.0], 100, track="2")]).decisions[0].created
