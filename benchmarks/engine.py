"""Engine benchmarks: search speed, engine throughput, and the engine-versus-loop target.

Search is measured against the machine's own matrix-multiply rate.

Run from the repository root::

    .venv/bin/python benchmarks/engine.py            # full run, a few minutes
    .venv/bin/python benchmarks/engine.py --quick    # smoke run, well under a minute
    .venv/bin/python benchmarks/engine.py --json     # one JSON object on stdout
    .venv/bin/python benchmarks/engine.py --only loop --scene-identities 20000

Four measurements, each a function below (DESIGN.md section 8); sections 2 to 4 are run with
FAISS's default OpenMP thread count and with one thread:

1. ``machine_reference``: float32 ``a @ b`` (512x512 @ 512x10000) in GFLOP/s, best of several.
2. ``search_share``: the exact FAISS index's ``search`` at 10k clusters as effective GFLOP/s
   (``2*b*n*d / time``) and as a share of the sgemm rate, per batch size.
3. ``engine_throughput``: vectors per second of ``Engine.step`` with 10k and 100k pre-loaded
   clusters, per index kind and batch size, and how often approximate indexes decide as the
   exact one does.
4. ``loop_target``: an ``fvc evaluate`` run (exact index, MemoryStore) against a plain numpy
   leader clusterer that searches one vector at a time, on the same scene.

``--only million`` adds a fifth, not run by default (minutes, several GiB): ``million.py``,
an approximate engine (``--million-kind``) against exact search at 1M clusters. ``--only
overhead`` adds ``overhead.py``: the engine's microseconds per vector outside its search at
10k, 100k and 1M clusters, and at 1M the garbage collector's full pass and memory per cluster.

The machine may be shared, so every figure is measured next to its reference in the same run:
timings alternate with a reference sgemm and the best of each is kept, and ratios are also given
as the median of the per-round ratios (each round sees the same load); the engines under test
step the same batches in lockstep. Results and their reading: docs/benchmarks.md. Progress goes
to stderr (tqdm bars when it is a terminal).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

# Run as a script, this folder is first on sys.path: make the repository importable even when
# the project is not installed in the environment.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

from app.config import ClusteringConfig  # noqa: E402
from app.engine import Cluster, ClusterId, Decision, Engine, Observation  # noqa: E402
from app.index import make_index  # noqa: E402
from app.index.numpy_index import NumpyIndex  # noqa: E402
from app.threads import single_threaded_numpy_blas  # noqa: E402

DIM = 512
SEARCH_K = 4  # the engine's default search_k
REF_SHAPE = (512, 512, 10_000)  # sgemm reference: (m, k) @ (k, n)
THRESHOLD = 0.5  # reg_threshold of the engine runs (``fvc evaluate``'s default too)
SEARCH_SHARE_TARGET = 0.5  # exact search at batch 512: at least half the sgemm rate
LOOP_RATIO_TARGET = 2.0  # engine at least twice the one-at-a-time numpy loop
STREAMS = ("camera_0", "camera_1", "camera_2", "camera_3")
START_MS = 1_700_000_000_000
SETTLE_S = 0.3  # pause after a reference sgemm, see ``Sgemm.seconds``
REF_EVERY_S = 2.0  # engine runs: a reference sgemm about this often
NEW_FRACTION = 0.05  # share of engine-run observations that are nobody seen before
OBS_COSINE = 0.8  # cosine of an observation to its identity's centre
# Approximate indexes are built once this many clusters exist; lower than the product's
# default (20k) so that "ivf"/"ivfpq"/"hnsw" at 10k clusters really search approximately.
APPROX_OPTIONS: dict[str, dict[str, Any]] = {
    "ivf": {"train_min": 1000},
    "ivfpq": {"train_min": 1000},
    "hnsw": {"train_min": 1000},
}


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is; ``FULL`` for the report, ``QUICK`` for a smoke run."""

    ref_rounds: int
    threads: tuple[int, ...]  # FAISS OpenMP threads to measure with; 0 is FAISS's default
    search_clusters: int
    search_batches: tuple[int, ...]
    search_rounds: int
    engine_clusters: tuple[int, ...]
    engine_batches: tuple[int, ...]
    engine_kinds: tuple[str, ...]
    # observations per (clusters, batch), shared by the thread settings (they alternate per
    # batch); a missing key means ``engine_default``
    engine_observations: dict[tuple[int, int], int] = field(default_factory=dict)
    engine_default: int = 4096
    scene_n: int = 50_000
    scene_identities: int = 5_000
    loop_rounds: int = 2

    def observations(self, clusters: int, batch: int) -> int:
        """Observations stepped for one (clusters, batch) segment."""
        return self.engine_observations.get((clusters, batch), self.engine_default)


FULL = Sizes(
    ref_rounds=10,
    threads=(0, 1),
    search_clusters=10_000,
    search_batches=(512, 64, 1),
    search_rounds=10,
    engine_clusters=(10_000, 100_000),
    engine_batches=(1, 64, 512),
    engine_kinds=("exact", "ivf", "ivfpq", "hnsw"),
    engine_observations={
        (10_000, 1): 2_000,
        (10_000, 64): 8_192,
        (10_000, 512): 16_384,
        (100_000, 1): 300,  # exact search streams the whole 200 MB table once per vector
        (100_000, 64): 1_024,  # below 250 queries FAISS does not use BLAS (see the doc)
        (100_000, 512): 4_096,
    },
)
QUICK = Sizes(
    ref_rounds=3,
    threads=(0, 1),
    search_clusters=10_000,
    search_batches=(512, 64, 1),
    search_rounds=2,
    engine_clusters=(5_000,),
    engine_batches=(1, 64, 512),
    engine_kinds=("exact", "ivf", "ivfpq", "hnsw"),
    engine_observations={(5_000, 1): 100, (5_000, 64): 512},
    engine_default=1_024,
    scene_n=10_000,
    scene_identities=1_000,
    loop_rounds=1,
)


# -- helpers ------------------------------------------------------------------------------------


def log(message: str) -> None:
    """One progress line on stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def progress(total: int, desc: str) -> tqdm:
    """A tqdm bar on stderr, shown only when stderr is a terminal."""
    return tqdm(
        total=total, desc=desc, unit="vec", unit_scale=True, leave=False, mininterval=0.5,
        disable=not sys.stderr.isatty(),
    )


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32, copy=False)


@cache
def default_threads() -> int:
    """FAISS's own OpenMP thread count, read before this module changes it."""
    from app.index.faiss_lib import faiss

    return int(faiss.omp_get_max_threads())


@contextmanager
def faiss_threads(count: int) -> Iterator[int]:
    """Run FAISS (and its bundled OpenMP BLAS) on ``count`` threads; 0 keeps its default."""
    from app.index.faiss_lib import faiss

    default = default_threads()
    faiss.omp_set_num_threads(count or default)
    try:
        yield count or default
    finally:
        faiss.omp_set_num_threads(default)


def threads_label(count: int) -> str:
    """How a thread setting is printed."""
    return f"{default_threads()} (default)" if count == 0 else str(count)


class Sgemm:
    """The reference: float32 ``a @ b`` of shape ``REF_SHAPE``, timed one product at a time."""

    def __init__(self) -> None:
        m, k, n = REF_SHAPE
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((m, k), dtype=np.float32)
        self.b = rng.standard_normal((k, n), dtype=np.float32)
        self.out = np.empty((m, n), dtype=np.float32)
        self.flop = 2.0 * m * k * n
        np.matmul(self.a, self.b, out=self.out)  # warm up threads and pages

    def seconds(self) -> float:
        """One product's wall time; then a pause (untimed) while numpy's BLAS threads settle.

        OpenBLAS worker threads busy-wait for up to ~0.1-0.2 s after a product. On 2 cores they
        take a core from FAISS's second OpenMP thread meanwhile, halving a FAISS search that
        starts right after a numpy sgemm, so no measurement starts inside that window.
        """
        seconds = timed(lambda: np.matmul(self.a, self.b, out=self.out))
        time.sleep(SETTLE_S)
        return seconds

    def rate(self, rounds: int) -> float:
        """Best GFLOP/s over ``rounds`` products."""
        return self.flop / min(self.seconds() for _ in range(rounds)) / 1e9


# -- 1. machine reference -----------------------------------------------------------------------


def blas_info() -> str:
    """The BLAS of numpy as its build config names it (best effort)."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # noqa: BLE001 - purely informative
        return "unknown"
    text = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    config = blas.get("openblas configuration")
    return f"{text} ({config})" if config else text


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_reference(sizes: Sizes, sgemm: Sgemm) -> dict[str, Any]:
    """This machine: cores, libraries, load, and its float32 sgemm rate (best of several)."""
    from app.index.faiss_lib import faiss

    times = [sgemm.seconds() for _ in range(sizes.ref_rounds)]
    m, k, n = REF_SHAPE
    return {
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": blas_info(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        "thread_env": {
            name: os.environ[name]
            for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS")
            if name in os.environ
        },
        "faiss": getattr(faiss, "__version__", "?"),
        "faiss_simd": faiss.get_compile_options(),
        "faiss_default_threads": default_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "sgemm_shape": f"{m}x{k} @ {k}x{n}",
        "sgemm_gflops": round(sgemm.flop / min(times) / 1e9, 1),
        "sgemm_gflops_median": round(sgemm.flop / statistics.median(times) / 1e9, 1),
        "sgemm_rounds": sizes.ref_rounds,
    }


# -- 2. search stage share ----------------------------------------------------------------------


def _repeat(fn: Callable[[], object], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            fn()

    return run


def _with_blas(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` with FAISS's brute-force search always on its BLAS path.

    ``faiss.knn`` multiplies with BLAS only when ``queries * d`` reaches
    ``distance_compute_blas_threshold`` (128000 in FAISS 1.15: 250 queries at d=512); below it
    each query is scanned against every row separately.
    """
    from app.index.faiss_lib import faiss

    def run() -> None:
        before = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 0
        try:
            fn()
        finally:
            faiss.cvar.distance_compute_blas_threshold = before

    return run


def search_share(sizes: Sizes, sgemm: Sgemm, device: str) -> list[dict[str, Any]]:
    """Exact FAISS ``search`` at ``search_clusters`` clusters vs the sgemm rate, per batch.

    For each FAISS thread setting and batch size, each round times back to back: the reference
    sgemm, the FAISS index's search, the same with FAISS's BLAS path forced (``_with_blas``),
    the numpy oracle index's search (``q @ table.T`` plus top-k) and the bare numpy product of
    the same shape. Small batches are repeated within a
    round so one timing covers ~512 queries. Figures are best-of-rounds; ``faiss_share_median``
    is the median of the per-round ratios of search rate to sgemm rate.
    """
    n = sizes.search_clusters
    rng = np.random.default_rng(1)
    table = unit_rows(rng.standard_normal((n, DIM), dtype=np.float32))
    keys = [f"c{i}" for i in range(n)]
    faiss_index = make_index("exact", device)
    faiss_index.upsert(keys, table)
    numpy_index = NumpyIndex()
    numpy_index.upsert(keys, table)
    base = faiss_index.vectors
    rows = []
    for threads in sizes.threads:
        for batch in sizes.search_batches:
            picks = rng.integers(0, n, batch)
            noise = unit_rows(rng.standard_normal((batch, DIM), dtype=np.float32))
            queries = unit_rows(table[picks] + 0.5 * noise)
            repeat = max(1, 512 // batch)
            candidates = {
                "faiss": _repeat(lambda q=queries: faiss_index.search(q, SEARCH_K), repeat),
                "faiss_blas": _with_blas(
                    _repeat(lambda q=queries: faiss_index.search(q, SEARCH_K), repeat)
                ),
                "numpy_index": _repeat(lambda q=queries: numpy_index.search(q, SEARCH_K), repeat),
                "numpy_matmul": _repeat(lambda q=queries: q @ base.T, repeat),
            }
            per_call: dict[str, list[float]] = {name: [] for name in candidates}
            ref: list[float] = []
            with faiss_threads(threads):
                for fn in candidates.values():
                    fn()  # warm-up
                for _ in range(sizes.search_rounds):
                    ref.append(sgemm.seconds())
                    for name, fn in candidates.items():
                        per_call[name].append(timed(fn) / repeat)
            rows.append(_search_row(n, batch, threads, sgemm, ref, per_call))
            row = rows[-1]
            log(f"search threads={threads_label(threads)} b={batch}: faiss {row['faiss_gflops']}"
                f" GFLOP/s = {row['faiss_share']:.0%} of sgemm {row['sgemm_gflops']}")
    return rows


def _search_row(
    n: int, batch: int, threads: int, sgemm: Sgemm, ref: list[float],
    per_call: dict[str, list[float]],
) -> dict[str, Any]:
    flop = 2.0 * batch * n * DIM
    ref_rate = sgemm.flop / min(ref) / 1e9
    row: dict[str, Any] = {
        "clusters": n,
        "faiss_threads": threads_label(threads),
        "batch": batch,
        "sgemm_gflops": round(ref_rate, 1),
    }
    for name, times in per_call.items():
        rate = flop / min(times) / 1e9
        row[f"{name}_us_per_call"] = round(min(times) * 1e6, 1)
        row[f"{name}_gflops"] = round(rate, 1)
        row[f"{name}_share"] = round(rate / ref_rate, 3)
    pair = [(flop / f) / (sgemm.flop / r) for f, r in zip(per_call["faiss"], ref, strict=True)]
    row["faiss_share_median"] = round(statistics.median(pair), 3)
    return row


# -- 3. engine throughput -----------------------------------------------------------------------


@dataclass
class Workload:
    """Pre-loaded clusters and, per batch size, the observations every engine steps through."""

    clusters: list[Cluster]
    segments: dict[int, list[Observation]]


def make_workload(n_clusters: int, sizes: Sizes, seed: int) -> Workload:
    """``n_clusters`` identities as clusters of 1 to 20 observations, and noisy re-sightings.

    The model is ``app.offline.synth``'s: random unit centres (near-orthogonal in 512-d) and
    isotropic noise. Each observation has cosine ``OBS_COSINE`` to its centre, well above
    ``THRESHOLD``, so it updates its cluster, except a ``NEW_FRACTION`` of fresh random vectors
    that create one.
    Cluster sizes matter to approximate indexes: one more observation moves a small cluster's
    representative enough to be re-inserted (about sizes 1 to 5 here), a large one's not.
    """
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((n_clusters, DIM), dtype=np.float32))
    counts = rng.integers(1, 21, n_clusters)
    clusters = []
    for i in range(n_clusters):
        stream = STREAMS[i % len(STREAMS)]
        clusters.append(
            Cluster.from_state(
                id=ClusterId(START_MS, f"pre{i}", stream),
                state=centres[i] * np.float32(counts[i]),  # SIMPLE_AVERAGE: the sum of units
                num_observations=int(counts[i]),
                realized=True,
                first_time=START_MS,
                last_time=START_MS,
                streams=(stream,),
                retention_ms=0,
                version=1,
                pending=0,
                pending_since=START_MS,
                last_emit_time=START_MS,
                emitted=True,
            )
        )
    noise_sd = np.float32(np.sqrt(1.0 / OBS_COSINE**2 - 1.0) / np.sqrt(DIM))
    segments: dict[int, list[Observation]] = {}
    serial = 0
    for batch in sizes.engine_batches:
        count = sizes.observations(n_clusters, batch)
        who = rng.integers(0, n_clusters, count)
        vectors = centres[who] + noise_sd * rng.standard_normal((count, DIM), dtype=np.float32)
        fresh = rng.random(count) < NEW_FRACTION
        vectors[fresh] = rng.standard_normal((int(fresh.sum()), DIM), dtype=np.float32)
        observations = []
        for row in range(count):
            serial += 1
            stream = STREAMS[serial % len(STREAMS)]
            observations.append(Observation(vectors[row], stream, f"o{serial}", START_MS + serial))
        segments[batch] = observations
    return Workload(clusters, segments)


class StageTimer:
    """Wraps an index's ``search`` and ``upsert`` to add up the seconds spent in each."""

    def __init__(self, index: Any) -> None:
        self.seconds = {"search": 0.0, "upsert": 0.0}
        for name in self.seconds:
            setattr(index, name, self._wrap(name, getattr(index, name)))

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - began

        return call


@dataclass
class Bench:
    """One engine under test and what its steps cost so far, per FAISS thread setting."""

    kind: str
    engine: Engine
    stages: StageTimer
    load_seconds: float
    approximate: bool
    tally: dict[int, dict[str, float]] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)

    def step(self, chunk: list[Observation], threads: int) -> None:
        """Step one batch on ``threads`` FAISS threads and add up its cost."""
        tally = self.tally.setdefault(threads, dict.fromkeys(
            ("seconds", "vectors", "search", "upsert", "created"), 0.0))
        search, upsert = self.stages.seconds["search"], self.stages.seconds["upsert"]
        with faiss_threads(threads):
            began = time.perf_counter()
            result = self.engine.step(chunk)
            tally["seconds"] += time.perf_counter() - began
        tally["search"] += self.stages.seconds["search"] - search
        tally["upsert"] += self.stages.seconds["upsert"] - upsert
        tally["vectors"] += len(chunk)
        tally["created"] += sum(d.created for d in result.decisions)
        self.decisions.extend(result.decisions)

    def warm(self, chunk: list[Observation], threads: int) -> None:
        """One search of ``chunk`` (threads, caches) without changing any state."""
        with faiss_threads(threads):
            self.engine.index.search(unit_rows(np.stack([o.vector for o in chunk])), SEARCH_K)

    def reset(self) -> None:
        """Forget tallies and decisions (a new segment begins)."""
        self.tally, self.decisions = {}, []


def make_bench(kind: str, clusters: list[Cluster], device: str) -> Bench:
    """An engine of ``kind`` holding ``clusters``; loading (and index building) is timed."""
    config = ClusteringConfig.for_threshold(THRESHOLD, STREAMS)
    index = make_index(kind, device, **APPROX_OPTIONS.get(kind, {}))
    engine = Engine(config, index, search_k=SEARCH_K)
    building = " and building the index" if kind != "exact" else ""
    log(f"engine {kind} @ {len(clusters):,} clusters: loading{building}")
    load_seconds = timed(lambda: engine.load(clusters))
    approximate = getattr(index, "_ann", None) is not None
    return Bench(kind, engine, StageTimer(index), load_seconds, approximate)


def run_segment(
    benches: list[Bench], batch: int, observations: list[Observation], sizes: Sizes,
    sgemm: Sgemm,
) -> list[float]:
    """Step every engine through ``observations`` in lockstep; returns reference sgemm rates.

    Batches go round-robin over the engines, and the FAISS thread setting alternates from one
    batch to the next, so all engines and settings share the machine's load alike; a reference
    sgemm is timed every ``REF_EVERY_S`` or so in between (with its settling pause, untimed).
    """
    for bench in benches:
        bench.reset()
        for threads in sizes.threads:
            bench.warm(observations[:batch], threads)
    refs = [sgemm.rate(1)]
    last_ref = time.perf_counter()
    desc = f"n={len(benches[0].engine.index):,} b={batch}"
    with progress(len(observations), desc) as bar:
        for number, start in enumerate(range(0, len(observations), batch)):
            chunk = observations[start : start + batch]
            threads = sizes.threads[number % len(sizes.threads)]
            for bench in benches:
                bench.step(chunk, threads)
            if time.perf_counter() - last_ref > REF_EVERY_S:
                refs.append(sgemm.rate(1))
                last_ref = time.perf_counter()
            bar.update(len(chunk))
    refs.append(sgemm.rate(1))
    return refs


def segment_rows(
    benches: list[Bench], n: int, batch: int, refs: list[float]
) -> list[dict[str, Any]]:
    """One row per engine and thread setting for a finished segment."""
    ref = statistics.median(refs)
    bound = ref * 1e9 / (2.0 * n * DIM)
    exact = next((b for b in benches if b.kind == "exact"), None)
    rows = []
    for bench in benches:
        agree = {}
        if exact is not None and bench is not exact:
            agree = agreement(bench.decisions, exact.decisions)
        for threads, tally in bench.tally.items():
            vps = tally["vectors"] / tally["seconds"]
            rows.append({
                "clusters": n,
                "kind": bench.kind,
                "approximate": bench.approximate,
                "faiss_threads": threads_label(threads),
                "batch": batch,
                "observations": int(tally["vectors"]),
                "seconds": round(tally["seconds"], 3),
                "vectors_per_second": round(vps, 1),
                "us_per_vector": round(1e6 * tally["seconds"] / tally["vectors"], 1),
                "search_fraction": round(tally["search"] / tally["seconds"], 3),
                "upsert_fraction": round(tally["upsert"] / tally["seconds"], 3),
                "created_fraction": round(tally["created"] / tally["vectors"], 3),
                "sgemm_gflops": round(ref, 1),
                "sgemm_gflops_range": [round(min(refs), 1), round(max(refs), 1)],
                "exact_bound_vps": round(bound, 1),
                "vs_exact_bound": round(vps / bound, 3),
                "load_seconds": round(bench.load_seconds, 2),
                **agree,
            })
    return rows


def agreement(decisions: Sequence[Decision], exact: Sequence[Decision]) -> dict[str, Any]:
    """How often an approximate engine decided as the exact one did on the same observations.

    ``agreement``: same cluster and same new/update outcome; ``missed``: the exact engine updated
    a cluster where the approximate one created a new one (a split identity).
    """
    pairs = list(zip(decisions, exact, strict=True))
    same = sum(a.cluster_key == e.cluster_key and a.created == e.created for a, e in pairs)
    missed = sum(a.created and not e.created for a, e in pairs)
    return {"agreement": round(same / len(pairs), 4), "missed": missed}


def engine_throughput(sizes: Sizes, sgemm: Sgemm, device: str) -> list[dict[str, Any]]:
    """Engine ``step`` throughput per clusters x index kind x batch x FAISS threads.

    All engines of one cluster count are loaded with the same clusters and step the same
    observations in lockstep, so their rates compare directly and the approximate engines'
    decisions can be checked against the exact engine's, observation by observation.
    """
    rows: list[dict[str, Any]] = []
    for n in sizes.engine_clusters:
        workload = make_workload(n, sizes, seed=n)
        benches = [make_bench(kind, workload.clusters, device) for kind in sizes.engine_kinds]
        for batch, observations in workload.segments.items():
            refs = run_segment(benches, batch, observations, sizes, sgemm)
            for row in segment_rows(benches, n, batch, refs):
                rows.append(row)
                log(f"engine {row['kind']} n={n:,} b={batch} threads={row['faiss_threads']}:"
                    f" {row['vectors_per_second']:,.0f} vec/s"
                    f" (search {row['search_fraction']:.0%} of step)")
        del benches, workload
    return rows


# -- 4. the engine-versus-loop target ----------------------------------------------------------


def leader_loop(x: np.ndarray, threshold: float) -> np.ndarray:
    """The baseline: one vector at a time against every current representative, in numpy.

    SIMPLE_AVERAGE like the engine: a cluster keeps the running sum of its unit vectors and its
    representative is that sum normalised. Returns each vector's cluster number.
    """
    units = unit_rows(x)
    reps = np.empty_like(units)  # at most one cluster per vector; pages are touched lazily
    sums = np.empty_like(units)
    labels = np.empty(len(units), dtype=np.int64)
    k = 0
    for i, v in enumerate(tqdm(units, desc="numpy loop", leave=False, mininterval=0.5,
                               disable=not sys.stderr.isatty())):
        if k:
            sims = reps[:k] @ v
            j = int(sims.argmax())
            if sims[j] >= threshold:
                sums[j] += v
                reps[j] = sums[j] / np.float32(np.linalg.norm(sums[j]))
                labels[i] = j
                continue
        reps[k] = sums[k] = v
        labels[i] = k
        k += 1
    return labels


def loop_target(sizes: Sizes, device: str) -> dict[str, Any]:
    """``fvc evaluate`` (exact index, MemoryStore, batch 512) vs ``leader_loop`` on one scene.

    Each of ``loop_rounds`` rounds runs the engine once per FAISS thread setting and the loop
    once, interleaved; rates are the best of the rounds and ``ratio_median`` is the median of
    the per-round ratios. ``search_fraction`` is the share of the engine's run spent in search.
    """
    from app.offline.evaluate import evaluate
    from app.offline.quality import score_all
    from app.offline.synth import make_scene
    from app.store import MemoryStore

    log(f"loop target: scene of {sizes.scene_n:,} vectors, ~{sizes.scene_identities:,} people")
    scene = make_scene(sizes.scene_n, seed=11, dim=DIM, identities=sizes.scene_identities)
    streams = sorted({str(s) for s in scene.s.tolist()})
    config = ClusteringConfig.for_threshold(THRESHOLD, streams)
    runs: dict[int, list[dict[str, Any]]] = {t: [] for t in sizes.threads}
    loop_rates: list[float] = []
    labels = np.empty(0, dtype=np.int64)
    for _ in range(sizes.loop_rounds):
        for position, threads in enumerate(sizes.threads):
            index = make_index("exact", device)
            stages = StageTimer(index)
            with (
                faiss_threads(threads),
                progress(scene.n, "fvc evaluate") as bar,
            ):
                figures = evaluate(scene, config, Engine(config, index), MemoryStore(),
                                   batch_size=512, progress=bar.update)
            figures["search_fraction"] = stages.seconds["search"] / figures["seconds"]
            runs[threads].append(figures)
            log(f"loop target: engine (threads {threads_label(threads)})"
                f" {scene.n / figures['seconds']:,.0f} vec/s")
            if position == 0:
                time.sleep(SETTLE_S)  # numpy's BLAS threads were idle for the engine too
                began = time.perf_counter()
                labels = leader_loop(scene.X, THRESHOLD)
                loop_rates.append(scene.n / (time.perf_counter() - began))
                time.sleep(SETTLE_S)  # the loop's BLAS threads settle before the next engine
                log(f"loop target: numpy loop {loop_rates[-1]:,.0f} vec/s")
    loop = score_all(scene.y, labels)
    rows = []
    for threads, figures_list in runs.items():
        rates = [scene.n / f["seconds"] for f in figures_list]
        search = statistics.median(f["search_fraction"] for f in figures_list)
        last = figures_list[-1]
        rows.append({
            "faiss_threads": threads_label(threads),
            "engine_vps": round(max(rates), 1),
            "loop_vps": round(max(loop_rates), 1),
            "ratio": round(max(rates) / max(loop_rates), 2),
            "ratio_median": round(
                statistics.median(e / w for e, w in zip(rates, loop_rates, strict=True)), 2
            ),
            "search_fraction": round(search, 3),
            "engine_clusters": int(last["clusters"]),
            "loop_clusters": int(loop["clusters"]),
            "same_clusters": int(last["clusters"]) == int(loop["clusters"]),
            "engine_bcubed_precision": round(float(last["bcubed_precision"]), 4),
            "engine_bcubed_recall": round(float(last["bcubed_recall"]), 4),
        })
    default = rows[0]
    return {
        "n": scene.n,
        "identities": int(len(np.unique(scene.y))),
        "threshold": THRESHOLD,
        "batch": 512,
        "rounds": sizes.loop_rounds,
        "engine_vps": default["engine_vps"],
        "loop_vps": default["loop_vps"],
        "ratio": default["ratio"],
        "ratio_median": default["ratio_median"],
        "same_clusters": all(r["same_clusters"] for r in rows),
        "loop_bcubed_precision": round(float(loop["bcubed_precision"]), 4),
        "loop_bcubed_recall": round(float(loop["bcubed_recall"]), 4),
        "engines": rows,
    }


# -- report -------------------------------------------------------------------------------------


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Each target's figure and whether it is met (search share: FAISS's default threads)."""
    out: dict[str, Any] = {}
    if "search" in report:
        at_512 = {r["faiss_threads"]: r for r in report["search"] if r["batch"] == 512}
        default = at_512.get(threads_label(0))
        share = default["faiss_share"] if default else None
        out["search_share_b512"] = share
        out["search_share_b512_median"] = default["faiss_share_median"] if default else None
        out["search_share_met"] = share is not None and share >= SEARCH_SHARE_TARGET
        for label, row in at_512.items():
            if row is not default:
                out[f"search_share_b512_threads_{label}"] = row["faiss_share"]
    if "loop" in report:
        loop = report["loop"]
        out["loop_ratio"] = loop["ratio"]
        out["loop_ratio_median"] = loop["ratio_median"]
        out["loop_ratio_met"] = loop["ratio"] >= LOOP_RATIO_TARGET
        for row in loop["engines"][1:]:
            out[f"loop_ratio_threads_{row['faiss_threads']}"] = row["ratio"]
        out["loop_same_clusters"] = loop["same_clusters"]
    if "million" in report:
        million = report["million"]
        out["million_approx_vps"] = million["approx_vps_best"]
        out["million_vps_met"] = million["vps_met"]
        out["million_agreement"] = million["agreement"]
        out["million_agreement_met"] = million["agreement_met"]
    if "overhead" in report:
        over = report["overhead"]
        for row in over["rows"]:
            out[f"overhead_us_at_{row['clusters']}"] = row["outside_us_per_vector"]
        out["overhead_met"] = over["outside_met"]
        out["gc_full_collection_ms"] = over.get("gc_full_collection_ms")
        out["gc_settled_collection_ms"] = over.get("gc_settled_collection_ms")
        out["gc_met"] = over["gc_met"]
        out["rss_bytes_per_cluster"] = over.get("rss_bytes_per_cluster")
        out["bytes_met"] = over["bytes_met"]
    return out


def table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: ``columns`` are (key, header) pairs."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    body = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, (_, h) in enumerate(columns)]
    lines = [title, "  ".join(h.rjust(w) for (_, h), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    """All tables as text."""
    machine = report["machine"]
    parts = ["1. Machine reference\n" + "\n".join(f"  {k}: {v}" for k, v in machine.items())]
    if "search" in report:
        parts.append(table(
            f"2. Exact search at {report['search'][0]['clusters']:,} clusters, d={DIM}, "
            f"k={SEARCH_K} (GFLOP/s = 2*b*n*d/time; share = of the sgemm measured alongside)",
            [("faiss_threads", "threads"), ("batch", "batch"), ("sgemm_gflops", "sgemm"),
             ("faiss_us_per_call", "faiss us"),
             ("faiss_gflops", "faiss GF/s"), ("faiss_share", "share"),
             ("faiss_share_median", "share med"), ("faiss_blas_gflops", "BLAS-forced GF/s"),
             ("faiss_blas_share", "share"), ("numpy_index_gflops", "NumpyIndex GF/s"),
             ("numpy_index_share", "share"), ("numpy_matmul_gflops", "q@T.T GF/s"),
             ("numpy_matmul_share", "share")],
            report["search"],
        ))
    if "engine" in report:
        parts.append(table(
            f"3. Engine.step throughput, d={DIM}, threshold {THRESHOLD}"
            " (bound = vectors/s of an exact search at the sgemm rate measured alongside)",
            [("clusters", "clusters"), ("kind", "index"), ("faiss_threads", "threads"),
             ("batch", "batch"),
             ("observations", "obs"), ("vectors_per_second", "vec/s"),
             ("us_per_vector", "us/vec"), ("search_fraction", "search"),
             ("upsert_fraction", "upsert"), ("created_fraction", "new"),
             ("sgemm_gflops", "sgemm"), ("exact_bound_vps", "bound vec/s"),
             ("vs_exact_bound", "of bound"), ("agreement", "agree"), ("missed", "missed"),
             ("load_seconds", "load s")],
            report["engine"],
        ))
    if "loop" in report:
        parts.append(table(
            f"4. Loop target: fvc evaluate (exact, MemoryStore, batch 512) vs numpy loop on"
            f" {report['loop']['n']:,} vectors of {report['loop']['identities']:,} people"
            f" (loop: precision {report['loop']['loop_bcubed_precision']},"
            f" recall {report['loop']['loop_bcubed_recall']})",
            [("faiss_threads", "threads"), ("engine_vps", "engine vec/s"),
             ("loop_vps", "loop vec/s"), ("ratio", "ratio"), ("ratio_median", "ratio med"),
             ("search_fraction", "search"), ("engine_clusters", "engine clusters"),
             ("loop_clusters", "loop clusters"), ("same_clusters", "same"),
             ("engine_bcubed_precision", "precision"), ("engine_bcubed_recall", "recall")],
            report["loop"]["engines"],
        ))
    if "million" in report:
        from million import render as render_million

        parts.append(render_million(report["million"]))
    if "overhead" in report:
        from overhead import render as render_overhead

        parts.append(render_overhead(report["overhead"]))
    parts.append("Targets\n" + "\n".join(f"  {k}: {v}" for k, v in report["targets"].items()))
    return "\n\n".join(parts)


SECTIONS = ("search", "engine", "loop")
# run only when named in --only: minutes and several GiB
EXTRA_SECTIONS = ("million", "overhead")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurements and print the tables (or one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"),
                        help="FAISS device (default cpu: shares are against the CPU's sgemm)")
    parser.add_argument("--only", default=",".join(SECTIONS), metavar="LIST",
                        help=f"comma-separated sections to run (default: {','.join(SECTIONS)})")
    parser.add_argument("--scene-n", type=int, metavar="N",
                        help="vectors in the loop-comparison scene")
    parser.add_argument("--scene-identities", type=int, metavar="K",
                        help="people in the loop-comparison scene")
    parser.add_argument("--million-clusters", type=int, default=1_000_000, metavar="N",
                        help="clusters of the million section (default 1,000,000)")
    parser.add_argument("--million-observations", type=int, default=4_096, metavar="N",
                        help="observations both engines step in the million section")
    parser.add_argument("--million-batch", type=int, default=512, metavar="B")
    parser.add_argument("--million-kind", default="ivf", choices=("ivf", "ivfpq", "hnsw"),
                        help="approximate index compared with exact search (default ivf)")
    parser.add_argument("--million-candidates", type=int, metavar="C",
                        help="candidates re-ranked exactly per query (default: the kind's)")
    parser.add_argument("--million-nprobe", type=int, metavar="P",
                        help="IVF lists searched per query (default: the kind's, 16 or 32)")
    parser.add_argument("--overhead-clusters", default="10000,100000,1000000", metavar="LIST",
                        help="cluster counts of the overhead section (default 10k,100k,1M)")
    parser.add_argument("--overhead-observations", type=int, default=1_024, metavar="N",
                        help="observations stepped per count in the overhead section")
    parser.add_argument("--million-model", default="spectrum", choices=("spectrum", "random"),
                        help="identity centres: 1/i spectrum (face-like) or isotropic")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    known = SECTIONS + EXTRA_SECTIONS
    unknown = sorted(set(only) - set(known))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    sizes = QUICK if args.quick else FULL
    if args.scene_n:
        sizes = replace(sizes, scene_n=args.scene_n)
    if args.scene_identities:
        sizes = replace(sizes, scene_identities=args.scene_identities)
    began = time.perf_counter()
    sgemm = Sgemm()
    report: dict[str, Any] = {"quick": args.quick, "machine": machine_reference(sizes, sgemm)}
    log(f"sgemm reference {report['machine']['sgemm_gflops']} GFLOP/s")
    single_threaded_numpy_blas()  # as every fvc command runs (app/threads.py)
    if "search" in only:
        report["search"] = search_share(sizes, sgemm, args.device)
    if "engine" in only:
        report["engine"] = engine_throughput(sizes, sgemm, args.device)
    if "loop" in only:
        report["loop"] = loop_target(sizes, args.device)
    if "million" in only:
        from million import million

        report["million"] = million(
            args.million_clusters, args.million_observations, args.million_batch,
            args.million_model, sizes.threads, args.million_kind,
            nprobe=args.million_nprobe, candidates=args.million_candidates,
        )
    if "overhead" in only:
        from overhead import overhead

        counts = tuple(int(c) for c in args.overhead_clusters.split(",") if c.strip())
        report["overhead"] = overhead(counts, args.overhead_observations, args.million_batch)
    report["targets"] = targets(report)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(report) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
