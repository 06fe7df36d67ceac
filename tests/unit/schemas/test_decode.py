"""Decoding input records: round trips, selectors, end of frame, and every bad-input reason."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import orjson
import pytest

from app.codec.decode import Selector, decode, decode_batch
from app.codec.encode import encode_observation, pack
from app.config import ClusteringConfig, StreamConfig
from app.engine.types import Observation
from app.errors import DecodeError, SkippedRecord
from schemas import validator

CLUSTER = Selector(("cluster",), cluster=True)


def vector(dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("read_as", ["auto", "same"])
def test_round_trip_is_exact(fmt, read_as):
    v = vector(512)
    raw = encode_observation(v, "face_rec_v6", "PERSON_FACE", fmt)
    obs = decode(
        raw,
        fmt if read_as == "same" else "auto",
        "features",
        stream_id="camera_1",
        key="1571138183912_0",
        timestamp=1571138183912,
    )
    assert isinstance(obs, Observation)
    assert obs.vector.dtype == np.float32 and obs.vector.flags.writeable
    np.testing.assert_array_equal(obs.vector, v)
    assert (obs.stream_id, obs.key, obs.time) == ("camera_1", "1571138183912_0", 1571138183912)
    assert (obs.count, obs.model_id, obs.type) == (1, "face_rec_v6", "PERSON_FACE")


def test_vector_is_not_normalised():
    obs = decode(b'{"features": {"feature": [3, 4]}}')
    assert obs.vector.tolist() == [3.0, 4.0]


def test_json_input_record_matches_its_schema():
    record = orjson.loads(encode_observation(vector(), "m", "PERSON_FACE"))
    assert validator("feature_vector_record").is_valid(record)
    assert record["end_of_frame"] is False


def test_msgpack_feature_is_little_endian_float32_bytes_or_a_list():
    v = vector(4)
    record = msgpack.unpackb(encode_observation(v, fmt="msgpack"))
    assert record["features"]["feature"] == v.astype("<f4").tobytes()
    as_list = msgpack.packb({"features": {"feature": v.tolist()}})
    np.testing.assert_array_equal(decode(as_list, "msgpack").vector, v)


def test_json_with_leading_whitespace_is_detected():
    assert decode(b'\n  {"features": {"feature": [1, 0]}}').vector.tolist() == [1.0, 0.0]


def test_fv_cluster_path_counts_num_observations():
    v = vector()
    for fmt in ("json", "msgpack"):
        raw = encode_observation(v, "m", "t", fmt, fv_cluster_count=7)
        obs = decode(raw, "auto", CLUSTER, stream_id="stage2")
        assert obs.count == 7 and obs.model_id == "m"
        np.testing.assert_array_equal(obs.vector, v)


def test_selector_comes_from_a_stream_config():
    config = ClusteringConfig.for_threshold(0.5, ["a"])
    assert Selector.of(config.stream("a")) == Selector(("features",))
    stream = StreamConfig("b", "b.t", None, "reg_event.cluster", 0.5)
    assert Selector.of(stream) == Selector(("reg_event", "cluster"), cluster=True)
    raw = encode_observation(vector(), fv_cluster_count=2, path="reg_event.cluster")
    assert decode(raw, "json", stream).count == 2


@pytest.mark.parametrize(
    ("record", "track"),
    [
        ({"meta": {"track_id": 17}}, "17"),
        ({"meta": {"track_id": "t-4"}}, "t-4"),
        ({}, ""),  # no track: clustered as usual
        ({"meta": 3}, ""),
        ({"meta": {"track_id": [1]}}, ""),
        ({"meta": {"track_id": True}}, ""),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_track_id_is_read_at_the_streams_dot_path(record, track, fmt):
    tracks = {"track_id_path": "meta.track_id", "track_threshold": 0.3}
    stream = ClusteringConfig.for_threshold(0.5, ["a"], track_linking=tracks).stream("a")
    body = {"features": {"feature": [1.0, 2.0]}, **record}
    raw = orjson.dumps(body) if fmt == "json" else msgpack.packb(body)
    observation = decode(raw, fmt, stream)
    assert observation.track == track
    assert observation.vector.tolist() == [1.0, 2.0]
    assert decode(raw, fmt, ClusteringConfig.for_threshold(0.5, ["a"]).stream("a")).track == ""


def test_nested_feature_vector_path_and_extra_fields():
    raw = orjson.dumps({"det": {"face": {"feature": [1, 2]}, "bbox": [1, 2, 3, 4]}, "x": None})
    assert decode(raw, "json", "det.face").vector.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_end_of_frame_records_are_skipped(fmt):
    assert decode(encode_observation(None, fmt=fmt, end_of_frame=True), fmt) is None
    empty = encode_observation([], "m", "t", fmt=fmt, end_of_frame=True)
    assert decode(empty, fmt) is None
    assert decode(encode_observation(None, fmt=fmt, end_of_frame=True), fmt, CLUSTER) is None


def test_end_of_frame_with_a_vector_keeps_the_vector():
    raw = encode_observation([1, 2], end_of_frame=True)
    assert decode(raw).vector.tolist() == [1.0, 2.0]


def _json(obj: object) -> bytes:
    return orjson.dumps(obj)


def _fv(feature: object, **extra: object) -> bytes:
    return orjson.dumps({"features": {"model_id": "m", "feature": feature, "type": "t", **extra}})


def _cluster(count: object, fv: object = None) -> bytes:
    fv = {"feature": [1.0, 2.0]} if fv is None else fv
    return orjson.dumps({"cluster": {"representative_fv": fv, "num_observations": count}})


BAD = [
    ("not_json", b'{"features": {"feature": [1, 2', {}, "line 1"),
    ("not_json", b"", {}, "empty record"),
    ("not_json", b'{"features": {"feature": [NaN]}}', {}, ""),
    ("not_json", b"{\xff}", {}, ""),
    ("not_msgpack", b"\xc1", {}, "FormatError"),
    ("not_msgpack", msgpack.packb({"features": {"feature": [1.0, 2.0]}})[:-3], {}, ""),
    ("not_msgpack", b'{"a": 1}', {"fmt": "msgpack"}, "ExtraData"),
    ("not_msgpack", msgpack.packb({1: 2}), {}, ""),
    ("not_an_object", b"[1, 2]", {}, "an array"),
    ("not_an_object", msgpack.packb("text"), {}, "a string"),
    ("missing_field", _json({"other": 1}), {}, "features is missing"),
    ("missing_field", _json({"features": None}), {}, "features is missing"),
    ("missing_field", _json({"features": {"model_id": "m"}}), {}, "features.feature is missing"),
    (
        "missing_field",
        _json({"cluster": {"num_observations": 2}}),
        {"selector": CLUSTER},
        "cluster.representative_fv is missing",
    ),
    (
        "missing_field",
        _json({"cluster": {"representative_fv": {"feature": [1]}}}),
        {"selector": CLUSTER, "strict": True},
        "cluster.num_observations is missing",
    ),
    ("wrong_type", _json({"features": "1,2,3"}), {}, "features is a string"),
    ("wrong_type", _fv("1,2,3"), {}, "features.feature is a string"),
    ("wrong_type", _fv([1, "2", 3]), {}, "not a flat list of numbers"),
    ("wrong_type", _fv([[1, 2], [3, 4]]), {}, "not a flat list of numbers"),
    ("wrong_type", _fv([[1, 2], [3]]), {}, "not a flat list of numbers"),
    ("wrong_type", _fv([True, False]), {}, "not a flat list of numbers"),
    ("wrong_type", _fv([1, None]), {}, "not a flat list of numbers"),
    ("wrong_type", _fv([1, 2], model_id=5), {}, "features.model_id is a number, must be a string"),
    ("wrong_type", _fv([1, 2], type=2), {}, "features.type is 2, not a FeatureVector.FeatureType"),
    ("wrong_type", _fv([1, 2], type=-1), {}, "PERSON_FACE = 0, PERSON_FULL_BODY = 1"),
    ("wrong_type", _fv([1, 2], type=True), {}, "features.type is a boolean, must be an enum"),
    ("wrong_type", _fv([1, 2], type=1.0), {}, "features.type is a number, must be an enum"),
    (
        "wrong_type",
        _json({"features": {"feature": [1]}, "end_of_frame": "yes"}),
        {},
        "end_of_frame is a string",
    ),
    ("wrong_type", msgpack.packb({"features": {"feature": b"\x00" * 5}}), {}, "5 bytes"),
    ("wrong_type", _json({"det": [1]}), {"selector": "det.face"}, "det is an array"),
    ("wrong_type", _cluster("3"), {"selector": CLUSTER}, "not an integer"),
    ("wrong_type", _cluster(2.5), {"selector": CLUSTER}, "not an integer"),
    ("wrong_type", _cluster(True), {"selector": CLUSTER}, "not an integer"),
    ("wrong_type", _cluster(2, fv=[1, 2]), {"selector": CLUSTER}, "not a FeatureVector"),
    ("wrong_dimension", _fv([1, 2, 3]), {"dimension": 4}, "has 3 values, expected 4"),
    ("wrong_dimension", _fv([]), {}, "is empty"),
    ("non_finite", _fv([1e39, 1.0]), {}, "NaN or infinite"),
    (
        "non_finite",
        msgpack.packb({"features": {"feature": np.array([1, np.nan], "<f4").tobytes()}}),
        {},
        "NaN or infinite",
    ),
    ("non_finite", _fv([3e19] * 4), {}, "overflows"),
    ("zero_vector", _fv([0, 0.0, -0.0]), {}, "length zero"),
    ("zero_vector", _fv([1e-30] * 4), {}, "too small"),
    ("too_large", _fv([0.5] * 100), {"max_bytes": 64}, "more than the limit of 64"),
    ("bad_count", _cluster(0), {"selector": CLUSTER}, "must be at least 1"),
    ("bad_count", _cluster(-3), {"selector": CLUSTER}, "is -3"),
]


@pytest.mark.parametrize(
    ("reason", "raw", "kwargs", "detail"), BAD, ids=[f"{case[0]}-{i}" for i, case in enumerate(BAD)]
)
def test_bad_input_gives_its_reason_and_keeps_the_bytes(reason, raw, kwargs, detail):
    kwargs = dict(kwargs)
    fmt, selector = kwargs.pop("fmt", "auto"), kwargs.pop("selector", "features")
    with pytest.raises(DecodeError) as info:
        decode(raw, fmt, selector, **kwargs)
    assert info.value.reason == reason, info.value.detail
    assert detail in info.value.detail
    assert info.value.raw == raw


def test_every_reason_is_covered():
    reasons = {case[0] for case in BAD}
    assert reasons == {
        "not_json",
        "not_msgpack",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "wrong_dimension",
        "non_finite",
        "zero_vector",
        "too_large",
        "bad_count",
    }


def test_a_kafka_tombstone_is_a_decode_error():
    with pytest.raises(DecodeError) as info:
        decode(None)  # type: ignore[arg-type]
    assert (info.value.reason, info.value.raw) == ("not_json", b"")


def test_decode_batch_keeps_order_and_returns_errors_in_place():
    good = encode_observation([1.0, 0.0])
    results = decode_batch(
        [good, b"junk", encode_observation(None, end_of_frame=True), good],
        stream_id="s",
        keys=["a", "b", "c", "d"],
        timestamps=[1, 2, 3, 4],
    )
    assert isinstance(results[0], Observation) and results[0].key == "a"
    assert isinstance(results[1], DecodeError) and results[1].raw == b"junk"
    assert results[2] is None
    assert (results[3].key, results[3].time, results[3].stream_id) == ("d", 4, "s")


def test_unknown_format_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown record format"):
        decode(b"{}", "avro")


def test_large_ints_and_floats_become_float32():
    obs = decode(_fv([2**63, -(2**62), 1.5]))
    assert obs.vector.dtype == np.float32
    assert math.isclose(float(obs.vector[0]), 2.0**63, rel_tol=1e-6)


# UVAP's reading of camera records: skip a record without the selected field, count an FVCluster
# without num_observations as 1, take the FeatureVector type enum by name or by number.

FORMATS = ["json", "msgpack"]


def _without(fmt: str) -> bytes:
    """A record of the given format that lacks the selected field (it has another one)."""
    return pack({"other": {"feature": [1.0, 2.0]}, "end_of_frame": False}, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("selector", ["features", CLUSTER, "det.face"], ids=str)
def test_a_record_without_the_selected_field_is_skipped_not_a_dead_letter(fmt, selector):
    raw = _without(fmt)
    with pytest.raises(SkippedRecord) as info:
        decode(raw, "auto", selector)
    assert (info.value.reason, info.value.raw) == ("missing_field", raw)
    assert "is missing" in info.value.detail


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_null_selected_field_is_skipped_too(fmt):
    raw = pack({"features": None}, fmt)
    with pytest.raises(SkippedRecord, match="features is missing"):
        decode(raw)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("selector", ["features", CLUSTER], ids=str)
def test_strict_input_makes_a_record_without_the_field_a_dead_letter(fmt, selector):
    raw = _without(fmt)
    with pytest.raises(DecodeError) as info:
        decode(raw, "auto", selector, strict=True)
    assert type(info.value) is DecodeError
    assert (info.value.reason, info.value.raw) == ("missing_field", raw)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_part_inside_the_selected_field_is_a_dead_letter_in_both_modes(fmt):
    no_feature = pack({"features": {"model_id": "m"}}, fmt)
    no_fv = pack({"cluster": {"num_observations": 2}}, fmt)
    for strict in (False, True):
        for raw, selector in ((no_feature, "features"), (no_fv, CLUSTER)):
            with pytest.raises(DecodeError) as info:
                decode(raw, "auto", selector, strict=strict)
            assert type(info.value) is DecodeError and info.value.reason == "missing_field"


def _cluster_without_count(fmt: str, count: object = "absent") -> bytes:
    v = np.array([1.0, 2.0], np.float32)
    feature = v.astype("<f4").tobytes() if fmt == "msgpack" else v.tolist()
    cluster: dict = {"representative_fv": {"model_id": "m", "feature": feature}}
    if count != "absent":
        cluster["num_observations"] = count
    return pack({"cluster": cluster}, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("count", ["absent", None], ids=["absent", "null"])
def test_an_fv_cluster_without_num_observations_counts_one(fmt, count):
    obs = decode(_cluster_without_count(fmt, count), "auto", CLUSTER)
    assert obs is not None and obs.count == 1 and obs.vector.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_strict_input_makes_an_fv_cluster_without_num_observations_a_dead_letter(fmt):
    raw = _cluster_without_count(fmt)
    with pytest.raises(DecodeError) as info:
        decode(raw, "auto", CLUSTER, strict=True)
    assert type(info.value) is DecodeError
    assert info.value.reason == "missing_field"
    assert "cluster.num_observations is missing" in info.value.detail


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("given", "named"),
    [("PERSON_FACE", "PERSON_FACE"), ("PERSON_FULL_BODY", "PERSON_FULL_BODY"),
     (0, "PERSON_FACE"), (1, "PERSON_FULL_BODY"), (None, "")],
)
def test_the_feature_type_is_read_by_name_or_by_uvap_number(strict, fmt, given, named):
    raw = pack({"features": {"feature": [1.0, 0.0], "type": given}}, fmt)
    assert decode(raw, "auto", strict=strict).type == named


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unknown_feature_type_number_is_a_wrong_type_dead_letter(strict, fmt):
    raw = pack({"features": {"feature": [1.0, 0.0], "type": 7}}, fmt)
    with pytest.raises(DecodeError) as info:
        decode(raw, "auto", strict=strict)
    assert type(info.value) is DecodeError and info.value.reason == "wrong_type"
    assert "features.type is 7, not a FeatureVector.FeatureType" in info.value.detail


def test_an_fv_cluster_type_number_is_named_too():
    raw = _json({"cluster": {"representative_fv": {"feature": [1, 0], "type": 1}}})
    obs = decode(raw, "json", CLUSTER)
    assert (obs.type, obs.count) == ("PERSON_FULL_BODY", 1)


def test_decode_batch_returns_skipped_records_in_place():
    good = encode_observation([1.0, 0.0])
    missing = _json({"other": 1})
    results = decode_batch([good, missing])
    assert isinstance(results[0], Observation)
    assert isinstance(results[1], SkippedRecord) and results[1].raw == missing
    strict = decode_batch([good, missing], strict=True)
    assert type(strict[1]) is DecodeError
