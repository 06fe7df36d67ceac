"""Bulk ingest's bookkeeping: which Kafka offsets a handled batch lets it store, and its lag."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from agents.ingest import _report_lag
from app.settings import Settings
from app.worker.ingest import BulkIngest, next_offsets
from app.worker.metrics import WorkerMetrics
from app.worker.pipeline import RawRecord


def record(topic: str, partition: int, offset: int) -> RawRecord:
    return RawRecord(topic, partition, offset, b"k", b"v", 0)


def test_each_partition_stores_the_offset_after_its_last_record() -> None:
    batch = [record("a", 0, 5), record("a", 1, 9), record("a", 0, 7), record("b", 0, 2)]
    stored = {(tp.topic, tp.partition): tp.offset for tp in next_offsets(batch)}
    assert stored == {("a", 0): 8, ("a", 1): 10, ("b", 0): 3}


def test_bulk_ingest_reads_in_a_consumer_group_of_its_own() -> None:
    assert Settings.from_env({"FVC_APP_ID": "cams"}).ingest_group == "cams.ingest"  # the default
    agent = Settings.from_env({"FVC_APP_ID": "cams", "FVC_INGEST": "faust"})
    assert agent.ingest_group == "cams"


class Broker:
    """An admin client that knows the high watermark of each partition."""

    def __init__(self, highwaters: dict[tuple[str, int], int]) -> None:
        self.highwaters = highwaters

    def list_offsets(self, requests: dict, request_timeout: float) -> dict:
        assert all(spec == OffsetSpec.latest() for spec in requests.values())
        return {tp: done(SimpleNamespace(offset=self.highwaters[(tp.topic, tp.partition)]))
                for tp in requests}


def done(result: object) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future


def lag(metrics: WorkerMetrics, position: str) -> float | None:
    return metrics.registry.get_sample_value("fvc_consumer_lag", {"partition": position})


def reader_holding(partitions: int, applied: dict[str, int]) -> BulkIngest:
    runtime = SimpleNamespace(settings=Settings.from_env({}), metrics=WorkerMetrics(),
                              pipeline=SimpleNamespace(applied=applied))
    reader = BulkIngest(runtime, loop=None)
    reader._held = [TopicPartition("cams", p) for p in range(partitions)]
    return reader


def test_bulk_ingest_feeds_the_lag_of_each_partition_it_holds() -> None:
    applied = {"cams:0": 6, "cams:1": 9}
    reader = reader_holding(3, applied)
    reader._admin = Broker({("cams", 0): 10, ("cams", 1): 10, ("cams", 2): 4, ("cams", 3): 7})
    reader.report_lag()
    metrics = reader.runtime.metrics
    assert [lag(metrics, f"cams:{p}") for p in range(4)] == [3.0, 0.0, 4.0, None]
    applied["cams:0"] = 9
    reader.report_lag()
    assert lag(metrics, "cams:0") == 0.0


def test_a_reader_without_partitions_asks_the_broker_nothing() -> None:
    reader = reader_holding(0, {})
    reader.report_lag()  # before its first assignment, or after a revocation
    assert reader._admin is None


def fail(error: Exception) -> Callable[..., dict]:
    def list_offsets(*args: object, **kwargs: object) -> dict:
        raise error

    return list_offsets


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (KafkaException(KafkaError(KafkaError._TRANSPORT)), "bulk ingest lag not reported"),
        (ZeroDivisionError("a bug"), "bulk ingest lag report failed"),
    ],
)
def test_a_failed_lag_report_is_counted_and_the_reader_goes_on(
    error: Exception, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    reader = reader_holding(1, {})
    reader._admin = SimpleNamespace(list_offsets=fail(error))
    _report_lag(reader, reader.runtime)
    errors = reader.runtime.metrics.registry.get_sample_value(
        "fvc_timer_errors_total", {"timer": "lag"})
    assert errors == 1.0
    assert logged in caplog.text
