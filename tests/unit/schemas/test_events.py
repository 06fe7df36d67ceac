"""Encoding events: the four output shapes, JSON and msgpack, valid against the schema."""

from __future__ import annotations

import msgpack
import numpy as np
import orjson
import pytest

from app.codec.decode import decode_event
from app.codec.encode import encode_event, event_to_dict
from app.engine.types import Cluster, ClusterId, DeleteReason, Event, EventType
from app.errors import DecodeError
from schemas import validator

FIRST = ClusterId(1571138183912, "1571138183912_0", "camera_1")
OTHER = ClusterId(1571138184000, "1571138184000_2", "camera_2")
FIRST_JSON = {
    "first_detection_time": "1571138183912",
    "first_detection_key": "1571138183912_0",
    "first_detection_stream_id": "camera_1",
}


def cluster(state: list[float], count: int = 7, realized: bool = True) -> Cluster:
    return Cluster.from_state(
        id=FIRST,
        state=np.asarray(state, dtype=np.float32),
        num_observations=count,
        realized=realized,
        first_time=FIRST.first_detection_time,
        last_time=1571138190000,
        streams=("camera_1",),
        retention_ms=0,
        version=3,
        pending=0,
        pending_since=0,
        model_id="face_rec_v6",
        type="PERSON_FACE",
    )


REG = Event(
    EventType.REG_EVENT,
    "camera_1:1571138183912_0:3",
    1571138190000,
    FIRST,
    cluster([3.0, 4.0, 0.0]),
    "camera_1",
)
MERGE = Event(
    EventType.MERGE_EVENT,
    "camera_1:1571138183912_0:4",
    1571138195000,
    FIRST,
    cluster([0.0, 2.0, 0.0], count=12),
    merged_clusters=(OTHER,),
)
DELETE = Event(
    EventType.DELETE_EVENT,
    "camera_2:1571138184000_2:9",
    1571138199000,
    OTHER,
    reason=DeleteReason.EXPIRED,
)
END = Event(EventType.END_OF_INPUT_RECORD, "end:1571138199000", 1571138199000)
ALL = [REG, MERGE, DELETE, END]


@pytest.mark.parametrize("event", ALL, ids=[e.type.value for e in ALL])
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_every_event_validates_against_the_schema(event, fmt):
    body = decode_event(encode_event(event, fmt))
    errors = [e.message for e in validator("fv_cluster_update_record").iter_errors(body)]
    assert errors == []
    assert (body["type"], body["event_id"]) == (event.type.value, event.event_id)


def test_reg_event_shape_and_normalised_representative():
    body = orjson.loads(encode_event(REG))
    assert body == {
        "type": "REG_EVENT",
        "event_id": "camera_1:1571138183912_0:3",
        "reg_event": {
            "cluster_id": FIRST_JSON,
            "cluster": {
                "representative_fv": {
                    "model_id": "face_rec_v6",
                    "feature": [0.6, 0.8, 0.0],
                    "type": "PERSON_FACE",
                },
                "num_observations": 7,
                "is_realized": True,
            },
            "input_stream_id": "camera_1",
        },
    }


def test_merge_event_lists_the_merged_clusters():
    body = orjson.loads(encode_event(MERGE))
    merge = body["merge_event"]
    assert merge["cluster_id"] == FIRST_JSON
    assert merge["cluster"]["representative_fv"]["feature"] == [0.0, 1.0, 0.0]
    assert merge["cluster"]["num_observations"] == 12
    assert merge["merged_clusters"] == [
        {
            "first_detection_time": "1571138184000",
            "first_detection_key": "1571138184000_2",
            "first_detection_stream_id": "camera_2",
        }
    ]
    assert set(body) == {"type", "event_id", "merge_event"}


def test_delete_and_end_of_input_shapes():
    assert orjson.loads(encode_event(DELETE))["delete_event"] == {
        "deleted_cluster": event_to_dict(MERGE)["merge_event"]["merged_clusters"][0],
        "reason": "EXPIRED",
    }
    assert orjson.loads(encode_event(END)) == {
        "type": "END_OF_INPUT_RECORD",
        "event_id": "end:1571138199000",
    }


def test_msgpack_carries_the_feature_as_float32_bytes():
    body = msgpack.unpackb(encode_event(REG, "msgpack"))
    feature = body["reg_event"]["cluster"]["representative_fv"]["feature"]
    assert isinstance(feature, bytes) and len(feature) == 12
    np.testing.assert_allclose(np.frombuffer(feature, "<f4"), [0.6, 0.8, 0.0], rtol=1e-6)
    decoded = decode_event(encode_event(REG, "msgpack"))
    assert decoded["reg_event"]["cluster"]["representative_fv"]["feature"] == pytest.approx(
        [0.6, 0.8, 0.0]
    )


def _as_float32(body: dict) -> dict:
    """Features rounded to float32, the precision both formats carry."""
    for name in ("reg_event", "merge_event"):
        if name in body:
            fv = body[name]["cluster"]["representative_fv"]
            fv["feature"] = np.asarray(fv["feature"], dtype=np.float32).tolist()
    return body


@pytest.mark.parametrize("event", ALL, ids=[e.type.value for e in ALL])
def test_json_and_msgpack_carry_the_same_fields(event):
    as_json = _as_float32(decode_event(encode_event(event, "json")))
    as_msgpack = _as_float32(decode_event(encode_event(event, "msgpack")))
    assert as_json == as_msgpack


def test_an_event_missing_its_body_is_refused():
    broken = Event(EventType.REG_EVENT, "x", 0, FIRST)
    with pytest.raises(ValueError, match="REG_EVENT 'x'"):
        encode_event(broken)
    with pytest.raises(ValueError, match="DELETE_EVENT"):
        encode_event(Event(EventType.DELETE_EVENT, "y", 0, FIRST))


def test_unknown_output_format_is_refused():
    with pytest.raises(ValueError, match="unknown record format"):
        encode_event(END, "avro")


@pytest.mark.parametrize("raw", [b"", b"[1]", b"\xc1", b'{"type": '])
def test_decode_event_of_garbage_is_a_decode_error(raw):
    with pytest.raises(DecodeError):
        decode_event(raw)


@pytest.mark.parametrize("event", [REG, MERGE], ids=["REG_EVENT", "MERGE_EVENT"])
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_coherence_is_an_optional_field_the_schema_allows(event, fmt):
    """With the method the cluster carries its coherence; without, the plain UVAP shape."""
    name = event.type.value.lower()
    plain = decode_event(encode_event(event, fmt))
    scored = decode_event(encode_event(event, fmt, "SIMPLE_AVERAGE"))
    cluster = scored[name]["cluster"]
    assert cluster["coherence"] == pytest.approx(
        float(np.linalg.norm(event.cluster.state)) / event.cluster.num_observations)
    del cluster["coherence"]
    assert scored == plain and "coherence" not in plain[name]["cluster"]
    for body in (plain, decode_event(encode_event(event, fmt, "SIMPLE_AVERAGE"))):
        assert list(validator("fv_cluster_update_record").iter_errors(body)) == []


def test_use_last_events_carry_no_coherence():
    assert "coherence" not in event_to_dict(REG, method="USE_LAST")["reg_event"]["cluster"]
    assert event_to_dict(REG, method="EXP_AVERAGE")["reg_event"]["cluster"]["coherence"] == 1.0


def test_the_schema_refuses_a_coherence_out_of_range():
    body = event_to_dict(REG, method="SIMPLE_AVERAGE")
    body["reg_event"]["cluster"]["representative_fv"]["feature"] = [0.6, 0.8, 0.0]
    body["reg_event"]["cluster"]["coherence"] = 1.5
    assert list(validator("fv_cluster_update_record").iter_errors(body)) != []
