"""``Engine.checkpoint`` and ``restore``: an applied result taken back leaves no trace.

A worker applies a batch's result before the store confirms it and takes it back when the
store refuses it (app/worker/pipeline.py). Whatever the result did (created, updated,
realized, expired or merged clusters), after ``restore`` the engine must decide the next
batches, run its timers and merge exactly as an engine that never saw it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from engine_support import make_config, scene
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine import Engine, Observation, StepResult


def shifted(observations: list[Observation], by: int) -> list[Observation]:
    """The same observations later in event time, under other keys."""
    return [replace(o, time=o.time + by, key=f"{o.key}+{by}") for o in observations]


def summary(result: StepResult) -> tuple:
    """What a step decided and emitted, comparable."""
    return (
        [(d.cluster_key, d.created) for d in result.decisions],
        [(e.event_id, e.type.value, e.time) for e in result.events],
        sorted((c.key, c.version, c.state.tobytes()) for c in result.upserts),
        sorted(result.deletions),
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    threshold=st.floats(0.3, 0.95),
    retention=st.sampled_from([0, 15, 60]),
    merge=st.booleans(),
    detour_kind=st.sampled_from(["batch", "advance", "merge"]),
)
def test_a_result_taken_back_leaves_the_engine_as_it_was(
    seed: int, threshold: float, retention: int, merge: bool, detour_kind: str
) -> None:
    clustering: dict[str, object] = {"cluster_realization": {"num_samples": 2}}
    if merge:
        clustering["cluster_merging"] = {"initial_threshold": 0.9, "threshold_discount_rate": 0.5,
                                         "min_threshold": 0.6, "time_interval_ms": 10}
    config = make_config(threshold, streams=("a", "b"), retention_ms=retention, **clustering)
    observations = scene(seed, 90, centres=6, noise=0.4)
    before, detour, after = observations[:40], observations[40:60], observations[60:]
    engine, twin = Engine(config), Engine(config)
    for start in range(0, len(before), 16):
        engine.step(before[start : start + 16])
        twin.step(before[start : start + 16])

    if detour_kind == "batch":
        result = engine.process(detour)
    elif detour_kind == "advance":
        result = engine.advance(200)
    else:
        result = engine.merge(45)
    checkpoint = engine.checkpoint(result)
    engine.apply(result)
    engine.restore(checkpoint)

    assert _same_clusters(engine, twin)
    assert engine.watermark == twin.watermark
    assert engine.merge_dirty == twin.merge_dirty
    for part in (after[:10], shifted(after[10:], 40)):
        assert summary(engine.step(part)) == summary(twin.step(part))
    assert summary(engine.advance(140)) == summary(twin.advance(140))
    if merge:
        assert summary(engine.merge(150)) == summary(twin.merge(150))
    assert _same_clusters(engine, twin)


def _same_clusters(a: Engine, b: Engine) -> bool:
    """Same keys, same fields, states equal to the bit, the same index entries."""
    assert a.clusters.keys() == b.clusters.keys()
    for key, cluster in a.clusters.items():
        other = b.clusters[key]
        assert np.array_equal(cluster.unit, other.unit), key
        assert replace(cluster, unit=None) == replace(other, unit=None), key
    assert sorted(a.index.key_at(s) for s in range(len(a.index))) == sorted(a.clusters)
    return True
