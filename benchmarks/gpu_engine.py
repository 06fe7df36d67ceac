"""The engine's ceiling on a GPU: ``Engine.step`` with its search done by an exact torch index.

The FAISS GPU wheel with its CUDA libraries is too large to carry to the GPU machines the
project is measured on, while torch is installed there; so this benchmark backs the engine's
``VectorIndex`` contract with an exact torch search on the device (``TorchIndex``, here and
nowhere in the product: fvc itself does not depend on torch). The representatives live on the
device in float32; with ``--fp16`` also in half precision, as ``FVC_GPU_FP16`` keeps them:
``RERANK`` candidates from the fp16 product are re-ranked in float32 (``--check`` measures
whether decisions stay those of exact search).

For each batch size the engine, loaded with ``--clusters`` face-like clusters (the ``spectrum``
model of ``million.py``), steps ``--observations`` re-sightings; the figures are vectors/s,
the search's share, and microseconds per vector outside the search. ``--check N`` steps the
first N observations again on a CPU exact engine and reports the share of equal decisions.
Without torch (or without a GPU) it runs on the CPU with numpy, which is how it is
smoke-tested::

    python benchmarks/gpu_engine.py --clusters 1000000 --batches 512 2048 --fp16 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from engine import SEARCH_K, STREAMS, THRESHOLD, log  # sets up sys.path
from million import LOAD_CHUNK, make_centres, make_clusters, make_observations

from app.config import ClusteringConfig
from app.engine import Decision, Engine
from app.index.numpy_index import NumpyIndex
from app.index.table import RepresentativeTable, TableBacked
from app.threads import single_threaded_numpy_blas

RERANK = 64  # fp16 candidates re-ranked in float32, as FaissIndex(fp16=True) does
TARGET_VPS = 50_000  # at 1M clusters with exact decisions, on an H100/H200


class TorchIndex(TableBacked):
    """Exact top-k on a torch device, the rows kept in slot order as the table keeps them.

    fp32 rows always; with ``fp16``, half-precision copies find ``RERANK`` candidates and the
    fp32 rows re-rank them on the device.
    """

    def __init__(self, device: str, fp16: bool) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.fp16 = fp16
        self.table = RepresentativeTable()
        self._rows = torch.empty((0, 0), dtype=torch.float32, device=self.device)
        self._half = torch.empty((0, 0), dtype=torch.float16, device=self.device)

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Write the rows in the table, then the same slots on the device."""
        slots = self.table.upsert(keys, vectors)
        self._fit(len(self.table))
        index = self.torch.as_tensor(slots, device=self.device)
        values = self.torch.as_tensor(self.table.vectors[slots], device=self.device)
        self._rows[index] = values
        if self.fp16:
            self._half[index] = values.half()

    def remove(self, keys: Sequence[str]) -> list[tuple[str, int, int]]:
        """Swap-remove in the table, and move the same rows on the device."""
        moved = self.table.remove(keys)
        for _, old, new in moved:
            self._rows[new] = self._rows[old]
            if self.fp16:
                self._half[new] = self._half[old]
        return moved

    @property
    def exact_top_k(self) -> bool:
        """fp32 search is exact; fp16 candidates are re-ranked without a second exact pass."""
        return not self.fp16

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` slots with float32 similarities."""
        n = len(self.table)
        q = self.torch.as_tensor(np.ascontiguousarray(queries), device=self.device)
        if not self.fp16:
            values, slots = self.torch.topk(q @ self._rows[:n].T, min(k, n), dim=1)
            return top_k_pad(values.cpu().numpy(), slots.cpu().numpy(), k)
        _, candidates = self.torch.topk(q.half() @ self._half[:n].T, min(RERANK, n), dim=1)
        exact = self.torch.bmm(self._rows[candidates], q[:, :, None])[:, :, 0]
        values, where = self.torch.topk(exact, min(k, candidates.shape[1]), dim=1)
        slots = self.torch.gather(candidates, 1, where)
        return top_k_pad(values.cpu().numpy(), slots.cpu().numpy(), k)

    def _fit(self, rows: int) -> None:
        """Room for ``rows`` rows on the device (doubling)."""
        held = self._rows.shape[0]
        if rows <= held:
            return
        size = (max(rows, 2 * held), self.table.dim)
        rows32 = self.torch.zeros(size, dtype=self.torch.float32, device=self.device)
        rows32[:held] = self._rows[:held] if held else 0.0
        self._rows = rows32
        if self.fp16:
            half = self.torch.zeros(size, dtype=self.torch.float16, device=self.device)
            half[:held] = self._half[:held] if held else 0.0
            self._half = half

    def synchronize(self) -> None:
        """Wait for the device, so timings include its work."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def top_k_pad(values: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad a top-min(k, n) answer to ``k`` columns with -inf / -1, as the contract asks."""
    b, got = values.shape
    out_d = np.full((b, k), -np.inf, dtype=np.float32)
    out_i = np.full((b, k), -1, dtype=np.int64)
    out_d[:, :got], out_i[:, :got] = values, slots
    return out_d, out_i


def pick_index(device: str, fp16: bool) -> tuple[Any, str]:
    """A torch index on ``device`` (``auto``: CUDA when present), or numpy without torch."""
    if importlib.util.find_spec("torch") is None:
        return NumpyIndex(), "cpu (numpy: torch is not installed)"
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return TorchIndex(device, fp16), f"{device} ({name}, torch {torch.__version__})"


class Timed:
    """The index's search, timed (device work included)."""

    def __init__(self, index: Any) -> None:
        self.index, self.seconds = index, 0.0
        search = index.search

        def timed_search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            began = time.perf_counter()
            result = search(queries, k)
            getattr(index, "synchronize", lambda: None)()
            self.seconds += time.perf_counter() - began
            return result

        index.search = timed_search


def load(engine: Engine, clusters: list[Any]) -> float:
    """Load the clusters in bootstrap-sized chunks; returns seconds."""
    began = time.perf_counter()
    with engine.index.loading(len(clusters)):
        for lo in range(0, len(clusters), LOAD_CHUNK):
            engine.load(clusters[lo : lo + LOAD_CHUNK])
    return time.perf_counter() - began


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every batch size on a fresh engine holding the same clusters."""
    rng = np.random.default_rng(args.seed)
    centres = make_centres(rng, args.clusters, "spectrum")
    stream = make_observations(centres, rng, args.observations, "spectrum")
    config = ClusteringConfig.for_threshold(THRESHOLD, STREAMS)
    rows, label = [], ""
    decisions: list[Decision] = []
    for batch in args.batches:
        clusters = make_clusters(centres.copy(), np.random.default_rng(args.seed))
        index, label = pick_index(args.device, args.fp16)
        timer = Timed(index)
        engine = Engine(config, index, search_k=SEARCH_K)
        load_seconds = load(engine, clusters)
        engine.index.search(np.stack([o.vector for o in stream[:batch]]), SEARCH_K)  # warm
        timer.seconds, decisions = 0.0, []
        began = time.perf_counter()
        for lo in range(0, len(stream), batch):
            decisions += engine.step(stream[lo : lo + batch]).decisions
        seconds = time.perf_counter() - began
        rows.append({
            "batch": batch,
            "vectors_per_second": round(len(stream) / seconds),
            "search_share": round(timer.seconds / seconds, 3),
            "outside_us_per_vector": round(1e6 * (seconds - timer.seconds) / len(stream), 1),
            "load_seconds": round(load_seconds, 1),
        })
        log(f"gpu engine batch {batch}: {rows[-1]['vectors_per_second']:,} vec/s")
    report = {"device": label, "clusters": args.clusters, "fp16": args.fp16, "rows": rows,
              "target_vectors_per_second": TARGET_VPS}
    if args.check:
        report["decisions_equal_cpu_exact"] = check(args, centres, stream, decisions, config)
    return report


def check(
    args: argparse.Namespace, centres: np.ndarray, stream: list[Any],
    decisions: list[Decision], config: ClusteringConfig,
) -> float:
    """Share of the last run's first ``--check`` decisions a CPU exact engine also makes."""
    engine = Engine(config, NumpyIndex(), search_k=SEARCH_K)
    load(engine, make_clusters(centres.copy(), np.random.default_rng(args.seed)))
    batch = args.batches[-1]
    exact: list[Decision] = []
    for lo in range(0, args.check, batch):
        exact += engine.step(stream[lo : min(args.check, lo + batch)]).decisions
    same = sum(
        (a.cluster_key, a.created) == (b.cluster_key, b.created)
        for a, b in zip(decisions, exact, strict=False)
    )
    return round(same / len(exact), 5)


def main(argv: list[str] | None = None) -> int:
    """Parse, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=1_000_000)
    parser.add_argument("--observations", type=int, default=20_480)
    parser.add_argument("--batches", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--device", default="auto", help="torch device: auto, cuda or cpu")
    parser.add_argument("--fp16", action="store_true",
                        help="fp16 representatives on the device, float32 re-rank")
    parser.add_argument("--check", type=int, default=0, metavar="N",
                        help="compare the first N decisions with a CPU exact engine")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    single_threaded_numpy_blas()  # as every fvc command runs (app/threads.py)
    report = run(args)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['device']}, {args.clusters:,} clusters, fp16 {args.fp16}")
    for row in report["rows"]:
        print(f"  batch {row['batch']:>6,}: {row['vectors_per_second']:>8,} vec/s, search "
              f"{row['search_share']:.0%}, outside {row['outside_us_per_vector']} us/vector")
    if "decisions_equal_cpu_exact" in report:
        print(f"  decisions equal to CPU exact: {report['decisions_equal_cpu_exact']:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
