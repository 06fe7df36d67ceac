"""Compact binary form of a ``Cluster``: one msgpack array, the vector as raw float32 bytes.

A positional array (not a map) keeps each blob small, since a million clusters live in one
Redis hash; the leading format number lets a later layout be read next to this one. The vector
is little-endian float32 whatever the host, and decoding wraps the blob's bytes without a copy.

Format 2 holds the accumulator as its unit direction and its norm (app/engine/rules.py).
Format 1, written before, held the accumulator itself; it is still read (a store written by an
older worker), its direction and norm computed on the way in. Blobs are always written in
format 2.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable

import msgpack
import numpy as np

from app.engine.rules import normalized
from app.engine.types import Cluster, ClusterId

FORMAT = 2
ACCUMULATOR_FORMAT = 1  # the accumulator stored whole: read, never written
_F32 = np.dtype("<f4")
_unpack = msgpack.unpackb

# Cluster's fields after ``id``, in declaration order: the blob's layout from its fifth item on.
LAYOUT = (
    "unit",
    "norm",
    "num_observations",
    "realized",
    "first_time",
    "last_time",
    "streams",
    "retention_ms",
    "version",
    "pending",
    "pending_since",
    "last_emit_time",
    "emitted",
    "model_id",
    "type",
    "track",
    "track_time",
)


def encode_vector(vector: np.ndarray) -> bytes:
    """Little-endian float32 bytes of a vector (no conversion when it already is one)."""
    return np.ascontiguousarray(vector, dtype=_F32).tobytes()


def encode_cluster(cluster: Cluster) -> bytes:
    """Pack a cluster into one msgpack array."""
    cid = cluster.id
    fields = [
        FORMAT,
        cid.first_detection_time,
        cid.first_detection_key,
        cid.first_detection_stream_id,
        encode_vector(cluster.unit),
    ]
    fields += [getattr(cluster, name) for name in LAYOUT[1:]]
    return msgpack.packb(fields, use_bin_type=True, default=_plain)


def _plain(value: object) -> object:
    """Numpy scalars (an engine may hand out ``np.int64`` counters) as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    message = f"cannot store a {type(value).__name__} in a cluster"
    raise TypeError(message)


def decode_cluster(blob: bytes) -> Cluster:
    """Unpack a blob made by ``encode_cluster``; the vector is a read-only view of ``blob``.

    After the id the blob holds ``Cluster``'s fields in declaration order, so they are passed
    positionally: a million clusters decode markedly faster that way at index bootstrap.
    """
    fields = _unpack(blob, use_list=False, raw=False)
    cid = ClusterId(fields[1], fields[2], fields[3])
    if fields[0] == FORMAT:
        return Cluster(cid, np.frombuffer(fields[4], dtype=_F32), *fields[5:])
    if fields[0] == ACCUMULATOR_FORMAT:
        units, norms = normalized(np.frombuffer(fields[4], dtype=_F32)[None])
        return Cluster(cid, units[0], float(norms[0]), *fields[5:])
    message = f"unknown cluster blob format {fields[0]!r}"
    raise ValueError(message)


def decode_many(blobs: Iterable[bytes]) -> list[Cluster]:
    """Decode a page of blobs with the cyclic garbage collector paused.

    The decoded values hold no reference cycles, yet allocating a million of them (index
    bootstrap) would trigger repeated full collections over everything already loaded: pausing
    halves the time of ``load_all``. The collector's previous state is restored afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [decode_cluster(blob) for blob in blobs]
    finally:
        if was_enabled:
            gc.enable()
