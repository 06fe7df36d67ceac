"""The overhead section of ``benchmarks/engine.py``: what the engine costs beyond its search.

Search is a matrix product that faster hardware (a GPU) speeds up; the rest of a step (deciding
each observation, building the new cluster states, the index upsert, deadlines) is the engine's
own work and bounds what any index can give. For each cluster count an exact engine is
loaded with the same kind of clusters as the million section (face-like ``spectrum`` centres,
SIMPLE_AVERAGE states of 1 to 20 observations) and steps batches of re-sightings; the figure
is microseconds per vector outside ``search``. At the largest count, the cost of holding that
many clusters in Python: objects the cyclic garbage collector tracks, one full collection's
pause (taken whenever the old generation grew by a quarter) before and after the worker's
``app.heap.settle``, and resident memory per cluster.

Targets: at most 10 us per vector outside search at 10k and at 1M clusters; a full collection
under 50 ms at 1M (settled); at most 2.5 KB per cluster at d=512.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
from engine import DIM, log, progress, timed
from million import cluster_pages, load_pages, make_centres, make_observations, rss_bytes

from app import heap

OVERHEAD_TARGET_US = 10.0
GC_TARGET_MS = 50.0
BYTES_TARGET = 2_500
MODEL = "spectrum"


def overhead(
    cluster_counts: tuple[int, ...], observations: int, batch: int
) -> dict[str, Any]:
    """Engine microseconds per vector outside search per cluster count, and the cost of size."""
    rows = []
    size: dict[str, Any] = {}
    for n in cluster_counts:
        rng = np.random.default_rng(n)
        log(f"overhead: {n:,} {MODEL} centres, d={DIM}")
        before = rss_bytes()  # counted once the inputs are freed: what the engine holds
        centres = make_centres(rng, n, MODEL)
        stream = make_observations(centres, rng, observations, MODEL)
        bench, _ = load_pages("exact", cluster_pages(centres, rng), n)
        del centres  # the engine holds the clusters now, as rows
        gc.collect()
        grown = rss_bytes() - before
        if n == max(cluster_counts):
            tracked = len(gc.get_objects())
            size = {
                "clusters": n,
                "gc_tracked_objects": tracked,
                "gc_tracked_per_cluster": round(tracked / n, 2),
                "gc_full_collection_ms": round(timed(gc.collect) * 1000, 1),
                "gc_settle_ms": round(heap.settle() * 1000, 1),  # what a worker does at load
                "gc_settled_collection_ms": round(timed(gc.collect) * 1000, 1),
                "rss_bytes_per_cluster": round(grown / n),
                "index_bytes_per_cluster": round(bench.engine.index.memory_bytes() / n),
            }
        bench.warm(stream[:batch], 1)
        with progress(len(stream), f"overhead n={n:,}") as bar:
            for start in range(0, len(stream), batch):
                chunk = stream[start : start + batch]
                bench.step(chunk, 1)
                bar.update(len(chunk))
        tally = bench.tally[1]
        outside = tally["seconds"] - tally["search"]
        rows.append({
            "clusters": n,
            "batch": batch,
            "observations": int(tally["vectors"]),
            "us_per_vector": round(1e6 * tally["seconds"] / tally["vectors"], 1),
            "search_us_per_vector": round(1e6 * tally["search"] / tally["vectors"], 1),
            "outside_us_per_vector": round(1e6 * outside / tally["vectors"], 1),
            "upsert_us_per_vector": round(1e6 * tally["upsert"] / tally["vectors"], 1),
            "created_fraction": round(tally["created"] / tally["vectors"], 3),
        })
        log(f"overhead n={n:,}: {rows[-1]['outside_us_per_vector']} us per vector outside"
            f" search ({rows[-1]['search_us_per_vector']} in it)")
        del bench
        gc.collect()
    worst = max(r["outside_us_per_vector"] for r in rows)
    return {
        "model": MODEL,
        "rows": rows,
        **size,
        "outside_target_us": OVERHEAD_TARGET_US,
        "outside_met": worst <= OVERHEAD_TARGET_US,
        "gc_target_ms": GC_TARGET_MS,
        "gc_met": size.get("gc_settled_collection_ms", 0.0) < GC_TARGET_MS,
        "bytes_target": BYTES_TARGET,
        "bytes_met": size.get("rss_bytes_per_cluster", 0) <= BYTES_TARGET,
    }


def render(report: dict[str, Any]) -> str:
    """The overhead table and the size figures, as text."""
    lines = [
        f"Engine overhead (exact index, {report['model']} centres, d={DIM}, one FAISS thread)",
        f"{'clusters':>10} {'batch':>6} {'us/vec':>8} {'search':>8} {'outside':>8}"
        f" {'upsert':>8} {'new':>6}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['clusters']:>10,} {row['batch']:>6} {row['us_per_vector']:>8}"
            f" {row['search_us_per_vector']:>8} {row['outside_us_per_vector']:>8}"
            f" {row['upsert_us_per_vector']:>8} {row['created_fraction']:>6.1%}"
        )
    lines.append(
        f"outside search <= {report['outside_target_us']} us: "
        f"{'met' if report['outside_met'] else 'NOT met'}"
    )
    if "clusters" in report:
        lines += [
            f"at {report['clusters']:,} clusters: {report['gc_tracked_objects']:,} objects tracked"
            f" by the GC ({report['gc_tracked_per_cluster']} per cluster), a full collection"
            f" {report['gc_full_collection_ms']} ms; once settled as a worker settles its heap"
            f" (app/heap.py) {report['gc_settled_collection_ms']} ms (target <"
            f" {report['gc_target_ms']}: {'met' if report['gc_met'] else 'NOT met'})",
            f"resident memory {report['rss_bytes_per_cluster']:,} B per cluster, of which the"
            f" index {report['index_bytes_per_cluster']:,} (target <= {report['bytes_target']:,}:"
            f" {'met' if report['bytes_met'] else 'NOT met'})",
        ]
    return "\n".join(lines)
