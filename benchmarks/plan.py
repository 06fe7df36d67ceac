"""Planned batches against one observation at a time: the engine's cost outside its search.

The engine decides a batch with array operations (``app/engine/plan.py``) unless its rules or
its last plan say otherwise; ``Engine(planned=False)`` decides every observation in turn. Both
give the same clusters. This runs the same stream through three engines, in the same minutes,
and prints microseconds per vector outside ``index.search`` (CPU time of this thread: FAISS and
numpy run on it alone) and the share of batches that were planned:

* ``planned``: the engine as shipped (plans, and pauses planning after a costly plan);
* ``always planned``: every batch planned, however many rounds it takes;
* ``one at a time``: ``planned=False``.

Two scenes, each at ``--clusters`` clusters loaded first (d = 512, exact index, batch 512):

* ``re-sightings``: the million section's clusters and observations, 5 % of them new people,
  so a batch rarely holds the same person twice;
* ``walks``: people seen in runs of 4 to 16 consecutive frames (a tracker-less camera at a few
  frames per second), three cameras interleaved, so a batch holds each person several times.

    .venv/bin/python benchmarks/plan.py [--clusters 10000] [--observations 8192] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from engine import DIM, SEARCH_K, START_MS, STREAMS, THRESHOLD, log
from million import make_centres, make_clusters, make_observations

from app.config import ClusteringConfig
from app.engine import Cluster, Engine, Observation
from app.engine import engine as engine_module
from app.index.faiss_index import FaissIndex
from app.index.faiss_lib import faiss
from app.threads import single_threaded_numpy_blas

MODES = ("planned", "always planned", "one at a time")
BATCH = 512
MODEL = "spectrum"


def resightings(
    rng: np.random.Generator, clusters: int, count: int
) -> tuple[list[Cluster], list[Observation]]:
    """The million section's workload: loaded clusters and their re-sightings."""
    centres = make_centres(rng, clusters, MODEL)
    observations = make_observations(centres, rng, count, MODEL)
    return make_clusters(centres, rng), observations


def walks(
    rng: np.random.Generator, clusters: int, count: int
) -> tuple[list[Cluster], list[Observation]]:
    """Loaded clusters, then walks of consecutive frames of people old and new."""
    centres = make_centres(rng, clusters, MODEL)
    loaded = make_clusters(centres.copy(), rng)
    people = np.concatenate([centres, make_centres(rng, clusters // 4, MODEL)])
    noise = np.float32(0.7 / np.sqrt(DIM))
    observations: list[Observation] = []
    walk = 0
    while len(observations) < count:
        who, frames = int(rng.integers(0, len(people))), int(rng.integers(4, 17))
        stream = STREAMS[walk % 3]
        for frame in range(frames):
            vector = people[who] + noise * rng.standard_normal(DIM, dtype=np.float32)
            time_ms = START_MS + len(observations)
            observations.append(Observation(vector, stream, f"w{walk}f{frame}", time_ms))
        walk += 1
    return loaded, observations[:count]


SCENES: dict[str, Callable[..., tuple[list[Cluster], list[Observation]]]] = {
    "re-sightings": resightings,
    "walks": walks,
}


def run(mode: str, clusters: list[Cluster], stream: list[Observation]) -> dict[str, Any]:
    """One engine through the stream: µs per vector outside search, planned share, choices."""
    config = ClusteringConfig.for_threshold(THRESHOLD, STREAMS)
    index = FaissIndex("exact", "cpu")
    pause = engine_module.UNPLANNED_BATCHES
    if mode == "always planned":
        engine_module.UNPLANNED_BATCHES = 0
    engine = Engine(config, index, search_k=SEARCH_K, planned=mode != "one at a time")
    engine.load(clusters)
    searched = [0.0]
    search = index.search

    def timed_search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        began = time.thread_time()
        try:
            return search(queries, k)
        finally:
            searched[0] += time.thread_time() - began

    index.search = timed_search  # type: ignore[method-assign]
    plans = [0]
    plan = engine._plan

    def counted(*args: Any) -> Any:
        found = plan(*args)
        plans[0] += found is not None
        return found

    engine._plan = counted  # type: ignore[method-assign]
    keys: list[str] = []
    began = time.thread_time()
    try:
        for start in range(0, len(stream), BATCH):
            result = engine.step(stream[start : start + BATCH])
            keys += [d.cluster_key for d in result.decisions]
    finally:
        engine_module.UNPLANNED_BATCHES = pause
    seconds = time.thread_time() - began
    batches = -(-len(stream) // BATCH)
    return {
        "outside_us_per_vector": round(1e6 * (seconds - searched[0]) / len(stream), 1),
        "search_us_per_vector": round(1e6 * searched[0] / len(stream), 1),
        "planned_batches": round(plans[0] / batches, 3),
        "clusters_after": len(engine.clusters),
        "keys": keys,
    }


def measure(clusters: int, observations: int, repeats: int) -> list[dict[str, Any]]:
    """Every scene through every mode, ``repeats`` times in turn; the best time per mode."""
    rows = []
    for scene, make in SCENES.items():
        loaded, stream = make(np.random.default_rng(clusters), clusters, observations)
        best: dict[str, dict[str, Any]] = {}
        for repeat in range(repeats):
            for mode in MODES:
                log(f"plan: {scene}, {mode}, round {repeat + 1} of {repeats}")
                figures = run(mode, loaded, stream)
                kept = best.get(mode)
                if kept is None or figures["outside_us_per_vector"] < kept["outside_us_per_vector"]:
                    best[mode] = figures
        reference = best["one at a time"]
        for mode in MODES:
            figures = best[mode]
            rows.append({
                "scene": scene,
                "mode": mode,
                **{k: v for k, v in figures.items() if k != "keys"},
                "ratio_to_one_at_a_time": round(
                    figures["outside_us_per_vector"] / reference["outside_us_per_vector"], 2
                ),
                "same_choices": figures["keys"] == reference["keys"],
            })
    return rows


def render(rows: Sequence[dict[str, Any]], clusters: int) -> str:
    """The table, as text."""
    lines = [
        f"Planned batches against one at a time ({clusters:,} clusters, d={DIM}, batch {BATCH},"
        " exact index, one thread)",
        f"{'scene':<13} {'mode':<15} {'outside':>8} {'search':>8} {'ratio':>6} {'planned':>8}"
        f" {'same':>5}",
    ]
    for row in rows:
        lines.append(
            f"{row['scene']:<13} {row['mode']:<15} {row['outside_us_per_vector']:>8}"
            f" {row['search_us_per_vector']:>8} {row['ratio_to_one_at_a_time']:>6}"
            f" {row['planned_batches']:>8.0%} {'yes' if row['same_choices'] else 'NO':>5}"
        )
    lines.append("outside/search: µs per vector; ratio: outside, to one at a time in this run")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both scenes; exit 1 if any mode chose differently from one at a time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10_000, help="clusters loaded first")
    parser.add_argument("--observations", type=int, default=8_192, help="vectors per scene")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode, best kept")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    single_threaded_numpy_blas()
    faiss.omp_set_num_threads(1)
    rows = measure(args.clusters, args.observations, args.repeats)
    if args.json:
        print(json.dumps({"clusters": args.clusters, "rows": rows}, indent=2))
    else:
        print(render(rows, args.clusters))
    return 0 if all(row["same_choices"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
