"""Speed against agreement at 1M clusters: one load, several nprobe and candidate settings.

``million.py`` steps an approximate and an exact engine in lockstep for one setting, which
takes minutes of loading per setting. Here both are loaded once (the same clusters and
observations as ``million.py``), the exact engine's decisions are computed once, and the
approximate index is then re-probed (``FaissIndex.probe``, no rebuild) for each setting. The
decisions come from ``Engine.process`` on the loaded state, so ``Engine.apply`` (index
re-insertions, bookkeeping) is left out of the rates::

    .venv/bin/python benchmarks/sweep.py                       # 1M clusters, ivfpq, ~5 min
    .venv/bin/python benchmarks/sweep.py --clusters 200000 --nprobe 8,16 --candidates 64 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from engine import agreement, faiss_threads, log, threads_label
from million import load_bench, make_centres, make_clusters, make_observations

from app.engine import Decision, Engine, Observation
from app.threads import single_threaded_numpy_blas


def decide(engine: Engine, batches: Sequence[list[Observation]]) -> list[Decision]:
    """Every batch's decisions on the engine's current state (nothing applied)."""
    return [d for batch in batches for d in engine.process(batch).decisions]


def sweep(n: int, kind: str, nprobes: Sequence[int], candidates: Sequence[int],
          observations: int, batch: int, threads: Sequence[int]) -> dict[str, Any]:
    """The report: one row per (nprobe, candidates, threads)."""
    rng = np.random.default_rng(n)
    centres = make_centres(rng, n, "spectrum")
    stream = make_observations(centres, rng, observations, "spectrum")
    clusters = make_clusters(centres, rng)
    approx, _ = load_bench(kind, clusters)
    exact, _ = load_bench("exact", clusters)
    del clusters
    batches = [stream[i : i + batch] for i in range(0, len(stream), batch)]
    log(f"sweep: exact decisions for {len(stream):,} observations")
    with faiss_threads(0):
        reference = decide(exact.engine, batches)
    index = approx.engine.index
    rows = []
    for nprobe in nprobes:
        for depth in candidates:
            index.probe(nprobe=nprobe, candidates=depth)
            for setting in threads:
                with faiss_threads(setting):
                    decide(approx.engine, batches[:1])  # warm
                    began = time.perf_counter()
                    decisions = decide(approx.engine, batches)
                    seconds = time.perf_counter() - began
                rows.append({
                    "nprobe": nprobe, "candidates": depth, "faiss_threads": threads_label(setting),
                    "vectors_per_second": round(len(stream) / seconds),
                    **agreement(decisions, reference),
                })
                log(f"sweep: {rows[-1]}")
    return {"clusters": n, "kind": kind, "observations": len(stream), "batch": batch,
            "nlist": getattr(index, "nlist", None), "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the sweep, print the rows (or one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=1_000_000)
    parser.add_argument("--kind", default="ivfpq", choices=("ivf", "ivfpq"))
    parser.add_argument("--nprobe", default="8,12,16,24,32", help="comma-separated")
    parser.add_argument("--candidates", default="32,64", help="comma-separated")
    parser.add_argument("--observations", type=int, default=8_192)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    single_threaded_numpy_blas()
    report = sweep(args.clusters, args.kind, [int(v) for v in args.nprobe.split(",")],
                   [int(v) for v in args.candidates.split(",")], args.observations,
                   args.batch, threads=(0, 1))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['clusters']:,} clusters, {report['kind']}, nlist {report['nlist']}")
    print("nprobe  candidates      threads  vectors/s  agreement")
    for row in report["rows"]:
        print(f"{row['nprobe']:>6}  {row['candidates']:>10}  {row['faiss_threads']:>11}"
              f"  {row['vectors_per_second']:>9,}  {row['agreement']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
