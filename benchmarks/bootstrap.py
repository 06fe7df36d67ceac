"""Worker bootstrap from Redis: ``store.load_all()`` chunks into an engine and its index.

Writes ``--n`` clusters (default 1,000,000, d = 512) into a throwaway namespace of a real Redis,
in the store's own format (``encode_cluster`` into the clusters hash, versions beside it, as
the commit script leaves them), then times what ``Runtime.bootstrap`` does: every
``load_all()`` chunk handed to ``Engine.load``. The namespace is deleted afterwards, also on
failure. Run from the repository root with the local stack up (``fvc local up``)::

    .venv/bin/python benchmarks/bootstrap.py                     # 1M clusters, exact index
    .venv/bin/python benchmarks/bootstrap.py --n 100000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

from app.config import ClusteringConfig  # noqa: E402
from app.engine import Cluster, ClusterId, Engine  # noqa: E402
from app.index import make_index  # noqa: E402
from app.store.codec import encode_cluster  # noqa: E402
from app.store.redis import RedisStore  # noqa: E402

STREAMS = ("camera_0", "camera_1", "camera_2", "camera_3")
START_MS = 1_700_000_000_000
WRITE_CHUNK = 5_000  # clusters per pipelined HSET pair
TARGET_SECONDS = 60.0


def log(message: str) -> None:
    """One progress line on stderr."""
    print(f"[bootstrap] {message}", file=sys.stderr, flush=True)


def write_clusters(client: redis.Redis, namespace: str, n: int, dim: int) -> float:
    """``n`` random clusters into the namespace's hashes; returns the seconds it took."""
    rng = np.random.default_rng(n)
    clusters_key, versions_key = f"{{{namespace}}}:clusters", f"{{{namespace}}}:versions"
    began = time.perf_counter()
    for lo in range(0, n, WRITE_CHUNK):
        count = min(WRITE_CHUNK, n - lo)
        states = rng.standard_normal((count, dim), dtype=np.float32)
        blobs, versions = {}, {}
        for row in range(count):
            i = lo + row
            stream = STREAMS[i % len(STREAMS)]
            cluster = Cluster.from_state(
                id=ClusterId(START_MS, f"boot{i}", stream), state=states[row],
                num_observations=1 + i % 20, realized=True, first_time=START_MS,
                last_time=START_MS, streams=(stream,), retention_ms=0, version=1, pending=0,
                pending_since=START_MS, last_emit_time=START_MS, emitted=True,
            )
            blobs[cluster.key] = encode_cluster(cluster)
            versions[cluster.key] = 1
        pipe = client.pipeline(transaction=False)
        pipe.hset(clusters_key, mapping=blobs)
        pipe.hset(versions_key, mapping=versions)
        pipe.execute()
    return time.perf_counter() - began


async def time_load(url: str, namespace: str, index: str | None, chunk: int) -> dict[str, Any]:
    """Seconds of ``load_all`` alone (index None) or into an engine with a ``index`` index."""
    store = RedisStore(url, namespace, socket_timeout=120.0)
    await store.start()
    engine = None
    if index is not None:
        config = ClusteringConfig.for_threshold(0.5, STREAMS)
        engine = Engine(config, make_index(index, "cpu"))
    total = 0
    began = time.perf_counter()
    try:
        expected = await store.count()
        with engine.index.loading(expected) if engine is not None else nullcontext():
            async for clusters in store.load_all(chunk):
                if engine is not None:
                    engine.load(clusters, force=True)
                total += len(clusters)
    finally:
        await store.close()
    seconds = time.perf_counter() - began
    return {"clusters": total, "seconds": round(seconds, 2),
            "clusters_per_second": round(total / seconds)}


def main(argv: Sequence[str] | None = None) -> int:
    """Write, time the loads, delete; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="clusters (default 1,000,000)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--redis", default=os.environ.get("FVC_REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    parser.add_argument("--chunk", type=int, default=10_000,
                        help="load_all chunk size (default 10,000, the worker's)")
    parser.add_argument("--index", default="exact,ivf",
                        help="comma-separated index kinds to load into (default exact,ivf)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    namespace = f"fvc-bench-bootstrap-{os.getpid()}"
    client = redis.Redis.from_url(args.redis)
    memory_before = int(client.info("memory")["used_memory"])
    report: dict[str, Any] = {"n": args.n, "dim": args.dim, "chunk": args.chunk,
                              "load_average": [round(x, 2) for x in os.getloadavg()]}
    try:
        log(f"writing {args.n:,} clusters (d={args.dim}) to namespace {namespace}")
        report["write_seconds"] = round(write_clusters(client, namespace, args.n, args.dim), 1)
        grown = int(client.info("memory")["used_memory"]) - memory_before
        report["redis_bytes_per_cluster"] = round(grown / args.n)
        runs = {"decode_only": None} | {kind: kind for kind in args.index.split(",") if kind}
        for name, kind in runs.items():
            log(f"load_all into {name}")
            report[name] = asyncio.run(time_load(args.redis, namespace, kind, args.chunk))
            log(f"{name}: {report[name]}")
    finally:
        client.unlink(*(f"{{{namespace}}}:{part}" for part in
                        ("clusters", "versions", "changes", "outbox", "offsets")))
        client.close()
    report["target_met"] = all(
        report[k]["seconds"] < TARGET_SECONDS for k in report if isinstance(report[k], dict)
    )
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
