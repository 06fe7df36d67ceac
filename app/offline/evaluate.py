"""Offline evaluation: cluster a labelled file with the engine, in order, and score it.

The same engine and store contract as the workers, with event time driving the timers (merge
passes every ``time_interval_ms``, realization by time, retention), so an offline run predicts
what the live pipeline will do with the same input in the same order.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from app.config import ClusteringConfig
from app.engine import Engine, Observation, StepResult, window
from app.engine.clock import ORDERED, EventClock
from app.offline.produce import detection_keys
from app.offline.quality import score_all
from app.offline.synth import Scene
from app.store.base import Commit, StateStore


@dataclass(frozen=True)
class Labelled:
    """A scene as the engine sees it: observations in order, and the true labels."""

    observations: list[Observation]
    labels: np.ndarray


def observations_of(scene: Scene) -> list[Observation]:
    """One observation per row, keyed as ``fvc produce`` keys the record it sends for the row.

    ``<time>_<index>`` (app/offline/produce.py), so cluster ids here are the live run's.
    Rows carry their track id when the scene has tracks (``k``); the engine uses it only for
    streams whose config links tracks.
    """
    times = scene.t.tolist()
    streams = [str(s) for s in scene.s.tolist()]
    keys = detection_keys(streams, times)
    tracks = [""] * len(times) if scene.k is None else [str(k) for k in scene.k.tolist()]
    return [
        Observation(scene.X[i], streams[i], keys[i], times[i], track=tracks[i])
        for i in range(len(times))
    ]


def write_assignments(
    path: str | os.PathLike[str], observations: Sequence[Observation], clusters: Sequence[str]
) -> None:
    """One JSON object per observation, in file order: its stream, key and final cluster id.

    The same lines a live run's assignments topic gives once resolved through MERGE events.
    """
    with open(path, "wb") as out:
        for obs, cluster_id in zip(observations, clusters, strict=True):
            out.write(orjson.dumps({"stream": obs.stream_id, "key": obs.key,
                                    "cluster_id": cluster_id}))
            out.write(b"\n")


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


def event_order(observations: Sequence[Observation]) -> list[int]:
    """Indices of ``observations`` in event-time order: time, then stream, then file order.

    The order batch mode reads a recording in (app/worker/event_order.py), so both see the same
    sequence: a file already in time order keeps its order but for rows of one instant, which
    go by stream id.
    """
    return sorted(range(len(observations)), key=lambda i: (observations[i].time,
                                                              observations[i].stream_id, i))


async def run_engine(
    engine: Engine,
    observations: list[Observation],
    store: StateStore,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
    lateness_ms: int = 0,
) -> Labeller:
    """Feed the observations in batches, storing every step, with the pipeline's timers.

    The same event-time clock as a worker (app/engine/clock.py): a batch is cut where the
    watermark crosses a merge boundary and the pass runs there, so any batch size gives the
    same clusters; the run ends with realization and retention at the last watermark.
    """
    labeller = Labeller()
    merging = engine.config.merging
    clock = EventClock(
        None if merging is None else merging.time_interval_ms,
        lateness_ms=lateness_ms,
        ordered=True,
    )
    for batch in window.batches(observations, batch_size, engine.deferral_ms,
                                engine.max_window_size):
        times = [o.time for o in batch]
        done = 0
        while done < len(batch):
            scan = clock.scan([ORDERED] * (len(batch) - done), times[done:], 0)
            part = batch[done : done + scan.cut]
            if part:
                await _store_and_apply(engine, store, engine.process(part), labeller)
            clock.adopt(scan)
            done += scan.cut
            if scan.merge_at is not None:
                await _timers(engine, store, clock, scan.merge_at, labeller)
        if progress is not None:
            progress(len(batch))
    if clock.watermark is not None:
        await _timers(engine, store, clock, clock.watermark, labeller)
    return labeller


async def _timers(
    engine: Engine, store: StateStore, clock: EventClock, at: int, labeller: Labeller
) -> None:
    """What a worker's pipeline runs at watermark ``at``: realization, retention, merge."""
    await _store_and_apply(engine, store, engine.advance(at), labeller)
    if clock.merge_due(at):
        await _store_and_apply(engine, store, engine.merge(at), labeller)
        clock.merged(at)


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
    held = engine.clusters
    for i, key in enumerate(labels):
        out.append(key if key in held and held.row(key).realized else f"#single{i}")
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
    lateness_ms: int = 0,
    assignments: str | os.PathLike[str] | None = None,
) -> dict[str, float | int]:
    """Cluster ``scene`` and score it: the figures ``fvc evaluate`` prints.

    Rows are clustered in event-time order (``event_order``), as batch mode reads them;
    ``assignments`` names a JSONL file to write each row's final cluster to, in file order.
    """
    observations = observations_of(scene)
    order = event_order(observations)
    in_time = [observations[i] for i in order]

    async def go() -> Labeller:
        await store.start()
        try:
            return await run_engine(engine, in_time, store, batch_size, progress, lateness_ms)
        finally:
            await store.close()

    began = time.perf_counter()
    labeller = asyncio.run(go())
    seconds = time.perf_counter() - began
    labels = [""] * len(order)
    for label, row in zip(predicted_labels(engine, labeller, realized_only), order, strict=True):
        labels[row] = label
    if assignments is not None:
        final = [""] * len(order)
        for key, row in zip(labeller.final(), order, strict=True):
            final[row] = key
        write_assignments(assignments, observations, final)
    scores = score_all(scene.y, labels)
    return {
        "n": len(observations),
        **scores,
        "seconds": round(seconds, 4),
        "vectors_per_second": round(len(observations) / seconds, 1) if seconds else 0.0,
    }
