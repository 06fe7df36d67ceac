"""Representative search on a GPU: exact and IVF at 1M clusters, batches of 1k-10k queries.

For each index kind on ``--device`` (``auto``: the GPU when FAISS sees one), the clusters'
representatives are loaded into the same ``FaissIndex`` the workers use, and batches of queries
are searched at each batch size; the figures are queries per second (best of ``--rounds``), load
seconds, and how often the decision each query would get (its best cluster when the similarity
reaches the threshold, else a new cluster) equals the decision of exact search on the CPU, which
is computed once on a sample of the queries. Run on a machine with a GPU::

    pip install -e ".[gpu]"     # faiss-gpu-cu12 in place of faiss-cpu
    python benchmarks/gpu.py --json

Without a GPU it runs on the CPU, which is how it is smoke-tested (small sizes). Identity
centres follow the ``spectrum`` model of ``million.py`` (real face embeddings are not
isotropic); queries are drawn as in ``benchmarks/engine.py`` (re-sightings of known people and
a share of new ones).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
from engine import DIM, NEW_FRACTION, OBS_COSINE, THRESHOLD, unit_rows  # sets up sys.path
from million import LOAD_CHUNK, draw, make_centres

from app.index import make_index
from app.index.faiss_index import resolve_device


def queries(rng: np.random.Generator, reps: np.ndarray, count: int) -> np.ndarray:
    """Re-sightings of known people and some new ones, as unit vectors."""
    noise = np.float32(np.sqrt(1.0 / OBS_COSINE**2 - 1.0) / np.sqrt(DIM))
    q = reps[rng.integers(0, len(reps), count)] + noise * rng.standard_normal(
        (count, DIM), dtype=np.float32)
    fresh = rng.random(count) < NEW_FRACTION
    q[fresh] = draw(rng, int(fresh.sum()), "spectrum")
    return unit_rows(q).astype(np.float32)


def decisions(index: Any, q: np.ndarray) -> np.ndarray:
    """Each query's best slot when it reaches the threshold, else -1 (a new cluster)."""
    sims, slots = index.search(q, 1)
    return np.where(sims[:, 0] >= THRESHOLD, slots[:, 0], -1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The figures: the CPU exact reference on the sample, then each kind on the device."""
    rng = np.random.default_rng(args.seed)
    reps = make_centres(rng, args.clusters, "spectrum")
    keys = [f"c{i}" for i in range(args.clusters)]
    biggest = max(args.batches)
    q = queries(rng, reps, biggest)
    sample = q[: args.sample]
    cpu = make_index("exact", "cpu")
    cpu.upsert(keys, reps)
    began = time.perf_counter()
    reference = decisions(cpu, sample)
    cpu_seconds = time.perf_counter() - began
    del cpu
    device = resolve_device(args.device)
    rows = []
    for kind in args.kinds:
        index = make_index(kind, device, nprobe=args.nprobe)
        began = time.perf_counter()
        with index.loading(args.clusters):
            for lo in range(0, args.clusters, LOAD_CHUNK):
                index.upsert(keys[lo : lo + LOAD_CHUNK], reps[lo : lo + LOAD_CHUNK])
        load = time.perf_counter() - began
        same = float(np.mean(decisions(index, sample) == reference))
        for batch in args.batches:
            best = min(_timed(index, q[:batch]) for _ in range(args.rounds))
            rows.append({"kind": kind, "device": device, "batch": batch,
                         "queries_per_second": round(batch / best, 1),
                         "agreement_with_cpu_exact": round(same, 5),
                         "load_seconds": round(load, 2)})
            print(f"[gpu] {kind} on {device}, batch {batch:,}: {batch / best:,.0f} queries/s, "
                  f"agreement {same:.4f}", file=sys.stderr)
    return {"clusters": args.clusters, "dim": DIM, "threshold": THRESHOLD,
            "sample": len(sample), "cpu_exact_seconds_for_sample": round(cpu_seconds, 2),
            "rows": rows}


def _timed(index: Any, q: np.ndarray) -> float:
    began = time.perf_counter()
    index.search(q, 1)
    return time.perf_counter() - began


def main() -> None:
    """Parse, measure every index kind and batch size, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, nargs="+", default=[1_000, 2_000, 5_000, 10_000])
    parser.add_argument("--kinds", nargs="+", default=["exact", "ivf"], choices=("exact", "ivf"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists probed (default 16)")
    parser.add_argument("--sample", type=int, default=2_000,
                        help="queries whose decisions are checked against CPU exact search")
    parser.add_argument("--rounds", type=int, default=3, help="timings per batch; best is kept")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report))
        return
    for row in report["rows"]:
        print(f"{row['kind']:>6} {row['device']:>4} batch {row['batch']:>6,}: "
              f"{row['queries_per_second']:>12,.0f} q/s, agreement "
              f"{row['agreement_with_cpu_exact']:.4f}, load {row['load_seconds']} s")


if __name__ == "__main__":
    main()
