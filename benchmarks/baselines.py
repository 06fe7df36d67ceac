"""fvc's online engine next to two offline clustering baselines, on the same data in one run.

* all-pairs threshold graph + connected components (LUNA-style): every pair with cosine >= T
  is an edge, found block by block with one matrix product per block;
* kNN graph + connected components (seed-style): the top-k neighbours of every vector by FAISS
  (HNSW), edges kept when cosine >= T.

Both see the whole data set at once; fvc sees it once, in order. Prints vectors/s and B-cubed
quality of each, at each size.

    .venv/bin/python benchmarks/baselines.py [--sizes 10000 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from app.config import ClusteringConfig
from app.engine import Engine
from app.index import make_index
from app.index.faiss_lib import faiss
from app.offline.evaluate import evaluate
from app.offline.quality import bcubed
from app.offline.synth import Scene, make_scene
from app.store import MemoryStore

THRESHOLD = 0.5
KNN = 30
BLOCK = 4096


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def components(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected-component label of every vertex of an undirected edge list."""
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def all_pairs(x: np.ndarray, threshold: float) -> np.ndarray:
    """Labels from the graph of all pairs at or above ``threshold``."""
    rows, cols = [], []
    for start in range(0, len(x), BLOCK):
        sims = x[start : start + BLOCK] @ x.T
        r, c = np.nonzero(sims >= threshold)
        rows.append(r + start)
        cols.append(c)
    return components(len(x), np.concatenate(rows), np.concatenate(cols))


def knn_graph(x: np.ndarray, threshold: float, k: int = KNN) -> np.ndarray:
    """Labels from each vector's ``k`` nearest neighbours (HNSW) at or above ``threshold``."""
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = 64
    index.add(x)
    sims, ids = index.search(x, k)
    keep = (sims >= threshold) & (ids >= 0)
    rows = np.repeat(np.arange(len(x)), k).reshape(len(x), k)[keep]
    return components(len(x), rows, ids[keep])


def timed_labels(method, x: np.ndarray) -> tuple[np.ndarray, float]:  # noqa: ANN001
    """Labels and the seconds they took."""
    began = time.perf_counter()
    labels = method(x, THRESHOLD)
    return labels, time.perf_counter() - began


def online(scene: Scene) -> dict:
    """The engine of fvc over the scene in order (exact index, in-memory store)."""
    config = ClusteringConfig.for_threshold(THRESHOLD, sorted(set(scene.s.tolist())))
    return evaluate(scene, config, Engine(config, make_index("exact", "cpu")), MemoryStore())


def compare(n: int, seed: int) -> list[dict]:
    """One row per method at size ``n``."""
    scene = make_scene(n, seed=seed)
    x = unit(scene.X)
    rows = []
    figures = online(scene)
    rows.append(_row("fvc online (one pass)", n, figures["seconds"],
                     figures["bcubed_precision"], figures["bcubed_recall"]))
    for name, method in (("all pairs + components", all_pairs),
                         (f"kNN graph (k={KNN}) + components", knn_graph)):
        labels, seconds = timed_labels(method, x)
        precision, recall, _ = bcubed(scene.y, labels)
        rows.append(_row(name, n, seconds, precision, recall))
    return rows


def _row(method: str, n: int, seconds: float, precision: float, recall: float) -> dict:
    return {"method": method, "n": n, "seconds": round(seconds, 3),
            "vectors_per_second": round(n / seconds, 1), "bcubed_precision": round(precision, 4),
            "bcubed_recall": round(recall, 4)}


def main() -> None:
    """Parse, run every size, print."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [row for n in args.sizes for row in compare(n, args.seed)]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'method':<32} {'n':>8} {'seconds':>9} {'vectors/s':>11} {'P':>7} {'R':>7}")
    for r in rows:
        print(f"{r['method']:<32} {r['n']:>8} {r['seconds']:>9} {r['vectors_per_second']:>11} "
              f"{r['bcubed_precision']:>7} {r['bcubed_recall']:>7}")


if __name__ == "__main__":
    main()
