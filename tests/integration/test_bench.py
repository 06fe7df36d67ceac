"""``fvc bench --json`` runs end to end on small sizes and prints the documented keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from worker_support import FVC

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = ("vectors_per_second", "engine_vectors_per_second", "e2e_to_engine_ratio",
        "latency_ms_p50", "latency_ms_p99", "clusters")


def test_bench_prints_one_json_object_with_the_figures(kafka_bootstrap, redis_url) -> None:
    command = [FVC, "bench", "--clusters", "300", "--n", "1000", "--dim", "32",
               "--latency-n", "300", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert all(figures[key] is not None for key in KEYS)
    assert 0 < figures["clusters"] <= 300  # in 32-d a few random identities lie close
    assert figures["vectors_per_second"] > 0 and figures["latency_events"] == 300


def test_bench_counts_redis_round_trips_and_plots(kafka_bootstrap, redis_url, tmp_path) -> None:
    command = [FVC, "bench", "--clusters", "100", "--n", "400", "--dim", "16",
               "--latency-n", "100", "--json", "--plot", str(tmp_path), "--ingest", "bulk"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    # one commit per batch, plus the worker's timer calls (change stream, outbox), whose count
    # per batch grows with how long a batch takes on this machine
    by_call = figures["redis_round_trips_per_batch_by_call"]
    assert by_call["commit"] == pytest.approx(1.0, abs=0.5)
    # clock and config: every worker follows the deployment's partition times and config (1/s);
    # frontiers: a bulk worker says where its partitions stand (at most every 50 ms)
    expected = {"commit", "changes", "outbox_pending", "outbox_ack", "get", "clock", "config",
                "frontiers"}
    assert set(by_call) <= expected
    assert figures["redis_round_trips_per_batch"] == pytest.approx(sum(by_call.values()), rel=0.05)
    assert (figures["ingest"], figures["output_format"]) == ("bulk", "msgpack")
    # who used the cores in the msgpack phase: the worker, the local Redis and Kafka, the producer
    cpu = figures["cpu_ms_per_1000_vectors"]
    assert set(cpu) == {"worker", "redis", "kafka", "producer"}
    assert cpu["worker"] > 0 and cpu["producer"] > 0 and figures["cores_busy"] > 0
    assert set(figures["latency_phase_cores_busy"]) == set(cpu)
    chart = tmp_path / "latency.png"
    assert chart.read_bytes().startswith(b"\x89PNG") and chart.stat().st_size > 1000


def test_ingest_benchmark_compares_both_readers_on_one_topic() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest.py"
    done = subprocess.run([sys.executable, str(script), "--n", "3000", "--partitions", "2",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["records"] == 3000
    assert report["faust_records_per_second"] > 0 and report["bulk_records_per_second"] > 0
    assert report["bulk_to_faust_ratio"] == pytest.approx(
        report["bulk_records_per_second"] / report["faust_records_per_second"], rel=0.01)


def test_hop_benchmark_times_one_kafka_hop(kafka_bootstrap) -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "hop.py"
    done = subprocess.run([sys.executable, str(script), "--n", "400", "--rate", "1000",
                           "--rounds", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(done.stdout)["rounds"]
    assert row["records"] == 400 and 0 < row["latency_ms_p50"] <= row["latency_ms_p99"]
    assert len(row["by_eighth"]) == 8


def test_overlap_benchmark_hides_the_store_wait_and_counts_every_vector(redis_url) -> None:
    """The pipeline against the real Redis, one commit at a time and overlapped."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "overlap.py"
    env = {**os.environ, "FVC_REDIS_URL": redis_url}
    done = subprocess.run([sys.executable, str(script), "--clusters", "200", "--vectors", "2048",
                           "--dim", "64", "--batch", "128", "--rounds", "1", "--json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]  # it exits 1 if a vector was lost or doubled
    report = json.loads(done.stdout)
    serial, overlapped = (run["stage_us_per_vector"]["store"] for run in report["runs"])
    assert [run["overlap"] for run in report["runs"]] == [False, True]
    assert overlapped < serial, "the store is waited for while the next batch is decided"
    assert report["overlap_to_serial_ratio"] > 0


def test_bench_runs_deferred_decisions_with_whole_windows(kafka_bootstrap, redis_url) -> None:
    command = [FVC, "bench", "--clusters", "100", "--n", "400", "--dim", "64",
               "--latency-n", "100", "--deferral-ms", "1000", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["deferral_ms"] == 1000 and figures["latency_events"] == 100
    # every re-sighting joins its identity: deciding a window together splits none of them
    assert figures["clusters"] == 100
    assert figures["vectors_per_second"] > 0 and figures["engine_vectors_per_second"] > 0
