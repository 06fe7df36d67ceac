"""Bulk ingest's bookkeeping: which Kafka offsets a handled batch lets it store."""

from __future__ import annotations

from app.settings import Settings
from app.worker.ingest import next_offsets
from app.worker.pipeline import RawRecord


def record(topic: str, partition: int, offset: int) -> RawRecord:
    return RawRecord(topic, partition, offset, b"k", b"v", 0)


def test_each_partition_stores_the_offset_after_its_last_record() -> None:
    batch = [record("a", 0, 5), record("a", 1, 9), record("a", 0, 7), record("b", 0, 2)]
    stored = {(tp.topic, tp.partition): tp.offset for tp in next_offsets(batch)}
    assert stored == {("a", 0): 8, ("a", 1): 10, ("b", 0): 3}


def test_bulk_ingest_reads_in_a_consumer_group_of_its_own() -> None:
    assert Settings.from_env({"FVC_APP_ID": "cams"}).ingest_group == "cams"
    bulk = Settings.from_env({"FVC_APP_ID": "cams", "FVC_INGEST": "bulk"})
    assert bulk.ingest_group == "cams.ingest"
