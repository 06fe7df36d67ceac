"""Representative search with FAISS: exact by default, IVF or HNSW for many clusters, GPU or CPU.

The dense ``RepresentativeTable`` is always the truth. Exact mode searches it directly
(``faiss.knn`` on CPU, ``faiss.knn_gpu`` on a GPU). Approximate modes keep an IVF or HNSW index
of *candidates* only: its hits are re-ranked exactly against the table, so a decision uses the
exact similarity of the candidate it picks. A cluster is re-inserted into the approximate index
only when its representative has drifted (cosine to the indexed copy below ``reinsert_below``);
superseded copies stay in place, are skipped when found, and a rebuild clears them once they
outnumber the live ones (HNSW and GPU indexes cannot remove entries). An IVF index is also
rebuilt once the table has grown ``REBUILD_GROWTH`` times past the count it was trained on: a
worker bootstrapping in chunks would otherwise keep the few coarse lists of its first chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from app.index.faiss_lib import faiss
from app.index.numpy_index import top_k
from app.index.table import RepresentativeTable, TableBacked

log = logging.getLogger(__name__)

KINDS = ("exact", "ivf", "hnsw")
BLAS_FROM_QUERIES = 4
REBUILD_GROWTH = 4
DEVICES = ("auto", "cpu", "gpu")


def gpu_count() -> int:
    """GPUs FAISS can use here (0 with the CPU build)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def resolve_device(device: str) -> str:
    """``auto`` becomes ``gpu`` when FAISS sees a GPU, else ``cpu``; ``gpu`` without one fails."""
    if device not in DEVICES:
        message = f"index device must be one of {DEVICES}, not {device!r}"
        raise ValueError(message)
    if device == "auto":
        return "gpu" if gpu_count() > 0 else "cpu"
    if device == "gpu" and gpu_count() == 0:
        message = "index device 'gpu' was asked for, but FAISS sees no GPU (install faiss-gpu)"
        raise ValueError(message)
    return device


class FaissIndex(TableBacked):
    """The engine's ``VectorIndex`` over FAISS."""

    def __init__(
        self,
        kind: str = "exact",
        device: str = "auto",
        *,
        dim: int = 0,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        train_min: int = 20_000,
        reinsert_below: float = 0.995,
        candidates: int = 32,
    ) -> None:
        if kind not in KINDS:
            message = f"index kind must be one of {KINDS}, not {kind!r}"
            raise ValueError(message)
        self.kind = kind
        self.device = resolve_device(device)
        self.table = RepresentativeTable(dim)
        self.nprobe, self.hnsw_m, self.ef_search = nprobe, hnsw_m, ef_search
        self.train_min, self.reinsert_below, self.candidates = train_min, reinsert_below, candidates
        self._gpu = faiss.StandardGpuResources() if self.device == "gpu" else None
        # FAISS's exact search only uses BLAS from 20 queries on by default; engine batches are
        # often smaller, and sgemm beats its scalar loop well before that.
        faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES
        self._ann: faiss.Index | None = None
        self._ann_keys: list[str | None] = []  # approximate-index id -> key (None: superseded)
        self._ann_id: dict[str, int] = {}
        self._built_for = 0  # table size the approximate index was last built over

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Write representatives; re-insert drifted ones into the approximate index."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.table.upsert(keys, vectors)
        if self._ann is not None and not self._outgrown():
            self._ann_refresh(list(keys), vectors)
        elif self.kind != "exact" and len(self.table) >= self.train_min:
            self._build()

    def remove(self, keys: Sequence[str]) -> None:
        """Forget keys (their approximate copies become superseded)."""
        self.table.remove(keys)
        for key in keys:
            ann_id = self._ann_id.pop(key, None)
            if ann_id is not None:
                self._ann_keys[ann_id] = None
        self._maybe_rebuild()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` slots with exact similarities."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if len(self.table) == 0:
            return top_k(np.empty((len(queries), 0), dtype=np.float32), k)
        if self._ann is None:
            return self._exact(queries, k)
        return self._approximate(queries, k)

    def memory_bytes(self) -> int:
        """Bytes of vectors and links held: the table plus the approximate index's copies.

        IVF-Flat keeps per entry a float32 copy, its id and a direct-map slot, plus one float32
        centroid per list; HNSW keeps a copy and about ``2 * M`` 4-byte links per entry.
        """
        table = self.table.vectors.nbytes
        if self._ann is None:
            return table
        dim, total = self.table.dim, int(self._ann.ntotal)
        if self.kind == "ivf":
            return table + total * (dim * 4 + 16) + int(self._ann.nlist) * dim * 4
        return table + total * (dim * 4 + 8 * self.hnsw_m)

    # -- exact ----------------------------------------------------------------------------------

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        base = self.table.vectors
        kk = min(k, len(base))
        if self._gpu is not None:
            sims, slots = faiss.knn_gpu(
                self._gpu, queries, base, kk, metric=faiss.METRIC_INNER_PRODUCT
            )
        else:
            sims, slots = faiss.knn(queries, base, kk, metric=faiss.METRIC_INNER_PRODUCT)
        return _pad(sims, slots, k)

    # -- approximate ----------------------------------------------------------------------------

    def _approximate(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        depth = min(max(self.candidates, 4 * k), int(self._ann.ntotal))
        _, ids = self._ann.search(queries, depth)
        keys, slot_of = self._ann_keys, self.table.slot_of
        found = [  # one flat comprehension: a per-element numpy loop costs ~3x more
            slot_of(keys[i]) if i >= 0 and keys[i] is not None else -1 for i in ids.ravel().tolist()
        ]
        slots = np.array(found, dtype=np.int64).reshape(ids.shape)
        return self._rerank(queries, slots, k)

    def _rerank(
        self, queries: np.ndarray, slots: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact similarities of each query's candidate slots; duplicates and gaps lose."""
        gathered = self.table.vectors[np.maximum(slots, 0)]
        sims = np.einsum("bd,bcd->bc", queries, gathered)
        sims[slots < 0] = -np.inf
        ordered = np.sort(slots, axis=1)
        duplicate = np.zeros_like(slots, dtype=bool)
        duplicate[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
        order = np.argsort(slots, axis=1, kind="stable")
        mask = np.zeros_like(duplicate)
        np.put_along_axis(mask, order, duplicate, axis=1)
        sims[mask] = -np.inf
        best_sims, cols = top_k(sims, k)
        best = np.take_along_axis(slots, np.maximum(cols, 0), axis=1)
        best[~np.isfinite(best_sims)] = -1
        return best_sims, best

    def _new_ann(self, dim: int, count: int) -> faiss.Index:
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.ef_search
            return index
        nlist = max(16, min(int(4 * np.sqrt(count)), count // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(self.table.vectors, 64 * nlist))
        index.nprobe = self.nprobe
        if self._gpu is not None:
            return faiss.index_cpu_to_gpu(self._gpu, 0, index)
        index.make_direct_map()  # drift checks read indexed copies back
        return index

    def _build(self) -> None:
        """(Re)build the approximate index from the table."""
        log.info("building %s index over %d representatives", self.kind, len(self.table))
        self._ann = self._new_ann(self.table.dim, len(self.table))
        self._ann_keys, self._ann_id = [], {}
        self._built_for = len(self.table)
        self._ann_add(self.table.keys(), self.table.vectors)

    def _ann_add(self, keys: list[str], vectors: np.ndarray) -> None:
        start = len(self._ann_keys)
        for offset, key in enumerate(keys):
            old = self._ann_id.get(key)
            if old is not None:
                self._ann_keys[old] = None
            self._ann_id[key] = start + offset
        self._ann_keys.extend(keys)
        self._ann.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def _ann_refresh(self, keys: list[str], vectors: np.ndarray) -> None:
        """Re-insert keys that are new or drifted from their indexed copy."""
        known = [i for i, key in enumerate(keys) if key in self._ann_id]
        drifted = set(range(len(keys))) - set(known)
        if known and self._gpu is not None:  # a GPU IVF keeps no direct map: re-insert all
            drifted |= set(known)
        elif known:
            ids = np.array([self._ann_id[keys[i]] for i in known], dtype=np.int64)
            indexed = self._ann.reconstruct_batch(ids)
            cos = np.einsum("nd,nd->n", indexed, vectors[known])
            drifted |= {known[j] for j in np.flatnonzero(cos < self.reinsert_below)}
        if drifted:
            rows = sorted(drifted)
            self._ann_add([keys[i] for i in rows], vectors[rows])
        self._maybe_rebuild()

    def _outgrown(self) -> bool:
        """An IVF index's lists were sized for a table several times smaller than now."""
        return self.kind == "ivf" and len(self.table) >= REBUILD_GROWTH * self._built_for

    def _maybe_rebuild(self) -> None:
        if self._ann is None:
            return
        superseded = len(self._ann_keys) - len(self._ann_id)
        if superseded > max(len(self._ann_id), 1024):
            self._build()


def _training_sample(vectors: np.ndarray, size: int) -> np.ndarray:
    if len(vectors) <= size:
        return np.ascontiguousarray(vectors)
    rows = np.random.default_rng(0).choice(len(vectors), size, replace=False)
    return np.ascontiguousarray(vectors[np.sort(rows)])


def _pad(sims: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if sims.shape[1] == k:
        return sims, slots
    pad = k - sims.shape[1]
    sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
    slots = np.pad(slots, ((0, 0), (0, pad)), constant_values=-1)
    return sims, slots
