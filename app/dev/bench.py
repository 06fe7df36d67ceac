"""``fvc bench``: end-to-end throughput and latency through the real local Kafka and Redis.

One run, side by side: the engine alone on the same vectors in this process (the reference),
then one worker fed msgpack and JSON as fast as possible (sustained vectors/s), then at half
that rate with send-time timestamps (produce-to-event latency). The scene: ``clusters``
identities registered first (one vector each), then noisy re-sightings of them, so every
measured vector is searched against ``clusters`` representatives and updates one of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from app.config import ClusteringConfig
from app.dev.localrun import FVC, LocalRun, say
from app.engine import Engine, Observation
from app.engine.window import batches
from app.index import make_index
from app.kafka_client import make_consumer
from app.offline.produce import Rows, produce_scene
from app.store import store_for

CAMERAS = 4
THRESHOLD = 0.5
FRAME_MS = 40
MERGE_INTERVAL_MS = 5000  # with the improved mode: its merge pass, in event time
SIGHTING_COSINE = 0.8  # cosine of a re-sighting to its identity's centre
WORKDIR = Path(".fvc/bench")
LISTENER_START_S = 3.0  # the latency listener's time to join and reach the end of the events
SETUP_S = 2.0  # then the producer's: topics checked, connected, partition leaders known


@dataclass(frozen=True)
class BenchOptions:
    """Sizes of one benchmark run."""

    clusters: int = 10_000
    n: int = 20_000
    dim: int = 512
    latency_n: int = 4_000
    seed: int = 1
    workers: int = 1
    ingest: str = "bulk"  # FVC_INGEST of the workers
    output_format: str = "msgpack"  # FVC_OUTPUT_FORMAT of the workers
    improved: bool = False  # the improved mode and its merge pass (implied by deferral_ms)
    deferral_ms: int = 0  # improved_mode.deferral_ms (0: decide each vector when it comes)


def sightings(rng: np.random.Generator, centres: np.ndarray, n: int, start_ms: int) -> Rows:
    """``n`` noisy re-sightings of random identities, one every ``FRAME_MS`` per camera."""
    k, d = centres.shape
    labels = rng.integers(0, k, n)
    spread = np.sqrt(1.0 / SIGHTING_COSINE**2 - 1.0) / np.sqrt(d)
    x = centres[labels] + spread * rng.standard_normal((n, d)).astype(np.float32)
    return _rows(x.astype(np.float32), labels, start_ms)


def _rows(x: np.ndarray, labels: np.ndarray, start_ms: int) -> Rows:
    n = len(x)
    index = np.arange(n)
    t = start_ms + (index // CAMERAS) * FRAME_MS
    s = np.array([f"camera_{i % CAMERAS}" for i in range(n)])
    keys = [f"{ms}_0" for ms in t.tolist()]
    return Rows(x, t.astype(np.int64), s, keys, y=labels)


def _paced(rows: Rows, rate: float, start_ms: int) -> Rows:
    """The rows with event times at their send times when sent at ``rate``/s from ``start_ms``."""
    t = start_ms + (np.arange(rows.n) * 1000.0 / rate).astype(np.int64)
    keys = [f"{ms}_{i}" for i, ms in enumerate(t.tolist())]
    return Rows(rows.X, t, rows.s, keys, y=rows.y)


def observations(rows: Rows) -> list[Observation]:
    """The rows as the engine sees them after decoding."""
    return [Observation(x, str(s), k, int(t)) for x, s, k, t in
            zip(rows.X, rows.s, rows.keys, rows.t.tolist(), strict=True)]


def bench_config(improved: bool = False, deferral_ms: int = 0) -> dict:
    """Every cluster realized at once, so each vector updates a cluster that emits an event.

    ``improved``: the improved mode with its merge pass every 5 s of event time; with
    ``deferral_ms`` too, it decides windows of that much event time at once (docs/deferral.md),
    the merge pass then every whole number of windows nearest 5 s above.
    """
    streams = [
        {"stream_id": f"camera_{i}", "fv_field_selector": {"feature_vector_path": "features"},
         "reg_stream_config": {"reg_threshold": THRESHOLD}}
        for i in range(CAMERAS)
    ]
    clustering: dict = {"method": "SIMPLE_AVERAGE"}
    if improved or deferral_ms:
        window = deferral_ms or MERGE_INTERVAL_MS
        interval = window * -(-MERGE_INTERVAL_MS // window)  # whole windows, rounded up
        clustering["improved_mode"] = {"enabled": True, "deferral_ms": deferral_ms}
        clustering["cluster_merging"] = {
            "initial_threshold": THRESHOLD, "threshold_discount_rate": 1.0,
            "min_threshold": THRESHOLD, "time_interval_ms": interval,
        }
    return {"clustering_config": clustering, "input_stream_configs": streams}


def engine_alone(config: ClusteringConfig, warm: Rows, measured: Rows, batch: int) -> float:
    """Vectors/s of the engine alone (exact index) on the measured rows, after the warm rows."""
    engine = Engine(config, make_index("exact", "cpu"))
    warm_obs, obs = observations(warm), observations(measured)
    for chunk in batches(warm_obs, batch, config.deferral_ms, config.max_window_size):
        engine.step(chunk)
    began = time.perf_counter()
    for chunk in batches(obs, batch, config.deferral_ms, config.max_window_size):
        engine.step(chunk)
    return len(obs) / (time.perf_counter() - began)


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of a process so far; None if it cannot be read."""
    try:
        used = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return used.user + used.system


def service_pids() -> dict[str, int]:
    """Pids of the local Kafka and Redis that ``fvc local`` runs (none when they are external)."""
    status = subprocess.run(  # noqa: S603 - fixed argv: fvc's own entry point beside python
        [FVC, "local", "status", "--json"], capture_output=True, text=True
    )
    try:
        services = json.loads(status.stdout)
    except json.JSONDecodeError:
        return {}
    return {name: s["pid"] for name, s in services.items() if s.get("pid")}


class Bench:
    """The worker side of a run."""

    def __init__(self, run: LocalRun) -> None:
        self.run = run
        self.settings = run.settings

    def progress(self) -> tuple[int, bool]:
        """Input records stored so far, and whether every event they caused has been published.

        The count comes from the partition offsets stored with the state; the events are all
        published when the outbox is empty.
        """

        async def read() -> tuple[dict[str, int], bool]:
            store = store_for(self.settings)
            await store.start()
            try:
                return await store.offsets(), not await store.outbox_pending(1)
            finally:
                await store.close()

        offsets, published = asyncio.run(read())
        return sum(offset + 1 for offset in offsets.values()), published

    def feed(self, rows: Rows, fmt: str, rate: float = 0.0, timeout: float = 600.0,
             send_from: float | None = None) -> float:
        """Send ``rows`` and wait until all are stored and their events published.

        Returns the seconds from the first send. A phase so ends with nothing left over to slow
        the next one.
        """
        target = self.progress()[0] + rows.n
        began = time.perf_counter()
        produce_scene(self.settings, rows, config=self.run.config, fmt=fmt, rate=rate,
                      send_from=send_from)
        deadline = began + timeout
        while (done := self.progress())[0] < target or not done[1]:
            if time.perf_counter() > deadline:
                message = f"the worker stored {done[0]} of {target} records in time"
                raise RuntimeError(message)
            time.sleep(0.05)
        return time.perf_counter() - began

    def stages(self) -> dict[str, float]:
        """Seconds per stage so far, and batches, summed over the workers (from /stats)."""
        total: dict[str, float] = {"batches": 0}
        for stats in self.run.each_json("/stats"):
            for stage, seconds in stats["stage_seconds"].items():
                total[stage] = total.get(stage, 0.0) + seconds
            total["batches"] += stats["batches"]
        return total

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the workers, Redis, Kafka and this process (the producer).

        On a machine shared by all of them, these say who had the cores during a phase.
        """
        used = {"worker": sum(s.get("cpu_seconds", 0.0) for s in self.run.each_json("/stats"))}
        for name, pid in service_pids().items():
            seconds = cpu_seconds(pid)
            if seconds is not None:
                used[name] = seconds
        used["producer"] = time.process_time()
        return used

    def round_trips(self) -> dict[str, int]:
        """Redis calls so far by operation, summed over the workers (from /stats)."""
        total: dict[str, int] = {}
        for stats in self.run.each_json("/stats"):
            for operation, calls in stats.get("store_round_trips", {}).items():
                total[operation] = total.get(operation, 0) + calls
        return total

    def latencies(self, rows: Rows, rate: float) -> np.ndarray:
        """Produce-to-event latency (ms) of each event caused by ``rows`` sent at ``rate``/s."""
        seen: list[float] = []
        # stamped with the times they will be sent at, once the listener and producer are up
        send_from = time.time() + LISTENER_START_S + SETUP_S
        rows = _paced(rows, rate, int(send_from * 1000))
        first = int(rows.t[0])
        stop = threading.Event()

        def listen() -> None:
            consumer = make_consumer(self.settings)
            consumer.subscribe([self.settings.output_topic])
            try:
                while not stop.is_set():
                    # poll() returns as soon as one event is there; consume(n, timeout) would
                    # hold early arrivals until n came or the timeout ended, adding to each
                    m = consumer.poll(0.2)
                    if m is None or m.error():
                        continue
                    stamp = m.timestamp()[1]
                    if stamp >= first:
                        seen.append(time.time() * 1000 - stamp)
            finally:
                consumer.close()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        time.sleep(LISTENER_START_S)  # the listener joins its group and reaches the end first
        self.feed(rows, "msgpack", rate=rate, send_from=send_from)
        time.sleep(1.0)
        stop.set()
        listener.join(timeout=10)
        return np.asarray(seen)


def run_bench(options: BenchOptions) -> tuple[dict, np.ndarray]:
    """The whole benchmark; returns every figure and the latencies (ms) they summarise."""
    rng = np.random.default_rng(options.seed)
    centres = rng.standard_normal((options.clusters, options.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Each phase later in event time than the one before, the latency phase's stamped with the
    # wall clock: so the others lie in the past (a record older than the newest deferral window
    # seen would join that window, and wait for it).
    now = int(time.time() * 1000)
    warm = _rows(centres, np.arange(options.clusters), now - 3 * 10**6)
    packed = sightings(rng, centres, options.n, now - 2 * 10**6)
    texted = sightings(rng, centres, options.n, now - 10**6)
    paced = sightings(rng, centres, options.latency_n, now)
    run = LocalRun("bench", WORKDIR, bench_config(options.improved, options.deferral_ms),
                   FVC_INGEST=options.ingest, FVC_OUTPUT_FORMAT=options.output_format)
    say(f"engine alone: {options.n} vectors against {options.clusters} clusters, d={options.dim}")
    engine_vps = engine_alone(run.config, warm, packed, run.settings.batch_size)
    bench = Bench(run)
    with run.workers(options.workers):
        say(f"registering {options.clusters} clusters through the worker")
        bench.feed(warm, "msgpack")
        before, calls_before, cpu_before = bench.stages(), bench.round_trips(), bench.cpu()
        say(f"sending {options.n} msgpack vectors as fast as possible")
        msgpack_s = bench.feed(packed, "msgpack")
        after, calls_after, cpu_after = bench.stages(), bench.round_trips(), bench.cpu()
        say(f"sending {options.n} JSON vectors as fast as possible")
        json_s = bench.feed(texted, "json")
        msgpack_vps = options.n / msgpack_s
        say(f"sending {options.latency_n} vectors at {msgpack_vps / 2:.0f}/s for latency")
        cpu_at, latency_began = bench.cpu(), time.perf_counter()
        latency = bench.latencies(paced, msgpack_vps / 2)
        latency_cores = _cores(cpu_at, bench.cpu(), time.perf_counter() - latency_began)
        clusters = run.get_json("/stats")["clusters"]
    batches = after["batches"] - before["batches"]
    figures = _figures(options, engine_vps, msgpack_vps, options.n / json_s, latency, clusters,
                       {k: (after[k] - before.get(k, 0.0)) / options.n * 1e6 for k in after},
                       batches)
    calls = {k: v - calls_before.get(k, 0) for k, v in calls_after.items()}
    per_batch = {k: round(v / max(batches, 1), 2) for k, v in sorted(calls.items()) if v}
    figures["redis_round_trips_per_batch"] = round(sum(calls.values()) / max(batches, 1), 2)
    figures["redis_round_trips_per_batch_by_call"] = per_batch
    used = _spent(cpu_before, cpu_after)
    figures["cpu_ms_per_1000_vectors"] = {k: round(v / options.n * 1e6, 1) for k, v in used.items()}
    figures["cores_busy"] = round(sum(used.values()) / msgpack_s, 2)
    figures["latency_phase_cores_busy"] = latency_cores
    figures["cores"] = os.cpu_count()
    return {
        **figures, "clusters_asked": options.clusters, "workers": options.workers,
        "ingest": options.ingest, "output_format": options.output_format,
        "improved": options.improved or bool(options.deferral_ms),
        "deferral_ms": options.deferral_ms,
    }, latency


def _spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two ``Bench.cpu`` readings."""
    return {k: v - before[k] for k, v in after.items() if k in before}


def _cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict:
    """Cores each process kept busy between two ``Bench.cpu`` readings ``seconds`` apart."""
    return {k: round(v / seconds, 2) for k, v in _spent(before, after).items()}


def _figures(options: BenchOptions, engine_vps: float, msgpack_vps: float, json_vps: float,
             latency: np.ndarray, clusters: int, stage_us: dict[str, float],
             batches: int) -> dict:
    pct = (lambda q: round(float(np.percentile(latency, q)), 1)) if len(latency) else (
        lambda q: None)
    return {
        "vectors_per_second": round(msgpack_vps, 1),
        "engine_vectors_per_second": round(engine_vps, 1),
        "e2e_to_engine_ratio": round(msgpack_vps / engine_vps, 3),
        "json_vectors_per_second": round(json_vps, 1),
        "json_cost_ratio": round(msgpack_vps / json_vps, 3),
        "latency_ms_p50": pct(50),
        "latency_ms_p95": pct(95),
        "latency_ms_p99": pct(99),
        "latency_events": int(len(latency)),
        "clusters": clusters,
        "dim": options.dim,
        "mean_batch": round(options.n / max(batches, 1), 1),
        "stage_us_per_vector": {k: round(v, 1) for k, v in stage_us.items() if k != "batches"},
    }
