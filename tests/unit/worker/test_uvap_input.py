"""Camera records read as UVAP reads them, through the pipeline and the runtime's metrics.

A record without the selected field is skipped (counted in ``fvc_skipped_records_total``, its
offset applied like any other record's), not a dead letter; ``FVC_STRICT_INPUT=true`` makes it
a dead letter again. Records are JSON and msgpack alike.
"""

from __future__ import annotations

import msgpack
import orjson
import pytest
from fakes import (
    STREAM,
    TOPIC,
    MakeRuntime,
    identities,
    make_settings,
    observations_in,
    records,
)

from app.codec.encode import encode_observation, pack
from app.config import ClusteringConfig, parse_config
from app.engine import Engine
from app.settings import Settings
from app.store import MemoryStore
from app.worker.pipeline import Pipeline, RawRecord

CENTRES = identities(seed=5, count=2)
FORMATS = ["json", "msgpack"]


def without_field(offset: int, fmt: str, partition: int = 0) -> RawRecord:
    """A record with no ``features`` (the stream's selected field)."""
    value = pack({"other": {"feature": [1.0, 0.0]}, "end_of_frame": False}, fmt)
    return RawRecord(TOPIC, partition, offset, f"x{offset}".encode(), value, 1_000 + offset)


def numbered_type(offset: int, fmt: str, number: int) -> RawRecord:
    """A record whose FeatureVector type is UVAP's enum number."""
    feature = CENTRES[0].astype("<f4").tobytes() if fmt == "msgpack" else CENTRES[0].tolist()
    value = pack({"features": {"model_id": "m", "feature": feature, "type": number}}, fmt)
    return RawRecord(TOPIC, 0, offset, f"t{offset}".encode(), value, 1_000 + offset)


def pipeline(store: MemoryStore, config: ClusteringConfig, settings: Settings) -> Pipeline:
    return Pipeline(Engine(config), store, config, settings)


async def dead_letter_reasons(store: MemoryStore, settings: Settings) -> list[str]:
    entries = await store.outbox_pending(10_000)
    return [
        dict(e.record.headers)["fvc.reason"].decode()
        for e in entries
        if e.record.topic == settings.dead_letter_topic
    ]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_record_without_the_field_is_skipped_and_its_offset_applied(
    config: ClusteringConfig, settings: Settings, fmt: str
) -> None:
    store = MemoryStore()
    batch = [*records(list(CENTRES)), without_field(2, fmt)]

    outcome = await pipeline(store, config, settings).handle(batch)

    assert (outcome.observations, outcome.dead_letters, outcome.skipped) == (2, (), 0)
    [(record, skip)] = outcome.skipped_records
    assert (record.offset, skip.reason) == (2, "missing_field")
    assert await store.offsets() == {f"{TOPIC}:0": 2}
    assert await dead_letter_reasons(store, settings) == []


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_batch_of_only_skipped_records_still_moves_the_offset(
    config: ClusteringConfig, settings: Settings, fmt: str
) -> None:
    store = MemoryStore()
    worker = pipeline(store, config, settings)

    outcome = await worker.handle([without_field(n, fmt) for n in range(3)])

    assert (outcome.observations, len(outcome.skipped_records)) == (0, 3)
    assert await store.offsets() == {f"{TOPIC}:0": 2}
    again = await worker.handle([without_field(n, fmt) for n in range(3)])
    assert (again.skipped, again.skipped_records) == (3, ())


@pytest.mark.parametrize("fmt", FORMATS)
async def test_strict_input_makes_it_a_dead_letter(config: ClusteringConfig, fmt: str) -> None:
    strict = make_settings(FVC_STRICT_INPUT="true")
    assert strict.strict_input is True
    store = MemoryStore()
    batch = [*records(list(CENTRES)), without_field(2, fmt)]

    outcome = await pipeline(store, config, strict).handle(batch)

    assert (outcome.observations, outcome.skipped_records) == (2, ())
    assert [e.reason for _, e in outcome.dead_letters] == ["missing_field"]
    assert await store.offsets() == {f"{TOPIC}:0": 2}
    assert await dead_letter_reasons(store, strict) == ["missing_field"]


@pytest.mark.parametrize("strict", ["false", "true"])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_numbered_type_is_clustered_and_an_unknown_number_is_a_dead_letter(
    config: ClusteringConfig, fmt: str, strict: str
) -> None:
    settings = make_settings(FVC_STRICT_INPUT=strict)
    store = MemoryStore()
    batch = [numbered_type(0, fmt, 1), numbered_type(1, fmt, 9)]

    outcome = await pipeline(store, config, settings).handle(batch)

    assert outcome.observations == 1
    [(record, error)] = outcome.dead_letters
    assert (record.offset, error.reason) == (1, "wrong_type")
    assert "features.type is 9" in error.detail
    assert await store.offsets() == {f"{TOPIC}:0": 1}
    [cluster] = [c async for chunk in store.load_all() for c in chunk]
    assert cluster.type == "PERSON_FULL_BODY"


async def test_the_runtime_counts_skipped_records_by_reason(make_runtime: MakeRuntime) -> None:
    runtime = await make_runtime(MemoryStore())
    batch = [*records(list(CENTRES)), without_field(2, "json"), without_field(3, "msgpack")]

    await runtime.handle(batch)

    registry = runtime.metrics.registry
    skipped = registry.get_sample_value("fvc_skipped_records_total", {"reason": "missing_field"})
    assert skipped == 2
    assert registry.get_sample_value("fvc_dead_letters_total", {"reason": "missing_field"}) is None
    assert await observations_in(runtime.store) == 2
    assert runtime.pipeline.applied == {f"{TOPIC}:0": 3}


def cluster_config() -> ClusteringConfig:
    """One stream whose records hold an FVCluster at ``cluster``."""
    stream = {
        "stream_id": STREAM,
        "fv_field_selector": {"fv_cluster_path": "cluster"},
        "reg_stream_config": {"reg_threshold": 0.5},
    }
    clustering = {"method": "SIMPLE_AVERAGE", "cluster_realization": {"num_samples": 2}}
    return parse_config({"clustering_config": clustering, "input_stream_configs": [stream]})


def fv_cluster(offset: int, fmt: str, count: int | None) -> RawRecord:
    """An FVCluster record of identity 0, without ``num_observations`` when ``count`` is None."""
    value = encode_observation(CENTRES[0], "m", "PERSON_FACE", fmt, fv_cluster_count=count or 1)
    if count is None:
        body = msgpack.unpackb(value) if fmt == "msgpack" else orjson.loads(value)
        del body["cluster"]["num_observations"]
        value = pack(body, fmt)
    return RawRecord(TOPIC, 0, offset, f"c{offset}".encode(), value, 1_000 + offset)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_fv_cluster_without_num_observations_counts_one_unless_strict(fmt: str) -> None:
    config = cluster_config()
    batch = [fv_cluster(0, fmt, 3), fv_cluster(1, fmt, None)]

    lenient = MemoryStore()
    outcome = await pipeline(lenient, config, make_settings()).handle(batch)
    assert (outcome.observations, outcome.dead_letters) == (2, ())
    assert await observations_in(lenient) == 4

    strict = MemoryStore()
    settings = make_settings(FVC_STRICT_INPUT="1")
    outcome = await pipeline(strict, config, settings).handle(batch)
    assert outcome.observations == 1
    assert [(r.offset, e.reason) for r, e in outcome.dead_letters] == [(1, "missing_field")]
    assert await observations_in(strict) == 3
    assert await strict.offsets() == {f"{TOPIC}:0": 1}
