"""Fuzzing decode: whatever the bytes, the only exception it may raise is DecodeError."""

from __future__ import annotations

import msgpack
import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.codec.decode import Selector, decode, decode_event
from app.codec.encode import encode_observation
from app.engine.types import Observation
from app.errors import DecodeError

CLUSTER = Selector(("cluster",), cluster=True)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
MSGPACK_VALUES = st.recursive(
    SCALARS | st.binary(max_size=24) | st.floats(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
FEATURES = (
    st.lists(SCALARS | st.lists(SCALARS, max_size=2), max_size=6)
    | st.lists(st.floats(width=32), min_size=0, max_size=6)
    | st.binary(max_size=24)
    | JSON_VALUES
)


def assert_decodes_or_refuses(raw: bytes, fmt: str, selector: object = "features", **kw) -> None:
    try:
        result = decode(raw, fmt, selector, dimension=kw.get("dimension", 0), max_bytes=4096)
    except DecodeError as exc:
        assert exc.reason and exc.raw == raw
        return
    assert result is None or isinstance(result, Observation)
    if result is not None:
        assert result.vector.dtype == np.float32 and result.vector.ndim == 1
        assert np.isfinite(result.vector).all() and result.vector.any()
        assert result.count >= 1


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=200), fmt=st.sampled_from(["auto", "json", "msgpack"]))
def test_arbitrary_bytes(raw, fmt):
    assert_decodes_or_refuses(raw, fmt)
    assert_decodes_or_refuses(raw, fmt, CLUSTER)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_arbitrary_json_values(value):
    raw = orjson.dumps(value)
    assert_decodes_or_refuses(raw, "json")
    assert_decodes_or_refuses(raw, "auto", CLUSTER)


@settings(max_examples=300, deadline=None)
@given(value=MSGPACK_VALUES)
def test_arbitrary_msgpack_values(value):
    raw = msgpack.packb(value)
    assert_decodes_or_refuses(raw, "msgpack")
    assert_decodes_or_refuses(raw, "auto", "a.b")


@settings(max_examples=400, deadline=None)
@given(
    feature=FEATURES,
    model_id=SCALARS,
    end_of_frame=SCALARS,
    count=SCALARS,
    fmt=st.sampled_from(["json", "msgpack"]),
    dimension=st.sampled_from([0, 3]),
)
def test_records_close_to_valid(feature, model_id, end_of_frame, count, fmt, dimension):
    if fmt == "json" and isinstance(feature, bytes):
        feature = list(feature)
    fv = {"model_id": model_id, "feature": feature, "type": "PERSON_FACE"}
    records = [
        {"features": fv, "end_of_frame": end_of_frame},
        {"cluster": {"representative_fv": fv, "num_observations": count}},
    ]
    for record, selector in zip(records, ("features", CLUSTER), strict=True):
        raw = orjson.dumps(record) if fmt == "json" else msgpack.packb(record)
        assert_decodes_or_refuses(raw, "auto", selector, dimension=dimension)


@settings(max_examples=200, deadline=None)
@given(
    vector=st.lists(
        st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
        min_size=1,
        max_size=16,
    ),
    fmt=st.sampled_from(["json", "msgpack"]),
)
def test_round_trip_of_any_usable_vector(vector, fmt):
    v = np.asarray(vector, dtype=np.float32)
    raw = encode_observation(v, "m", "t", fmt)
    try:
        obs = decode(raw, "auto")
    except DecodeError as exc:
        assert exc.reason == "zero_vector" and not np.linalg.norm(v)
        return
    np.testing.assert_array_equal(obs.vector, v)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=100) | JSON_VALUES.map(orjson.dumps))
def test_decode_event_raises_only_decode_error(raw):
    try:
        assert isinstance(decode_event(raw), dict)
    except DecodeError:
        pass
