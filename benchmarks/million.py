"""The 1M-cluster section of ``benchmarks/engine.py``: an approximate index against exact search.

An engine with an approximate index (``ivf`` by default, or ``ivfpq``/``hnsw``: exact re-rank in
all) and an exact engine are loaded with the same clusters, in chunks as a worker's bootstrap
loads them, and step the same batches in lockstep. The figures are the approximate engine's
vectors/s, the share of decisions equal to exact search (same cluster, same new/update outcome),
load time, and memory per cluster: the index's own accounting and the process's RSS growth.

Identity centres follow one of two models:

- ``spectrum`` (default): Gaussian with eigenvalues falling as 1/i, normalised. Different people
  then have a mean |cosine| of about 0.13, close to the 0.14 of the (centred) identity means of
  the real face descriptors in ``shared/data/lfw_dev.npz``: real embeddings are not isotropic.
- ``random``: isotropic unit vectors (``app.offline.synth``'s model), near-orthogonal, which gives a
  coarse quantizer nothing to work with: the worst case for IVF.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from engine import (
    DIM,
    NEW_FRACTION,
    OBS_COSINE,
    SEARCH_K,
    START_MS,
    STREAMS,
    THRESHOLD,
    Bench,
    StageTimer,
    agreement,
    log,
    progress,
    threads_label,
    timed,
    unit_rows,
)

from app.config import ClusteringConfig
from app.engine import Cluster, ClusterId, Engine, Observation, rules
from app.index import make_index

MODELS = ("spectrum", "random")
LOAD_CHUNK = 100_000  # clusters per Engine.load call, as a bootstrap would hand them over
TARGET_VPS = 5_000
TARGET_AGREEMENT = 0.995


def rss_bytes() -> int:
    """Resident memory of this process."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def draw(rng: np.random.Generator, count: int, model: str) -> np.ndarray:
    """``count`` unit identity centres of ``model``."""
    x = rng.standard_normal((count, DIM), dtype=np.float32)
    if model == "spectrum":
        x *= (np.arange(1, DIM + 1, dtype=np.float32) ** -0.5)[None, :]
    return unit_rows(x)


def make_centres(rng: np.random.Generator, n: int, model: str) -> np.ndarray:
    """``n`` centres, drawn in chunks so the float64 temporaries stay small."""
    centres = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, LOAD_CHUNK):
        hi = min(n, lo + LOAD_CHUNK)
        centres[lo:hi] = draw(rng, hi - lo, model)
    return centres


def make_clusters(centres: np.ndarray, rng: np.random.Generator) -> list[Cluster]:
    """Clusters of 1 to 20 observations (a SIMPLE_AVERAGE sum) whose units view ``centres``."""
    return [c for page in cluster_pages(centres, rng) for c in page]


def cluster_pages(centres: np.ndarray, rng: np.random.Generator) -> Iterator[list[Cluster]]:
    """``make_clusters`` a page of ``LOAD_CHUNK`` at a time, as a worker reads the store.

    The rows are normalised in place, a chunk at a time, so the units cost no memory beyond the
    array. A page's values are made only when it is asked for, so a loader that drops each page
    after loading it never holds them all.
    """
    counts = rng.integers(1, 21, len(centres))
    norms = np.empty(len(centres), dtype=np.float64)
    for lo in range(0, len(centres), 65_536):
        hi = min(len(centres), lo + 65_536)
        sums = centres[lo:hi] * counts[lo:hi, None].astype(np.float32)
        centres[lo:hi], norms[lo:hi] = rules.normalized(sums)
    for lo in range(0, len(centres), LOAD_CHUNK):
        page = []
        for i in range(lo, min(len(centres), lo + LOAD_CHUNK)):
            stream = STREAMS[i % len(STREAMS)]
            page.append(Cluster(
                id=ClusterId(START_MS, f"pre{i}", stream), unit=centres[i], norm=float(norms[i]),
                num_observations=int(counts[i]), realized=True, first_time=START_MS,
                last_time=START_MS, streams=(stream,), retention_ms=0, version=1, pending=0,
                pending_since=START_MS, last_emit_time=START_MS, emitted=True,
            ))
        yield page


def make_observations(
    centres: np.ndarray, rng: np.random.Generator, count: int, model: str
) -> list[Observation]:
    """Re-sightings at cosine ``OBS_COSINE`` to a centre, and ``NEW_FRACTION`` new people."""
    who = rng.integers(0, len(centres), count)
    noise_sd = np.float32(np.sqrt(1.0 / OBS_COSINE**2 - 1.0) / np.sqrt(DIM))
    vectors = unit_rows(centres[who]) + noise_sd * rng.standard_normal((count, DIM), np.float32)
    fresh = rng.random(count) < NEW_FRACTION
    vectors[fresh] = draw(rng, int(fresh.sum()), model)
    return [
        Observation(vectors[row], STREAMS[row % len(STREAMS)], f"o{row}", START_MS + row + 1)
        for row in range(count)
    ]


def load_bench(kind: str, clusters: list[Cluster], **options: Any) -> tuple[Bench, int]:
    """An engine of ``kind`` loaded chunk by chunk; returns it and the RSS it added."""
    pages = (clusters[lo : lo + LOAD_CHUNK] for lo in range(0, len(clusters), LOAD_CHUNK))
    return load_pages(kind, pages, len(clusters), **options)


def load_pages(
    kind: str, pages: Iterable[Sequence[Cluster]], count: int, **options: Any
) -> tuple[Bench, int]:
    """``load_bench`` from ``count`` clusters in pages, loaded as a worker bootstraps."""
    config = ClusteringConfig.for_threshold(THRESHOLD, STREAMS)
    index = make_index(kind, "cpu", **options)
    engine = Engine(config, index, search_k=SEARCH_K)
    before = rss_bytes()
    began = time.perf_counter()
    with progress(count, f"load {kind}") as bar, engine.loading(count):
        for page in pages:
            engine.load(page)
            bar.update(len(page))
    seconds = time.perf_counter() - began
    grown = rss_bytes() - before
    log(f"million: {kind} loaded {count:,} clusters in {seconds:.1f} s,"
        f" RSS +{grown / 2**30:.2f} GiB")
    approximate = getattr(index, "_ann", None) is not None
    return Bench(kind, engine, StageTimer(index), seconds, approximate), grown


def million(
    n: int, observations: int, batch: int, model: str, threads: tuple[int, ...],
    kind: str = "ivf", **options: Any,
) -> dict[str, Any]:
    """Load ``n`` clusters into an approximate and an exact engine, step both, compare decisions.

    ``options`` go to the approximate index (``nprobe``, ``candidates``; None: its default).
    """
    rng = np.random.default_rng(n)
    log(f"million: {n:,} {model} centres, d={DIM}")
    centres = make_centres(rng, n, model)
    stream = make_observations(centres, rng, observations, model)
    clusters = make_clusters(centres, rng)
    approx, approx_rss = load_bench(kind, clusters, **options)
    exact, exact_rss = load_bench("exact", clusters)
    del clusters
    # Python's cyclic GC walks every tracked object in a full pass: the stall a worker this size
    # takes each time its old generation has grown by a quarter (both engines share the clusters)
    tracked = len(gc.get_objects())
    gc_seconds = timed(gc.collect)
    for bench in (approx, exact):
        for setting in threads:
            bench.warm(stream[:batch], setting)
    with progress(len(stream), f"step n={n:,}") as bar:
        for number, start in enumerate(range(0, len(stream), batch)):
            chunk = stream[start : start + batch]
            for bench in (approx, exact):
                bench.step(chunk, threads[number % len(threads)])
            bar.update(len(chunk))
    index = approx.engine.index
    rows = [_row(bench, setting) for bench in (approx, exact) for setting in bench.tally]
    agree = agreement(approx.decisions, exact.decisions)
    best = max(r["vectors_per_second"] for r in rows if r["kind"] == kind)
    report = {
        "clusters": n,
        "model": model,
        "kind": kind,
        "observations": observations,
        "batch": batch,
        "nprobe": index.nprobe,
        "candidates": index.candidates,
        "nlist": index.nlist,
        "approx_load_seconds": round(approx.load_seconds, 1),
        "exact_load_seconds": round(exact.load_seconds, 1),
        "approx_index_bytes_per_cluster": round(index.memory_bytes() / n),
        "exact_index_bytes_per_cluster": round(exact.engine.index.memory_bytes() / n),
        "approx_rss_bytes_per_cluster": round(approx_rss / n),
        "exact_rss_bytes_per_cluster": round(exact_rss / n),
        "gc_tracked_objects": tracked,
        "gc_full_collection_ms": round(gc_seconds * 1000, 1),
        **agree,
        "rows": rows,
        "approx_vps_best": best,
        "vps_met": best >= TARGET_VPS,
        "agreement_met": agree["agreement"] >= TARGET_AGREEMENT,
    }
    log(f"million: {kind} {best:,.0f} vec/s, agreement {agree['agreement']:.2%},"
        f" {report['approx_index_bytes_per_cluster']:,} index bytes per cluster")
    return report


def _row(bench: Bench, setting: int) -> dict[str, Any]:
    tally = bench.tally[setting]
    return {
        "kind": bench.kind,
        "faiss_threads": threads_label(setting),
        "vectors": int(tally["vectors"]),
        "vectors_per_second": round(tally["vectors"] / tally["seconds"], 1),
        "us_per_vector": round(1e6 * tally["seconds"] / tally["vectors"], 1),
        "search_fraction": round(tally["search"] / tally["seconds"], 3),
        "upsert_fraction": round(tally["upsert"] / tally["seconds"], 3),
        "created_fraction": round(tally["created"] / tally["vectors"], 3),
    }


def render(report: dict[str, Any]) -> str:
    """The section as text."""
    head = {k: v for k, v in report.items() if k != "rows"}
    lines = [f"5. {report['clusters']:,} clusters ({report['model']} centres),"
             f" {report['kind']} vs exact"]
    lines += [f"  {k}: {v}" for k, v in head.items()]
    lines += [f"  {r['kind']:>5} threads {r['faiss_threads']:>11}: {r['vectors_per_second']:>9,.0f}"
              f" vec/s, search {r['search_fraction']:.0%}, upsert {r['upsert_fraction']:.0%}"
              for r in report["rows"]]
    return "\n".join(lines)

