r"""Candidate generation of approximate indexes against exact search, without the engine.

Loads ``--n`` identity centres (``million.py``'s models) into an index in bootstrap-sized
chunks, then searches 4,096 observations (re-sightings at cosine 0.8, 5 % new people) in
batches of 512 and reports, per nprobe x candidates: queries/s with FAISS's default threads and
one thread, and how often the index's top hit is exact search's where that one is a match
(similarity >= 0.5). "near" counts the queries whose best match is weak (0.5 to 0.65): new
people who resemble someone, where candidate ranking matters most. Run from the repository
root::

    .venv/bin/python benchmarks/candidates.py --n 1000000 --kind ivfpq --nprobe 16,32 \
        --candidates 64,128
    .venv/bin/python benchmarks/candidates.py --n 100000 --factory RR512,IVF1024,PQ64x4fsr

``--factory`` measures a bare FAISS index (inner product) instead: whether exact search's top
hit is among its first ``--candidates`` results, before any re-rank.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

from million import MODELS, make_centres, make_observations  # noqa: E402

from app.index import faiss_index  # noqa: E402
from app.index.faiss_lib import faiss  # noqa: E402

BATCH = 512
MATCH, NEAR = 0.5, 0.65
DEFAULT_THREADS = faiss.omp_get_max_threads()


def log(message: str) -> None:
    """One line on stdout, at once."""
    print(message, flush=True)


def workload(n: int, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Centres and unit observations, drawn as ``million.py`` draws them."""
    rng = np.random.default_rng(n)
    centres = make_centres(rng, n, model)
    queries = np.stack([o.vector for o in make_observations(centres, rng, 4096, model)])
    return centres, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def timed(search: Callable, queries: np.ndarray) -> tuple[float, np.ndarray]:
    """Queries/s of ``search`` over batches, and its results."""
    search(queries[:BATCH])  # warm
    began = time.perf_counter()
    found = [search(queries[lo : lo + BATCH]) for lo in range(0, len(queries), BATCH)]
    return len(queries) / (time.perf_counter() - began), np.concatenate(found)


def build_kind(kind: str, centres: np.ndarray, chunk: int) -> faiss_index.FaissIndex:
    """A ``FaissIndex`` loaded chunk by chunk, as a worker's bootstrap loads it."""
    index = faiss_index.FaissIndex(kind, "cpu")
    keys = [f"k{i}" for i in range(len(centres))]
    began = time.perf_counter()
    for lo in range(0, len(centres), chunk):
        index.upsert(keys[lo : lo + chunk], centres[lo : lo + chunk])
    log(f"{kind}: upsert of {len(centres):,} in chunks of {chunk:,}:"
        f" {time.perf_counter() - began:.1f} s, nlist {index.nlist},"
        f" {index.memory_bytes() / len(centres):,.0f} index bytes per cluster")
    return index


def build_factory(spec: str, centres: np.ndarray) -> faiss.Index:
    """A bare FAISS index trained on 40 vectors per list."""
    index = faiss.index_factory(centres.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    nlist = faiss.extract_index_ivf(index).nlist
    sample = np.random.default_rng(0).choice(len(centres), min(len(centres), 40 * nlist), False)
    began = time.perf_counter()
    index.train(centres[np.sort(sample)])
    index.add(centres)
    log(f"{spec}: train and add {time.perf_counter() - began:.1f} s")
    return index


def configure(index: object, nprobe: int, candidates: int) -> Callable:
    """Set nprobe and candidates; the search to time (its hits, to compare with exact's)."""
    if isinstance(index, faiss_index.FaissIndex):
        faiss.extract_index_ivf(index._ann).nprobe = nprobe
        index.candidates = candidates
        return lambda q: index.search(q, 1)[1]
    faiss.extract_index_ivf(index).nprobe = nprobe
    return lambda q: index.search(q, candidates)[1]


def measure(
    index: object, nprobe: int, candidates: int, queries: np.ndarray
) -> tuple[list[float], np.ndarray]:
    """Queries/s with FAISS's default threads and one thread, and the hits."""
    search = configure(index, nprobe, candidates)
    rates = []
    for threads in (DEFAULT_THREADS, 1):
        faiss.omp_set_num_threads(threads)
        rate, found = timed(search, queries)
        rates.append(rate)
    faiss.omp_set_num_threads(DEFAULT_THREADS)
    return rates, found


def main(argv: Sequence[str] | None = None) -> int:
    """Build once, then measure every nprobe x candidates."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="clusters (default 1,000,000)")
    parser.add_argument("--model", default="spectrum", choices=MODELS)
    parser.add_argument("--kind", default="ivfpq", choices=("ivf", "ivfpq"))
    parser.add_argument("--factory", metavar="SPEC", help="a bare FAISS index instead of --kind")
    parser.add_argument("--chunk", type=int, default=10_000, help="upsert chunk (default 10,000)")
    parser.add_argument("--lists-per-sqrt", type=float, metavar="F",
                        help="coarse lists per square root of the clusters (default: the kind's)")
    parser.add_argument("--nprobe", default="32", help="comma-separated (default 32)")
    parser.add_argument("--candidates", default="128", help="comma-separated (default 128)")
    args = parser.parse_args(argv)
    if args.lists_per_sqrt:
        faiss_index.LISTS_PER_SQRT[args.kind] = args.lists_per_sqrt
    centres, queries = workload(args.n, args.model)
    sims, best = faiss.knn(queries, centres, 1, metric=faiss.METRIC_INNER_PRODUCT)
    match, near = sims[:, 0] >= MATCH, (sims[:, 0] >= MATCH) & (sims[:, 0] < NEAR)
    log(f"{args.n:,} {args.model} centres: {match.mean():.2%} of queries have a match,"
        f" {near.sum()} of them near")
    if args.factory:
        index = build_factory(args.factory, centres)
    else:
        index = build_kind(args.kind, centres, args.chunk)
    del centres
    for nprobe in map(int, args.nprobe.split(",")):
        for candidates in map(int, args.candidates.split(",")):
            (default, single), found = measure(index, nprobe, candidates, queries)
            missed = match & ~(found == best).any(axis=1)
            log(f"  nprobe {nprobe:3} candidates {candidates:3}: {default:,.0f} / {single:,.0f}"
                f" queries/s (default / 1 thread); top hit = exact"
                f" {1 - missed.sum() / match.sum():.2%} (missed {missed.sum()},"
                f" near {(missed & near).sum()})")
    return 0

if __name__ == "__main__":
    sys.exit(main())
