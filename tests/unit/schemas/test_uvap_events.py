"""The uvap output profile's records are UVAP's FVClusterUpdateRecord, read strictly.

Each record is parsed with protobuf's ``json_format.Parse`` against UVAP's messages
(tests/proto/uvap_fvc.proto) without ``ignore_unknown_fields``: what UVAP's consumers do.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from google.protobuf.json_format import ParseError

from app.codec.encode import encode_event, event_to_dict
from app.engine.types import Cluster, ClusterId, DeleteReason, Event, EventType
from app.errors import ConfigError
from app.settings import Settings

FIRST = ClusterId(1571138183912, "1571138183912_0", "entranceCamera")
SECOND = ClusterId(1571146859533, "1571146859533_0", "entranceCamera")
FIRST_JSON = {
    "first_detection_time": "1571138183912",
    "first_detection_key": "1571138183912_0",
    "first_detection_stream_id": "entranceCamera",
}
SECOND_JSON = {
    "first_detection_time": "1571146859533",
    "first_detection_key": "1571146859533_0",
    "first_detection_stream_id": "entranceCamera",
}


def cluster(kind: str = "PERSON_FACE", realized: bool = True, count: int = 2) -> Cluster:
    state = np.asarray([3.0, 4.0, 0.0], dtype=np.float32) * count / 5
    return Cluster.from_state(
        id=FIRST, state=state, num_observations=count, realized=realized,
        first_time=FIRST.first_detection_time, last_time=1571146859533,
        streams=("entranceCamera",), retention_ms=0, version=5, pending=0, pending_since=0,
        model_id="face_rec_v6", type=kind,
    )


def reg(kind: str = "PERSON_FACE", realized: bool = True) -> Event:
    return Event(EventType.REG_EVENT, "entranceCamera:1571138183912_0@5", 1571146859533, FIRST,
                 cluster(kind, realized), "entranceCamera")


MERGE = Event(EventType.MERGE_EVENT, "entranceCamera:1571138183912_0@6", 1571146860000, FIRST,
              cluster(count=3), merged_clusters=(SECOND,))
END = Event(EventType.END_OF_INPUT_RECORD, "END_OF_INPUT@1571146860000", 1571146860000)


def delete(reason: DeleteReason) -> Event:
    return Event(EventType.DELETE_EVENT, "entranceCamera:1571146859533_0@3", 1571146861000,
                 SECOND, reason=reason)


EVERY_TYPE = [reg(), reg(realized=False), MERGE, *(delete(r) for r in DeleteReason), END]
NAMES = ["REG", "REG_unrealized", "MERGE", *(f"DELETE_{r.value}" for r in DeleteReason), "END"]


def uvap_record(event: Event, method: str | None = "SIMPLE_AVERAGE") -> bytes:
    return encode_event(event, "json", method, profile="uvap")


@pytest.mark.parametrize("event", EVERY_TYPE, ids=NAMES)
def test_every_event_type_parses_strictly_as_uvaps_record(uvap, event: Event) -> None:
    message = uvap.parse("FVClusterUpdateRecord", uvap_record(event))
    read = uvap.as_dict(message)
    assert read["type"] == event.type.value
    body = orjson.loads(uvap_record(event))
    assert set(body) <= {"type", "reg_event", "merge_event", "delete_event"}
    part = {
        EventType.REG_EVENT: "reg_event",
        EventType.MERGE_EVENT: "merge_event",
        EventType.DELETE_EVENT: "delete_event",
    }.get(event.type)
    assert message.WhichOneof("event") == part


def test_what_uvap_reads_is_what_fvc_wrote(uvap) -> None:
    read = uvap.as_dict(uvap.parse("FVClusterUpdateRecord", uvap_record(reg())))
    event = read["reg_event"]
    assert event["cluster_id"] == FIRST_JSON
    assert event["input_stream_id"] == "entranceCamera"
    fv_cluster = event["cluster"]
    assert (fv_cluster["num_observations"], fv_cluster["is_realized"]) == (2, True)
    fv = fv_cluster["representative_fv"]
    assert (fv["model_id"], fv["type"]) == ("face_rec_v6", "PERSON_FACE")
    np.testing.assert_allclose(fv["feature"], [0.6, 0.8, 0.0], atol=1e-7)
    deleted = uvap.as_dict(uvap.parse("FVClusterUpdateRecord",
                                      uvap_record(delete(DeleteReason.REALIZED))))
    assert deleted["delete_event"] == {"deleted_cluster": SECOND_JSON, "reason": "REALIZED"}


def test_merged_clusters_are_as_uvaps_example_shows_them(uvap) -> None:
    """The surviving id first, then the absorbed: UVAP's MERGE_EVENT example lists both."""
    body = event_to_dict(MERGE, profile="uvap")["merge_event"]
    assert body["cluster_id"] == FIRST_JSON
    assert body["merged_clusters"] == [FIRST_JSON, SECOND_JSON]
    read = uvap.as_dict(uvap.parse("FVClusterUpdateRecord", uvap_record(MERGE)))
    assert read["merge_event"]["merged_clusters"] == [FIRST_JSON, SECOND_JSON]
    assert event_to_dict(MERGE)["merge_event"]["merged_clusters"] == [SECOND_JSON]  # default


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("PERSON_FACE", "PERSON_FACE"),
        ("PERSON_FULL_BODY", "PERSON_FULL_BODY"),
        ("", "PERSON_FACE"),  # the input left it out: proto3's zero value
        ("FACE", "PERSON_FACE"),  # fvc takes any name in; UVAP knows two
    ],
)
def test_the_feature_type_is_always_a_valid_enum_name(uvap, given: str, written: str) -> None:
    record = uvap_record(reg(given))
    assert orjson.loads(record)["reg_event"]["cluster"]["representative_fv"]["type"] == written
    uvap.parse("FVClusterUpdateRecord", record)


def test_extras_stay_out_of_the_record(uvap) -> None:
    """No event_id, no coherence: a strict parse refuses fields UVAP does not define."""
    body = orjson.loads(uvap_record(reg()))
    assert "event_id" not in body and "coherence" not in body["reg_event"]["cluster"]


@pytest.mark.parametrize(("dropped", "refused"), [((), "event_id"), (("event_id",), "coherence")])
def test_the_default_profile_is_not_uvaps_record(uvap, dropped: tuple[str], refused: str) -> None:
    """Why the profile exists: fvc's own fields break UVAP's strict parsing."""
    body = orjson.loads(encode_event(reg(), "json", "SIMPLE_AVERAGE"))
    for name in dropped:
        del body[name]
    with pytest.raises(ParseError, match=refused):
        uvap.parse("FVClusterUpdateRecord", orjson.dumps(body))


def test_an_empty_feature_type_is_no_enum_value(uvap) -> None:
    body = event_to_dict(reg(""))
    body.pop("event_id")
    with pytest.raises(ParseError, match="FeatureType"):
        uvap.parse("FVClusterUpdateRecord", orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))


def test_the_uvap_profile_writes_json_only() -> None:
    assert Settings.from_env({"FVC_OUTPUT_PROFILE": "uvap"}).output_profile == "uvap"
    assert Settings.from_env({}).output_profile == "default"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FVC_OUTPUT_PROFILE": "uvap", "FVC_OUTPUT_FORMAT": "msgpack"})
    [(variable, value, rule)] = info.value.problems
    assert (variable, value) == ("FVC_OUTPUT_PROFILE", "uvap")
    assert "FVC_OUTPUT_FORMAT=json" in rule
    with pytest.raises(ConfigError):
        Settings.from_env({"FVC_OUTPUT_PROFILE": "proto"})
