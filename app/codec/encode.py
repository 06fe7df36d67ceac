"""Python to records: input records (for producers and tests) and cluster events, JSON or msgpack.

Events have exactly the shape of the FVClusterUpdateRecord schema; the msgpack variant carries
``feature`` as raw little-endian float32 bytes. The ``uvap`` profile writes UVAP's own message
instead, nothing more (docs/uvap.md): what fvc adds travels in Kafka headers (app/worker/outbox.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import msgpack
import numpy as np
import orjson

from app.codec.decode import CLUSTER_PATH, FEATURE_PATH, FEATURE_TYPES
from app.engine.rules import coherence
from app.engine.types import Cluster, ClusterId, Event, EventType

_T = TypeVar("_T")

UVAP = "uvap"
# The uvap profile's record holds UVAP's fields only; what fvc adds travels in these headers.
EVENT_ID_HEADER = "fvc.event_id"
CLUSTER_ID_HEADER = "fvc.cluster_id"
COHERENCE_HEADER = "fvc.coherence"
# proto3 reads an absent FeatureVector.type as its zero value, and so do UVAP's consumers.
DEFAULT_FEATURE_TYPE = FEATURE_TYPES[0]


def encode_observation(
    vector: np.ndarray | Iterable[float] | None,
    model_id: str = "",
    type: str = "",  # noqa: A002 - the wire field is called type
    fmt: str = "json",
    end_of_frame: bool = False,
    fv_cluster_count: int | None = None,
    path: str | None = None,
    track_id: int | str | None = None,
) -> bytes:
    """An input record (FeatureVectorRecord, or an FVCluster record when a count is given).

    ``path`` defaults to ``features`` (or ``cluster`` with ``fv_cluster_count``); None as the
    vector makes a bare end-of-frame record. ``track_id`` goes in a top-level ``track_id``.
    """
    record: dict[str, Any] = {} if track_id is None else {"track_id": track_id}
    if vector is not None:
        array = np.ascontiguousarray(np.asarray(vector, dtype=np.float32))
        feature = array.astype("<f4").tobytes() if fmt == "msgpack" else array
        value: dict[str, Any] = {"model_id": model_id, "feature": feature, "type": type}
        if fv_cluster_count is not None:
            value = {"representative_fv": value, "num_observations": fv_cluster_count}
        default = CLUSTER_PATH if fv_cluster_count is not None else FEATURE_PATH
        _put(record, (path or default).split("."), value)
    record["end_of_frame"] = end_of_frame
    return pack(record, fmt)


def _put(record: dict[str, Any], path: list[str], value: object) -> None:
    for name in path[:-1]:
        record = record.setdefault(name, {})
    record[path[-1]] = value


def pack(body: dict[str, Any], fmt: str) -> bytes:
    """One record as JSON (numpy arrays as lists) or msgpack (bytes as bin)."""
    if fmt == "json":
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if fmt == "msgpack":
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return packed
    message = f"unknown record format {fmt!r}: use json or msgpack"
    raise ValueError(message)


def encode_event(
    event: Event, fmt: str = "json", method: str | None = None, profile: str = "default"
) -> bytes:
    """One FVClusterUpdateRecord, exactly the shape of the schema (or UVAP's), JSON or msgpack.

    With the clustering ``method`` the cluster also carries its optional ``coherence``.
    """
    body = event_to_dict(event, binary=fmt == "msgpack", method=method, profile=profile)
    return pack(body, fmt)


def event_to_dict(
    event: Event, *, binary: bool = False, method: str | None = None, profile: str = "default"
) -> dict[str, Any]:
    """The record body of ``event``; ``feature`` is float32 bytes if ``binary``, else an array.

    ``method`` (the clustering method) adds ``coherence`` to the cluster: the accumulator alone
    does not say how to read it. The ``uvap`` profile writes only the fields of UVAP's
    FVClusterUpdateRecord (no ``event_id``, no ``coherence``), a valid FeatureType always, and
    ``merged_clusters`` as UVAP's example has it: the surviving id first, then the absorbed.
    """
    uvap = profile == UVAP
    body: dict[str, Any] = {"type": event.type.value}
    if not uvap:
        body["event_id"] = event.event_id
    scored = None if uvap else method
    if event.type is EventType.REG_EVENT:
        cluster = _required(event.cluster, event)
        body["reg_event"] = {
            "cluster_id": _id_dict(event.cluster_id or cluster.id),
            "cluster": _cluster_dict(cluster, binary, scored, uvap),
            "input_stream_id": event.input_stream_id,
        }
    elif event.type is EventType.MERGE_EVENT:
        cluster = _required(event.cluster, event)
        survivor = event.cluster_id or cluster.id
        merged = event.merged_clusters
        if uvap:
            merged = (survivor, *(m for m in merged if m != survivor))
        body["merge_event"] = {
            "cluster_id": _id_dict(survivor),
            "cluster": _cluster_dict(cluster, binary, scored, uvap),
            "merged_clusters": [_id_dict(c) for c in merged],
        }
    elif event.type is EventType.DELETE_EVENT:
        deleted = _required(
            event.cluster_id or (event.cluster.id if event.cluster else None), event
        )
        reason = _required(event.reason, event)
        body["delete_event"] = {"deleted_cluster": _id_dict(deleted), "reason": reason.value}
    return body


def _required(value: _T | None, event: Event) -> _T:
    """An event missing what its type needs is a bug upstream: say which event."""
    if value is None:
        message = f"{event.type.value} {event.event_id!r} lacks what its type requires"
        raise ValueError(message)
    return value


def _id_dict(cluster_id: ClusterId) -> dict[str, str]:
    return {
        "first_detection_time": str(cluster_id.first_detection_time),
        "first_detection_key": cluster_id.first_detection_key,
        "first_detection_stream_id": cluster_id.first_detection_stream_id,
    }


def _cluster_dict(
    cluster: Cluster, binary: bool, method: str | None, uvap: bool = False
) -> dict[str, Any]:
    """The FVCluster of an event: the L2-normalised representative, count and realization.

    Plus ``coherence`` when the method has one (an optional field UVAP consumers ignore).
    With ``uvap``, a type that is no FeatureType name (fvc takes any name in, or none) is
    written as proto3 reads it: PERSON_FACE.
    """
    rep = np.ascontiguousarray(cluster.representative, dtype=np.float32)
    feature = rep.astype("<f4").tobytes() if binary else rep
    kind = cluster.type
    if uvap and kind not in FEATURE_TYPES.values():
        kind = DEFAULT_FEATURE_TYPE
    body: dict[str, Any] = {
        "representative_fv": {
            "model_id": cluster.model_id,
            "feature": feature,
            "type": kind,
        },
        "num_observations": int(cluster.num_observations),
        "is_realized": bool(cluster.realized),
    }
    score = None if method is None else coherence(method, cluster.norm, cluster.num_observations)
    if score is not None:
        body["coherence"] = score
    return body
