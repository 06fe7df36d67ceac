"""Input and output records to Python: observations from camera records, dicts from events.

Camera topics are read as raw bytes and decoded here, so that a bad record becomes a
``DecodeError`` with a machine-readable reason and the original bytes, bound for the dead-letter
topic, instead of an exception that would stop or silently skip it. The msgpack variant carries
the same fields with ``feature`` as raw little-endian float32 bytes (a list is accepted too).

Records are read as UVAP reads them unless ``strict``: a record without the selected field is
skipped (``SkippedRecord``, not a dead letter), an FVCluster without ``num_observations`` counts
one observation, and the FeatureVector ``type`` enum is taken by name or by number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import msgpack
import numpy as np
import orjson

from app.engine.types import Observation
from app.errors import DecodeError, SkippedRecord

FEATURE_PATH = "features"
CLUSTER_PATH = "cluster"
MAX_RECORD_BYTES = 1 << 20
_JSON_FIRST_BYTES = frozenset(b'{[" \t\r\n')  # never the first byte of a msgpack map
_ABSENT = object()

# UVAP's FeatureVector.FeatureType, by number, as in Ultinous/uvap
# proto_files/ultinous/proto/common/kafka_data.proto (message FeatureVector, enum FeatureType).
FEATURE_TYPES = {0: "PERSON_FACE", 1: "PERSON_FULL_BODY"}


@dataclass(frozen=True, slots=True)
class Selector:
    """Where the vector is in a record: a dot path to a FeatureVector or to an FVCluster.

    ``track_path`` is where a tracker id is, when the stream links tracks (else empty).
    """

    path: tuple[str, ...]
    cluster: bool = False
    track_path: tuple[str, ...] = ()

    @property
    def dotted(self) -> str:
        """The path as written in the config, e.g. ``features``."""
        return ".".join(self.path)

    @classmethod
    def of(cls, selector: Selector | str | Any) -> Selector:
        """A Selector from itself, a FeatureVector dot path, or a StreamConfig-like object."""
        if isinstance(selector, Selector):
            return selector
        if isinstance(selector, str):
            return cls(tuple(selector.split(".")))
        tracks = getattr(selector, "track_linking", None)
        track_path = tuple(tracks.id_path.split(".")) if tracks is not None else ()
        cluster_path = getattr(selector, "fv_cluster_path", None)
        if cluster_path:
            return cls(tuple(cluster_path.split(".")), cluster=True, track_path=track_path)
        return cls(tuple(str(selector.feature_vector_path).split(".")), track_path=track_path)


DEFAULT_SELECTOR = Selector((FEATURE_PATH,))


class _Invalid(Exception):
    """Raised below ``decode``, which turns it into a DecodeError carrying the raw bytes."""

    def __init__(self, reason: str, detail: str, *, skip: bool = False) -> None:
        self.reason, self.detail, self.skip = reason, detail, skip
        super().__init__(detail)

    def error(self, raw: bytes | None) -> DecodeError:
        """The DecodeError (a SkippedRecord when the record is skipped) for the raw bytes."""
        kind = SkippedRecord if self.skip else DecodeError
        return kind(self.reason, self.detail, bytes(raw or b""))


def _fail(reason: str, detail: str) -> NoReturn:
    raise _Invalid(reason, detail)


def decode(
    raw: bytes,
    fmt: str = "auto",
    selector: Selector | str | Any = DEFAULT_SELECTOR,
    *,
    stream_id: str = "",
    key: str = "",
    timestamp: int = 0,
    max_bytes: int = MAX_RECORD_BYTES,
    dimension: int = 0,
    strict: bool = False,
) -> Observation | None:
    """The observation in one input record, or None for an end-of-frame record.

    The vector is float32 and not normalised (the engine does that). Any unusable input raises
    DecodeError and nothing else, whatever the bytes: a SkippedRecord (a DecodeError) for a
    record without the selected field, unless ``strict``, which makes that a plain DecodeError
    and also refuses an FVCluster without ``num_observations`` (else counted as 1).

    >>> decode(b'{"features": {"feature": [3, 4]}}', key="k", timestamp=5).vector.tolist()
    [3.0, 4.0]
    """
    sel = Selector.of(selector)
    try:
        return _decode(raw, fmt, sel, stream_id, key, timestamp, max_bytes, dimension, strict)
    except _Invalid as exc:
        raise exc.error(raw) from None


def decode_batch(
    raws: Sequence[bytes],
    fmt: str = "auto",
    selector: Selector | str | Any = DEFAULT_SELECTOR,
    *,
    stream_id: str = "",
    keys: Sequence[str] | None = None,
    timestamps: Sequence[int] | None = None,
    max_bytes: int = MAX_RECORD_BYTES,
    dimension: int = 0,
    strict: bool = False,
) -> list[Observation | DecodeError | None]:
    """Decode many records of one stream; a bad record yields its DecodeError in its place.

    A skipped record yields its SkippedRecord (a DecodeError), as ``decode`` raises it.
    """
    sel = Selector.of(selector)
    keys = [""] * len(raws) if keys is None else keys
    timestamps = [0] * len(raws) if timestamps is None else timestamps
    results: list[Observation | DecodeError | None] = []
    for raw, key, time in zip(raws, keys, timestamps, strict=True):
        try:
            obs = _decode(raw, fmt, sel, stream_id, key, time, max_bytes, dimension, strict)
        except _Invalid as exc:
            results.append(exc.error(raw))
        else:
            results.append(obs)
    return results


def _decode(
    raw: bytes, fmt: str, sel: Selector, stream_id: str, key: str, time: int, limit: int, dim: int,
    strict: bool,
) -> Observation | None:
    return _observation(_parse(raw, fmt, limit), sel, stream_id, key, time, dim, strict)


def _parse(raw: bytes, fmt: str, max_bytes: int) -> object:
    """Bytes to a Python value in the given (or detected) format."""
    if raw is None or len(raw) == 0:
        _fail("not_json" if fmt != "msgpack" else "not_msgpack", "empty record")
    if max_bytes > 0 and len(raw) > max_bytes:
        _fail("too_large", f"{len(raw)} bytes, more than the limit of {max_bytes}")
    if fmt == "auto":
        fmt = "json" if raw[0] in _JSON_FIRST_BYTES else "msgpack"
    if fmt == "json":
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            _fail("not_json", str(exc))
    if fmt == "msgpack":
        try:
            return msgpack.unpackb(raw, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            _fail("not_msgpack", f"{type(exc).__name__}: {exc}"[:200])
    message = f"unknown record format {fmt!r}: use auto, json or msgpack"
    raise ValueError(message)


def _observation(
    record: object,
    sel: Selector,
    stream_id: str,
    key: str,
    time: int,
    dimension: int,
    strict: bool,
) -> Observation | None:
    """The observation a parsed record holds at the selector's path."""
    if not isinstance(record, dict):
        _fail("not_an_object", f"the record is {_kind(record)}, not an object")
    end_of_frame = record.get("end_of_frame", False)
    if end_of_frame is not None and not isinstance(end_of_frame, bool):
        _fail("wrong_type", f"end_of_frame is {_kind(end_of_frame)}, not true or false")
    target = _lookup(record, sel.path)
    if end_of_frame and _holds_no_vector(target, sel):
        return None
    if target is _ABSENT or target is None:
        # UVAP skips a record without the selected field; strict input makes it a dead letter
        raise _Invalid("missing_field", f"{sel.dotted} is missing", skip=not strict)
    count, fv, where = 1, target, sel.dotted
    if sel.cluster:
        count, fv = _cluster_parts(target, sel.dotted, strict)
        where = f"{sel.dotted}.representative_fv"
    vector, model_id, type_ = _feature_vector(fv, where, dimension)
    track = _track_id(record, sel.track_path) if sel.track_path else ""
    return Observation(vector, stream_id, key, int(time), count, model_id, type_, track)


def _track_id(record: dict[str, Any], path: tuple[str, ...]) -> str:
    """The tracker id as text; "" (no track: clustered as usual) unless a string or integer.

    A missing or odd track id only costs the link, never the observation, so it is not refused.
    """
    try:
        value = _lookup(record, path)
    except _Invalid:
        return ""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    return ""


def _lookup(record: dict[str, Any], path: tuple[str, ...]) -> object:
    """The value at a dot path, or _ABSENT."""
    value: object = record
    for depth, name in enumerate(path):
        if not isinstance(value, dict):
            where = ".".join(path[:depth]) or "the record"
            _fail("wrong_type", f"{where} is {_kind(value)}, not an object")
        value = value.get(name, _ABSENT)
        if value is _ABSENT:
            return _ABSENT
    return value


def _holds_no_vector(target: object, sel: Selector) -> bool:
    """An end-of-frame record may carry nothing, or an empty vector, at the path."""
    if isinstance(target, dict) and sel.cluster:
        target = target.get("representative_fv")
    if not isinstance(target, dict):
        return target is _ABSENT or target is None
    feature = target.get("feature")
    return feature is None or (isinstance(feature, list | bytes) and len(feature) == 0)


def _cluster_parts(target: object, where: str, strict: bool) -> tuple[int, object]:
    """An FVCluster's count and representative FeatureVector.

    A missing ``num_observations`` counts 1, as in UVAP; strict input refuses it.
    """
    if not isinstance(target, dict):
        _fail("wrong_type", f"{where} is {_kind(target)}, not an FVCluster object")
    fv = target.get("representative_fv")
    count = target.get("num_observations")
    if fv is None:
        _fail("missing_field", f"{where}.representative_fv is missing")
    if count is None:
        if strict:
            _fail("missing_field", f"{where}.num_observations is missing")
        count = 1
    if not isinstance(count, int) or isinstance(count, bool):
        _fail("wrong_type", f"{where}.num_observations is {_kind(count)}, not an integer")
    if count < 1:
        _fail("bad_count", f"{where}.num_observations is {count}, must be at least 1")
    return count, fv


def _feature_vector(fv: object, where: str, dimension: int) -> tuple[np.ndarray, str, str]:
    """A FeatureVector's checked float32 vector, model id and type."""
    if not isinstance(fv, dict):
        _fail("wrong_type", f"{where} is {_kind(fv)}, not a FeatureVector object")
    model_id = fv.get("model_id")
    model_id = "" if model_id is None else model_id
    if not isinstance(model_id, str):
        _fail("wrong_type", f"{where}.model_id is {_kind(model_id)}, must be a string")
    type_ = _feature_type(fv.get("type"), f"{where}.type")
    feature = fv.get("feature")
    if feature is None:
        _fail("missing_field", f"{where}.feature is missing")
    vector = _as_float32(feature, f"{where}.feature")
    _check_vector(vector, f"{where}.feature", dimension)
    return vector, model_id, type_


def _feature_type(value: object, where: str) -> str:
    """The FeatureVector type by name: given as a name, or as UVAP's enum number."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value in FEATURE_TYPES:
            return FEATURE_TYPES[value]
        known = ", ".join(f"{name} = {number}" for number, name in FEATURE_TYPES.items())
        _fail("wrong_type", f"{where} is {value}, not a FeatureVector.FeatureType ({known})")
    _fail("wrong_type", f"{where} is {_kind(value)}, must be an enum name or number")


def _as_float32(feature: object, where: str) -> np.ndarray:
    """A 1-d float32 array from a list of numbers or little-endian float32 bytes."""
    if isinstance(feature, bytes):
        if len(feature) % 4:
            _fail("wrong_type", f"{where} has {len(feature)} bytes, not a whole number of float32")
        return np.frombuffer(feature, dtype="<f4").astype(np.float32)
    if not isinstance(feature, list):
        _fail("wrong_type", f"{where} is {_kind(feature)}, not a list of numbers")
    try:
        array = np.asarray(feature)
    except (ValueError, TypeError, OverflowError):
        _fail("wrong_type", f"{where} is not a flat list of numbers")
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        _fail("wrong_type", f"{where} is not a flat list of numbers")
    with np.errstate(over="ignore"):
        return array.astype(np.float32)


def _check_vector(vector: np.ndarray, where: str, dimension: int) -> None:
    """Refuse vectors the engine cannot normalise or compare with the others."""
    if dimension > 0 and vector.shape[0] != dimension:
        _fail("wrong_dimension", f"{where} has {vector.shape[0]} values, expected {dimension}")
    if vector.shape[0] == 0:
        _fail("wrong_dimension", f"{where} is empty")
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        square = float(vector.dot(vector))  # one pass; the element check only when it is off
    if not math.isfinite(square):
        if not np.isfinite(vector).all():
            _fail("non_finite", f"{where} holds NaN or infinite values")
        _fail("non_finite", f"{where} is too long: its norm overflows float32")
    if square == 0.0:
        _fail("zero_vector", f"{where} has length zero (or too small for float32)")


def _kind(value: object) -> str:
    """How a wrong value is named in a detail: its JSON type."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    names |= {int: "a number", float: "a number", bytes: "binary data", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def decode_event(raw: bytes) -> dict[str, Any]:
    """An output record (JSON or msgpack) as a dict, ``feature`` always a list of floats."""
    try:
        body = _parse(raw, "auto", 0)
        if not isinstance(body, dict):
            _fail("not_an_object", f"the record is {_kind(body)}, not an object")
        for name in ("reg_event", "merge_event"):
            fv = _lookup(body, (name, "cluster", "representative_fv"))
            if isinstance(fv, dict) and isinstance(fv.get("feature"), bytes):
                fv["feature"] = _as_float32(fv["feature"], f"{name}.cluster").tolist()
    except _Invalid as exc:
        raise DecodeError(exc.reason, exc.detail, bytes(raw or b"")) from None
    return body


def cluster_name(cluster_id: dict[str, Any] | None) -> str:
    """``<stream>:<detection key>``, the cluster id string used as Kafka key."""
    if not isinstance(cluster_id, dict):
        return "?"
    stream = cluster_id.get("first_detection_stream_id", "?")
    return f"{stream}:{cluster_id.get('first_detection_key', '?')}"
