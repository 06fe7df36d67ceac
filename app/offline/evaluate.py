"""Offline evaluation: cluster a labelled file with the engine, in order, and score it.

The same engine and store contract as the workers, with event time driving the timers (merge
passes every ``time_interval_ms``, realization by time, retention), so an offline run predicts
what the live pipeline will do with the same input in the same order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.config import ClusteringConfig
from app.engine import Engine, Observation, StepResult
from app.offline.quality import score_all
from app.offline.synth import Scene
from app.store.base import Commit, StateStore


@dataclass(frozen=True)
class Labelled:
    """A scene as the engine sees it: observations in order, and the true labels."""

    observations: list[Observation]
    labels: np.ndarray


def observations_of(scene: Scene) -> list[Observation]:
    """One observation per row; keys are ``<time>_<row>`` so every row is unique.

    Rows carry their track id when the scene has tracks (``k``); the engine uses it only for
    streams whose config links tracks.
    """
    times = scene.t.tolist()
    streams = [str(s) for s in scene.s.tolist()]
    tracks = [""] * len(times) if scene.k is None else [str(k) for k in scene.k.tolist()]
    return [
        Observation(scene.X[i], streams[i], f"{times[i]}_{i}", times[i], track=tracks[i])
        for i in range(len(times))
    ]


class Labeller:
    """Follows each observation to the cluster that holds it now, through merges."""

    def __init__(self) -> None:
        self.assigned: list[str] = []
        self.parent: dict[str, str] = {}

    def take(self, result: StepResult) -> None:
        """Record a step's decisions and merges."""
        self.assigned.extend(d.cluster_key for d in result.decisions)
        for absorbed, survivor in result.merged:
            self.parent[absorbed] = survivor

    def final(self) -> list[str]:
        """Each observation's final cluster key."""
        return [self._root(key) for key in self.assigned]

    def _root(self, key: str) -> str:
        while key in self.parent:
            key = self.parent[key]
        return key


async def run_engine(
    engine: Engine,
    observations: list[Observation],
    store: StateStore,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> Labeller:
    """Feed the observations in batches, with event-time timers, storing every step."""
    labeller = Labeller()
    merging = engine.config.merging
    next_merge = None
    for start in range(0, len(observations), batch_size):
        batch = observations[start : start + batch_size]
        await _store_and_apply(engine, store, engine.process(batch), labeller)
        await _store_and_apply(engine, store, engine.advance(engine.watermark), labeller)
        if merging is not None:
            next_merge = next_merge or engine.watermark + merging.time_interval_ms
            if engine.watermark >= next_merge:
                await _store_and_apply(engine, store, engine.merge(), labeller)
                next_merge = engine.watermark + merging.time_interval_ms
        if progress is not None:
            progress(len(batch))
    if merging is not None:
        await _store_and_apply(engine, store, engine.merge(), labeller)
    return labeller


async def _store_and_apply(
    engine: Engine, store: StateStore, result: StepResult, labeller: Labeller
) -> None:
    if result.upserts or result.deletions:
        commit = Commit(
            expected=result.expected, upserts=result.upserts, deletions=result.deletions
        )
        await store.commit(commit)
    engine.apply(result)
    labeller.take(result)


def predicted_labels(engine: Engine, labeller: Labeller, realized_only: bool) -> list[str]:
    """Final cluster of each observation; with ``realized_only``, others are singletons."""
    labels = labeller.final()
    if not realized_only:
        return labels
    out = []
    for i, key in enumerate(labels):
        cluster = engine.clusters.get(key)
        out.append(key if cluster is not None and cluster.realized else f"#single{i}")
    return out


def evaluate(
    scene: Scene,
    config: ClusteringConfig,
    engine: Engine,
    store: StateStore,
    *,
    batch_size: int = 512,
    realized_only: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float | int]:
    """Cluster ``scene`` and score it: the figures ``fvc evaluate`` prints."""
    observations = observations_of(scene)

    async def go() -> Labeller:
        await store.start()
        try:
            return await run_engine(engine, observations, store, batch_size, progress)
        finally:
            await store.close()

    began = time.perf_counter()
    labeller = asyncio.run(go())
    seconds = time.perf_counter() - began
    scores = score_all(scene.y, predicted_labels(engine, labeller, realized_only))
    return {
        "n": len(observations),
        **scores,
        "seconds": round(seconds, 4),
        "vectors_per_second": round(len(observations) / seconds, 1) if seconds else 0.0,
    }
