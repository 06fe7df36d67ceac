"""Clusters held as rows read back exactly as they were put, through any puts and removals."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.columns import ClusterColumns
from app.engine.types import Cluster, ClusterId
from app.index.numpy_index import NumpyIndex

STREAMS = ("cam", "door:2", "")  # a stream id may hold the separator, or be empty


def make(rng: np.random.Generator, i: int, version: int) -> Cluster:
    stream = STREAMS[i % len(STREAMS)]
    unit = rng.normal(size=4).astype(np.float32)
    return Cluster(
        id=ClusterId(1_700_000_000_000 + i, f"k{i}:x" if i % 4 == 0 else f"k{i}", stream),
        unit=unit / np.float32(np.linalg.norm(unit)),
        norm=float(rng.uniform(0.5, 30.0)),
        num_observations=int(rng.integers(1, 10**6)),
        realized=bool(rng.integers(0, 2)),
        first_time=int(rng.integers(0, 2**50)),
        last_time=int(rng.integers(0, 2**50)),
        streams=tuple(sorted({stream, STREAMS[int(rng.integers(0, 3))]})),
        retention_ms=int(rng.integers(0, 3)) * 60_000,
        version=version,
        pending=int(rng.integers(0, 5)),
        pending_since=int(rng.integers(0, 2**50)),
        last_emit_time=int(rng.integers(-1, 2**50)),
        emitted=bool(rng.integers(0, 2)),
        model_id=["", "facenet", "arcface"][int(rng.integers(0, 3))],
        type=["", "PERSON_FACE"][int(rng.integers(0, 2))],
        track=["", f"cam/t{i}"][int(rng.integers(0, 2))],
        track_time=int(rng.integers(-1, 2**50)),
    )


def same(a: Cluster, b: Cluster) -> bool:
    assert np.array_equal(a.unit, b.unit) and a.unit.dtype == b.unit.dtype == np.float32
    assert dataclasses.replace(a, unit=None) == dataclasses.replace(b, unit=None)
    assert a.key == b.key
    return True


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 300),
       keys=st.integers(1, 40), capacity=st.sampled_from([1, 2, 1024]))
def test_columns_read_back_what_was_put(seed: int, steps: int, keys: int, capacity: int) -> None:
    rng = np.random.default_rng(seed)
    index = NumpyIndex()
    held = ClusterColumns(index, capacity=capacity)
    expected: dict[str, Cluster] = {}
    for step in range(steps):
        i = int(rng.integers(0, keys))
        key = make(rng, i, 1).key
        if key in expected and rng.random() < 0.3:  # remove it and maybe others, in one call
            others = [k for k in expected if k != key and rng.random() < 0.1]
            gone = [key, *others, "absent"]
            for k in gone:
                held.forget(k)
                expected.pop(k, None)
            held.moved(index.remove(gone))
            continue
        cluster = make(rng, i, step + 1)
        index.upsert([key], cluster.unit[None])
        held.put([cluster])
        expected[key] = cluster
    assert len(held) == len(expected) and set(held) == set(expected)
    assert "absent" not in held and held.version_of("absent") is None
    for key, cluster in expected.items():
        assert same(held[key], cluster)
        assert held.version_of(key) == cluster.version
        assert held.mortal(key) == (cluster.retention_ms > 0)
        assert held.track_of(key) == cluster.track
        assert held.row(key).last_time == cluster.last_time
    assert held.realized_count() == sum(c.realized for c in expected.values())
    snapshot = held.snapshot([*expected, "absent"])
    assert snapshot.absent == ["absent"]
    for key in list(expected):  # rows changed after the snapshot do not change it
        index.upsert([key], -expected[key].unit[None])
        held.put([dataclasses.replace(expected[key], version=10**6, track="later")])
    restored = held.restore(snapshot)
    assert [c.key for c in restored] == list(expected)
    assert all(same(c, expected[c.key]) for c in restored)


def test_a_read_cluster_is_a_copy() -> None:
    index = NumpyIndex()
    held = ClusterColumns(index)
    cluster = make(np.random.default_rng(0), 1, 1)
    index.upsert([cluster.key], cluster.unit[None])
    held.put([cluster])
    read = held[cluster.key]
    index.upsert([cluster.key], -cluster.unit[None])
    assert np.array_equal(read.unit, cluster.unit)
