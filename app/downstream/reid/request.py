"""Checking an identify request: JSON or msgpack in, float32 queries and options out.

Every way a request can be wrong becomes a ``BadRequest`` whose message names the field and
what was expected, because the caller is usually a program written against the OpenAPI document
and the message is what its author reads. The vector rules are the worker's (finite, not zero,
one dimension for all), so anything the clusterer would take can be identified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import orjson

MAX_K = 100
MAX_VECTORS = 10_000
# No Content-Type, or curl's -d default, is read as JSON: that is what such callers send.
JSON_TYPES = ("application/json", "", "text/plain", "application/x-www-form-urlencoded")
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
FIELDS = ("vector", "vectors", "k", "threshold")


class BadRequest(ValueError):
    """A request that cannot be answered; ``status`` is 400, or 415 for an unknown body type."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class IdentifyRequest:
    """Queries (one row each, float32, not normalised), how many clusters, and the threshold."""

    queries: np.ndarray
    k: int
    threshold: float


def parse_identify(
    body: bytes, content_type: str, *, k: int, threshold: float
) -> IdentifyRequest:
    """The request in ``body``; ``k`` and ``threshold`` are the defaults when it names none."""
    data = _parse(body, content_type.split(";")[0].strip().lower())
    if not isinstance(data, dict):
        raise BadRequest('the body must be an object with "vector" or "vectors"')
    unknown = sorted(str(name) for name in data if name not in FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    if ("vector" in data) == ("vectors" in data):
        raise BadRequest('give exactly one of "vector" (one query) and "vectors" (a batch)')
    if "vector" in data:
        rows = [_vector(data["vector"], "vector")]
    else:
        rows = _batch(data["vectors"])
    return IdentifyRequest(
        np.stack(rows), _k(data.get("k", k)), _threshold(data.get("threshold", threshold))
    )


def _parse(body: bytes, content_type: str) -> object:
    if not body:
        raise BadRequest('empty body; send {"vector": [...]} as JSON or msgpack')
    if content_type in MSGPACK_TYPES:
        try:
            return msgpack.unpackb(body, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise BadRequest(f"the body is not msgpack: {type(exc).__name__}") from None
    if content_type in JSON_TYPES:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
    types = ", ".join((*JSON_TYPES[:1], *MSGPACK_TYPES[:1]))
    raise BadRequest(f"unsupported Content-Type {content_type!r}; use {types}", status=415)


def _batch(value: object) -> list[np.ndarray]:
    if not isinstance(value, list) or not value:
        raise BadRequest('"vectors" must be a non-empty array of vectors')
    if len(value) > MAX_VECTORS:
        raise BadRequest(f'"vectors" holds {len(value)} vectors; at most {MAX_VECTORS} a request')
    rows = [_vector(v, f"vectors[{i}]") for i, v in enumerate(value)]
    for i, row in enumerate(rows):
        if row.shape[0] != rows[0].shape[0]:
            raise BadRequest(f"vectors[{i}] has {row.shape[0]} values but vectors[0] has "
                             f"{rows[0].shape[0]}; all must have one dimension")
    return rows


def _vector(value: object, where: str) -> np.ndarray:
    """A list of numbers, little-endian float32 bytes (msgpack), or a FeatureVector object."""
    if isinstance(value, dict):
        if "feature" not in value:
            raise BadRequest(f'{where} is an object without "feature"')
        value, where = value["feature"], f"{where}.feature"
    if isinstance(value, bytes):
        if not value or len(value) % 4:
            raise BadRequest(f"{where} has {len(value)} bytes, not a whole number of float32")
        array = np.frombuffer(value, dtype="<f4").astype(np.float32)
    elif isinstance(value, list) and value:
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
            raise BadRequest(f"{where} must be a flat array of numbers")
        with np.errstate(over="ignore"):
            array = np.asarray(value, dtype=np.float64).astype(np.float32)
    else:
        raise BadRequest(f"{where} must be a non-empty array of numbers (or float32 bytes)")
    if not np.isfinite(array).all():
        raise BadRequest(f"{where} holds NaN or infinite values (or numbers too large)")
    if not np.any(array):
        raise BadRequest(f"{where} is all zeros: a zero vector has no direction to compare")
    return array


def _k(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_K:
        raise BadRequest(f'"k" must be an integer from 1 to {MAX_K}, not {value!r}')
    return value


def _threshold(value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not -1.0 <= value <= 1.0:
        raise BadRequest(f'"threshold" must be a number from -1 to 1, not {value!r}')
    return float(value)
