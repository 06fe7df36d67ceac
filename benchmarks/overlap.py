"""A worker's pipeline with and without overlapped commits, against a real Redis, no Kafka.

``Pipeline.handle`` is what a worker runs per batch: decode, engine, encode, the atomic commit
(clusters, events, offsets) and apply. With ``overlap`` the next batch is decided while the
last one's commit is in flight (``FVC_OVERLAP_COMMITS``). This times both on the same records
in the same minutes, alternating, each in a throwaway namespace of the local Redis, without
Kafka's consumer and producer in the way: where Redis has a core of its own, the difference
is the store wait the overlap hides. Every run is checked to store every observation once.
Run from the repository root with the local stack up (``fvc local up``)::

    .venv/bin/python benchmarks/overlap.py                      # 10k clusters, 20k vectors
    .venv/bin/python benchmarks/overlap.py --clusters 1000 --vectors 4096 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

from app.codec.encode import encode_observation  # noqa: E402
from app.config import parse_config  # noqa: E402
from app.engine import Engine  # noqa: E402
from app.index import make_index  # noqa: E402
from app.index.faiss_lib import faiss  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.store import store_for  # noqa: E402
from app.worker.metrics import stage_histogram  # noqa: E402
from app.worker.pipeline import Pipeline, RawRecord  # noqa: E402

TOPIC = "bench.overlap"
STREAM = "camera_0"
SIGHTING_COSINE = 0.85  # each sighting against its person's centre


def log(message: str) -> None:
    """One progress line on stderr."""
    print(f"[overlap] {message}", file=sys.stderr, flush=True)


def config_dict() -> dict[str, Any]:
    """One stream, every cluster realized at once: each vector updates a cluster that emits."""
    stream = {"stream_id": STREAM, "topic": TOPIC,
              "fv_field_selector": {"feature_vector_path": "features"},
              "reg_stream_config": {"reg_threshold": 0.5}}
    return {"clustering_config": {"method": "SIMPLE_AVERAGE"}, "input_stream_configs": [stream]}


def make_records(clusters: int, vectors: int, dim: int, seed: int) -> list[RawRecord]:
    """One sighting of every person (registering them), then ``vectors`` re-sightings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.concatenate([np.arange(clusters), rng.integers(0, clusters, vectors)])
    spread = np.sqrt(1.0 / SIGHTING_COSINE**2 - 1.0) / np.sqrt(dim)
    x = centres[labels] + spread * rng.standard_normal((len(labels), dim)).astype(np.float32)
    return [
        RawRecord(TOPIC, 0, offset, f"k{offset}".encode(),
                  encode_observation(row, model_id="m", fmt="msgpack"), 1_000 + offset)
        for offset, row in enumerate(x.astype(np.float32))
    ]


async def one_run(
    settings: Settings, records: list[RawRecord], clusters: int, batch: int, overlap: bool
) -> dict[str, Any]:
    """Register the clusters, then time the re-sightings; the namespace is dropped after."""
    namespaced = Settings(**{**settings.model_dump(), "namespace": f"bench-{uuid.uuid4().hex}"})
    store = store_for(namespaced)
    await store.start()
    config = parse_config(config_dict())
    stages = stage_histogram()
    engine = Engine(config, make_index("exact", "cpu"))
    pipeline = Pipeline(engine, store, config, namespaced, stages, ordered=True, batch=True,
                        overlap=overlap)
    try:
        for start in range(0, clusters, batch):
            await pipeline.handle(records[start : min(start + batch, clusters)])
        await pipeline.settle()
        before = _stage_sums(stages)
        began, cpu = time.perf_counter(), time.process_time()
        for start in range(clusters, len(records), batch):
            await pipeline.handle(records[start : start + batch])
        await pipeline.settle()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        counted = sum(c.num_observations for c in engine.clusters.values())
        stored = sum([c.num_observations async for chunk in store.load_all() for c in chunk])
        if counted != len(records) or stored != len(records):
            message = f"{len(records)} records sent, {counted} held, {stored} stored"
            raise SystemExit(message)
        measured = len(records) - clusters
        after = _stage_sums(stages)
        per_vector = {k: round(1e6 * (after[k] - before.get(k, 0.0)) / measured, 1)
                      for k in after}
        return {"overlap": overlap, "vectors_per_second": round(measured / wall, 1),
                "cpu_us_per_vector": round(1e6 * cpu / measured, 1),
                "stage_us_per_vector": per_vector}
    finally:
        await store.clear()
        await store.close()


def _stage_sums(stages: Any) -> dict[str, float]:
    """Seconds spent so far in each stage of the histogram."""
    sums: dict[str, float] = {}
    for metric in stages.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                sums[sample.labels["stage"]] = sample.value
    return sums


def main(argv: list[str] | None = None) -> None:
    """Both modes in turn, ``--rounds`` times; a table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--vectors", type=int, default=20_000, help="timed re-sightings")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode, alternating")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    settings = Settings.from_env(dict(os.environ))
    faiss.omp_set_num_threads(settings.search_threads)  # as a worker does (FVC_SEARCH_THREADS)
    records = make_records(args.clusters, args.vectors, args.dim, seed=1)
    runs = []
    for round_no in range(args.rounds):
        for overlap in (False, True):
            log(f"round {round_no + 1}: overlap {'on' if overlap else 'off'}")
            runs.append(asyncio.run(one_run(settings, records, args.clusters, args.batch,
                                            overlap)))
    best = {mode: max(r["vectors_per_second"] for r in runs if r["overlap"] == mode)
            for mode in (False, True)}
    report = {"clusters": args.clusters, "vectors": args.vectors, "dim": args.dim,
              "batch": args.batch, "runs": runs,
              "overlap_to_serial_ratio": round(best[True] / best[False], 3)}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{'overlap':<8} {'vectors/s':>10} {'CPU us/vec':>11} {'store wait us/vec':>18}")
    for r in runs:
        store_wait = r["stage_us_per_vector"].get("store", 0.0)
        print(f"{'on' if r['overlap'] else 'off':<8} {r['vectors_per_second']:>10,.0f} "
              f"{r['cpu_us_per_vector']:>11} {store_wait:>18}")
    print(f"best on / best off: {report['overlap_to_serial_ratio']}")


if __name__ == "__main__":
    main()
