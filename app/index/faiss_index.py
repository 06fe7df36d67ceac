"""Representative search with FAISS: exact by default, IVF or HNSW for many clusters, GPU or CPU.

The dense ``RepresentativeTable`` is always the truth. Exact mode searches it directly
(``faiss.knn`` on CPU, ``faiss.knn_gpu`` on a GPU). Approximate modes keep an IVF or HNSW index
of *candidates* only: its hits are re-ranked exactly against the table, so a decision uses the
exact similarity of the candidate it picks. A cluster is re-inserted into the approximate index
only when its representative has drifted (cosine to the indexed copy below ``reinsert_below``);
superseded copies stay in place, are skipped when found, and a rebuild clears them once they
outnumber the live ones (HNSW, fast-scan and GPU indexes cannot remove entries). An IVF index is
also rebuilt once the table has grown ``REBUILD_GROWTH`` times past the count it was trained on:
a worker bootstrapping in chunks would otherwise keep the few coarse lists of its first chunk.

``exact`` with ``fp16`` (``FVC_GPU_FP16=1``) keeps a half-precision copy of every representative
in a flat index (on a GPU: ``GpuIndexFlatIP`` with ``useFloat16``, half the memory and traffic)
and searches it for candidates that are re-ranked exactly in float32. Every change is
re-inserted, so each copy differs from its representative by fp16 rounding only (below
``FP16_SLACK`` in cosine); a query whose k-th exact similarity does not clear the last
candidate's by that slack is searched again exactly, so decisions stay exactly fp32's.

``ivfpq`` keeps 4-bit PQ codes (64 bytes at d = 512) instead of float copies, after a random
rotation that spreads the variance of anisotropic embeddings over the sub-quantizers. Its scan
is ~32x less memory traffic than IVF-Flat's; its coarser ranking is paid for with more
candidates, which the exact re-rank makes cheap. Codes cannot be read back, so its drift check
sums the angle each update moves a representative: an upper bound of the angle to the indexed
copy. Fast-scan has no GPU version: on a GPU, ``ivfpq`` is the GPU IVF-Flat of ``ivf``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from app.index.faiss_lib import faiss
from app.index.numpy_index import top_k
from app.index.table import RepresentativeTable, TableBacked

log = logging.getLogger(__name__)

KINDS = ("exact", "ivf", "ivfpq", "hnsw")
BLAS_FROM_QUERIES = 4
REBUILD_GROWTH = 4
ADD_CHUNK = 65_536  # rows per FAISS add
# ivfpq's 4-bit codes rank coarsely: it probes more lists and re-ranks more candidates exactly.
PQ_NPROBE, PQ_CANDIDATES = 32, 64
# Coarse lists per square root of the clusters: fast-scan lists are cheap to scan, so ivfpq has
# half as many as ivf, which halves its coarse search and its build (k-means, assignment).
LISTS_PER_SQRT = {"ivf": 4, "ivfpq": 2}
PQ_TRAIN_PER_LIST = 40  # k-means sample per coarse list: FAISS's minimum, and fast
# Bound on |cosine of a half-precision copy - exact cosine| for unit vectors: fp16 rounds each
# component within 2^-11 of its value (4.9e-4 of the cosine), queries too on a GPU, and its
# fp16 products add up in float32; 4e-3 leaves room for all of it.
FP16_SLACK = 4e-3
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
        nprobe: int | None = None,
        hnsw_m: int = 32,
        ef_search: int = 128,
        train_min: int = 20_000,
        reinsert_below: float = 0.995,
        candidates: int | None = None,
        fp16: bool = False,
    ) -> None:
        if kind not in KINDS:
            message = f"index kind must be one of {KINDS}, not {kind!r}"
            raise ValueError(message)
        self.kind = kind
        self.device = resolve_device(device)
        self.table = RepresentativeTable(dim)
        pq = kind == "ivfpq"
        self.nprobe = nprobe or (PQ_NPROBE if pq else 16)
        # fp16 copies: an often-updated cluster's superseded ones crowd the deepest candidates
        self.candidates = candidates or (PQ_CANDIDATES if pq or fp16 else 32)
        self.hnsw_m, self.ef_search = hnsw_m, ef_search
        self.train_min, self.reinsert_below = train_min, reinsert_below
        self._gpu = faiss.StandardGpuResources() if self.device == "gpu" else None
        # what the approximate index is made of: a GPU has no fast-scan, so it keeps IVF-Flat
        self._structure = "ivf" if pq and self._gpu is not None else kind
        if fp16 and kind == "exact":
            self._structure = "flat16"
        # FAISS's exact search only uses BLAS from 20 queries on by default; engine batches are
        # often smaller, and sgemm beats its scalar loop well before that.
        faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES
        self._ann: faiss.Index | None = None
        self._ann_slots = AnnSlots()
        self._ann_id: dict[str, int] = {}  # key -> its one live approximate-index id
        self._walked: dict[str, float] = {}  # ivfpq: radians moved since a key was indexed
        self._built_for = 0  # table size the approximate index was last built over
        self._loading = False  # inside loading(): upserts fill the table only

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Write representatives; re-insert drifted ones into the approximate index."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        keys = list(keys)
        known, before = self._indexed(keys)
        self.table.upsert(keys, vectors)
        if self._loading:
            return
        if self._ann is not None and not self._outgrown():
            self._ann_refresh(keys, vectors, known, before)
        elif self._structure == "flat16" or (
            self.kind != "exact" and len(self.table) >= self.train_min
        ):
            self._build()

    def probe(self, nprobe: int | None = None, candidates: int | None = None) -> None:
        """Search more or fewer IVF lists and candidates from the next search on, no rebuild.

        Lets a benchmark weigh speed against agreement on one loaded index.
        """
        self.nprobe = nprobe or self.nprobe
        self.candidates = candidates or self.candidates
        if self._ann is None or self._structure == "hnsw":
            return
        if self._gpu is None:
            faiss.extract_index_ivf(self._ann).nprobe = self.nprobe
        else:
            self._ann.nprobe = self.nprobe

    @contextmanager
    def loading(self, expected: int = 0) -> Iterator[None]:
        """Fill the table only; build the approximate index once, over everything, at the end.

        Built chunk by chunk, a 1M-cluster bootstrap trains and fills it at 20k, 80k and 320k
        clusters on the way: 1.4M adds and three trainings instead of 1M and one.
        """
        self.table.reserve(expected)
        self._loading = True
        try:
            yield
        finally:
            self._loading = False
        if self._structure == "exact":
            return
        if len(self.table) >= self.train_min:
            self._build()
        else:  # too few to train on: exact search, as before the first build
            self._ann = None

    def remove(self, keys: Sequence[str]) -> list[tuple[str, int, int]]:
        """Forget keys (their approximate copies become superseded); returns the rows moved."""
        moved = self.table.remove(keys)
        for key in keys:
            ann_id = self._ann_id.pop(key, None)
            if ann_id is not None:
                self._ann_slots.set(ann_id, -1)
            self._walked.pop(key, None)
        for key, _, slot in moved:  # rows the table moved into the holes
            ann_id = self._ann_id.get(key)
            if ann_id is not None:
                self._ann_slots.set(ann_id, slot)
        self._maybe_rebuild()
        return moved

    @property
    def exact_top_k(self) -> bool:
        """Whether the top k is the true one: exact search, yes; IVF and HNSW, not always.

        fp16 candidates are searched again exactly when the fp16 rounding leaves a doubt.
        """
        return self.kind == "exact"

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
        centroid per list; HNSW keeps a copy and about ``2 * M`` 4-byte links per entry; IVF-PQ
        fast-scan keeps codes in blocks of 32 entries, an id per entry, the centroids and the
        rotation matrix. Every approximate index adds the 8-byte id -> slot map.
        """
        if self._ann is None:
            return self.table.vectors.nbytes
        table = self.table.vectors.nbytes + self._ann_slots.nbytes
        dim, total = self.table.dim, int(self._ann.ntotal)
        if self._structure == "ivfpq":
            return table + _fast_scan_bytes(self._ann) + total * 8 + dim * dim * 4
        if self._structure == "ivf":
            return table + total * (dim * 4 + 16) + int(self._ann.nlist) * dim * 4
        if self._structure == "flat16":
            return table + total * dim * 2
        return table + total * (dim * 4 + 8 * self.hnsw_m)

    @property
    def nlist(self) -> int | None:
        """Coarse lists of the approximate index (None when it is not an IVF one)."""
        if self._ann is None or self._structure == "hnsw":
            return None
        ivf = faiss.extract_index_ivf(self._ann) if self._structure == "ivfpq" else self._ann
        return int(ivf.nlist)

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
        found, ids = self._ann.search(queries, depth)
        sims, slots = self._rerank(queries, self._ann_slots.lookup(ids), k)
        if self._structure == "flat16" and depth < self._ann.ntotal:
            self._exact_where_unsure(queries, found[:, -1], sims, slots)
        return sims, slots

    def _exact_where_unsure(
        self, queries: np.ndarray, last: np.ndarray, sims: np.ndarray, slots: np.ndarray
    ) -> None:
        """Search exactly, in place, the queries a half-precision scan may have misled.

        A representative left out scored at most ``last`` (the deepest candidate's fp16
        similarity) in half precision, so at most ``last + FP16_SLACK`` exactly: the result is
        sure when every one of its ``k`` exact similarities is higher (or when none is missing).
        """
        kth = sims[:, -1]
        unsure = np.flatnonzero(~(kth > last + FP16_SLACK))
        if unsure.size == 0:
            return
        exact_sims, exact_slots = self._exact(queries[unsure], sims.shape[1])
        sims[unsure], slots[unsure] = exact_sims, exact_slots

    def _rerank(
        self, queries: np.ndarray, slots: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact similarities of each query's candidate slots (distinct; -1 loses), best ``k``.

        FAISS computes them straight from the table's rows: gathering 128 rows of 2 KB per query
        into a temporary first cost ~10x more at batch 512.
        """
        sims = np.empty(slots.shape, dtype=np.float32)
        faiss.fvec_inner_products_by_idx(
            faiss.swig_ptr(sims), faiss.swig_ptr(queries), faiss.swig_ptr(self.table.vectors),
            faiss.swig_ptr(slots), self.table.dim, len(queries), slots.shape[1],
        )  # -inf where the slot is -1
        best_sims, cols = top_k(sims, k)
        best = np.take_along_axis(slots, np.maximum(cols, 0), axis=1)
        best[~np.isfinite(best_sims)] = -1
        return best_sims, best

    def _new_ann(self, dim: int, count: int) -> faiss.Index:
        if self._structure == "flat16":
            return self._new_flat16(dim)
        if self._structure == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.ef_search
            return index
        nlist = max(16, min(int(LISTS_PER_SQRT[self._structure] * np.sqrt(count)), count // 39))
        if self._structure == "ivfpq":
            return self._new_ivfpq(dim, nlist)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(self.table.vectors, 64 * nlist))
        index.nprobe = self.nprobe
        if self._gpu is not None:
            return faiss.index_cpu_to_gpu(self._gpu, 0, index)
        index.make_direct_map()  # drift checks read indexed copies back
        return index

    def _new_flat16(self, dim: int) -> faiss.Index:
        """Half-precision copies, scanned in full: on a GPU its flat index, else an SQ fp16 one."""
        if self._gpu is not None:
            config = faiss.GpuIndexFlatConfig()
            config.useFloat16 = True
            return faiss.GpuIndexFlatIP(self._gpu, dim, config)
        fp16 = faiss.ScalarQuantizer.QT_fp16
        return faiss.IndexScalarQuantizer(dim, fp16, faiss.METRIC_INNER_PRODUCT)

    def _new_ivfpq(self, dim: int, nlist: int) -> faiss.Index:
        """Rotation, then IVF with 4-bit fast-scan PQ of the residuals, trained on a sample."""
        spec = f"RR{dim},IVF{nlist},PQ{_pq_subquantizers(dim)}x4fsr"
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(self.table.vectors, PQ_TRAIN_PER_LIST * nlist))
        faiss.extract_index_ivf(index).nprobe = self.nprobe
        return index

    def _build(self) -> None:
        """(Re)build the approximate index from the table."""
        log.info("building %s index over %d representatives", self.kind, len(self.table))
        self._ann = self._new_ann(self.table.dim, len(self.table))
        self._ann_slots, self._ann_id, self._walked = AnnSlots(), {}, {}
        self._built_for = len(self.table)
        self._ann_add(self.table.keys(), self.table.vectors)

    def _ann_add(self, keys: list[str], vectors: np.ndarray) -> None:
        start = self._ann_slots.count
        self._ann_slots.append(np.array([self.table.slot_of(k) for k in keys], dtype=np.int64))
        for offset, key in enumerate(keys):
            old = self._ann_id.get(key)
            if old is not None:
                self._ann_slots.set(old, -1)
                self._walked.pop(key, None)
            self._ann_id[key] = start + offset
        for lo in range(0, len(vectors), ADD_CHUNK):  # bounds the rotated copy ivfpq makes
            self._ann.add(np.ascontiguousarray(vectors[lo : lo + ADD_CHUNK], dtype=np.float32))

    def _indexed(self, keys: list[str]) -> tuple[list[int], np.ndarray | None]:
        """Positions of the keys already indexed and, for ivfpq, their rows before this write."""
        known = [i for i, key in enumerate(keys) if key in self._ann_id]
        if self._structure != "ivfpq" or not known:
            return known, None
        return known, self.table.vectors[[self.table.slot_of(keys[i]) for i in known]]

    def _ann_refresh(
        self, keys: list[str], vectors: np.ndarray, known: list[int], before: np.ndarray | None
    ) -> None:
        """Re-insert keys that are new or drifted from their indexed copy."""
        drifted = set(range(len(keys))) - set(known)
        if known and before is not None:
            drifted |= self._walked_off(keys, known, before, vectors[known])
        elif known and (self._gpu is not None or self._structure == "flat16"):
            drifted |= set(known)  # a GPU index keeps no direct map; fp16 copies stay current
        elif known:
            ids = np.array([self._ann_id[keys[i]] for i in known], dtype=np.int64)
            indexed = self._ann.reconstruct_batch(ids)
            cos = np.einsum("nd,nd->n", indexed, vectors[known])
            drifted |= {known[j] for j in np.flatnonzero(cos < self.reinsert_below)}
        if drifted:
            rows = sorted(drifted)
            self._ann_add([keys[i] for i in rows], vectors[rows])
        self._maybe_rebuild()

    def _walked_off(
        self, keys: list[str], known: list[int], before: np.ndarray, after: np.ndarray
    ) -> set[int]:
        """Known positions whose summed update angles may exceed ``reinsert_below``'s angle.

        Angles obey the triangle inequality, so the sum bounds the angle to the indexed copy.
        """
        cos = np.clip(np.einsum("nd,nd->n", before, after), -1.0, 1.0)
        limit = float(np.arccos(self.reinsert_below))
        drifted = set()
        for i, step in zip(known, np.arccos(cos).tolist(), strict=True):
            walked = self._walked.get(keys[i], 0.0) + step
            if walked > limit:
                drifted.add(i)
            else:
                self._walked[keys[i]] = walked
        return drifted

    def _outgrown(self) -> bool:
        """An IVF index's lists were sized for a table several times smaller than now."""
        ivf = self._structure in ("ivf", "ivfpq")
        return ivf and len(self.table) >= REBUILD_GROWTH * self._built_for

    def _maybe_rebuild(self) -> None:
        if self._ann is None:
            return
        superseded = self._ann_slots.count - len(self._ann_id)
        if superseded > max(len(self._ann_id), 1024):
            self._build()


class AnnSlots:
    """Approximate-index id -> table slot (-1: superseded), an array so lookups are vectorised."""

    def __init__(self) -> None:
        self.count = 0
        self._slots = np.full(1024, -1, dtype=np.int64)

    def append(self, slots: np.ndarray) -> None:
        """Slots of the ids ``count``, ``count + 1``, ... just added."""
        end = self.count + len(slots)
        if end > len(self._slots):
            grown = np.full(max(end, 2 * len(self._slots)), -1, dtype=np.int64)
            grown[: self.count] = self._slots[: self.count]
            self._slots = grown
        self._slots[self.count : end] = slots
        self.count = end

    @property
    def nbytes(self) -> int:
        """Bytes of the ids in use."""
        return 8 * self.count

    def set(self, ann_id: int, slot: int) -> None:
        """Move an id's slot, or retire the id with -1."""
        self._slots[ann_id] = slot

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Slots of search results (FAISS pads with id -1)."""
        slots = self._slots[np.maximum(ids, 0)]
        slots[ids < 0] = -1
        return slots


def _pq_subquantizers(dim: int) -> int:
    """One 4-bit sub-quantizer per 4 dimensions (64-byte codes at d = 512), or the nearest fit.

    At 1M clusters, one per 8 dimensions ranks too coarsely: the best match of a new person who
    resembles several clusters (cosine 0.5-0.65) was among 128 candidates only 70 % of the time.
    """
    return next(dim // width for width in (4, 2, 1) if dim % width == 0)


def _fast_scan_bytes(index: faiss.Index) -> int:
    """Code bytes of a fast-scan IVF (lists padded to whole blocks) and its float32 centroids."""
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    blocks = sum(-(-lists.list_size(i) // lists.n_per_block) for i in range(ivf.nlist))
    return blocks * lists.block_size + int(ivf.nlist) * int(ivf.d) * 4


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
