"""The clusters an engine holds, as rows of arrays: no Python object per cluster.

A million clusters held as ``Cluster`` values cost ~700 bytes of Python objects each (the
value, its id, a dozen integers, the streams tuple) on top of two float32 copies of the
representative (the cluster's and the index's), and every one is an object the garbage
collector walks. Here a cluster is a row: its integer fields in one int64 matrix, its norm in
a float64 column, its strings (streams, model id, type) as codes into tables of the distinct
values, its track (rare) in a small dict, and its representative only in the index's table.
Rows are the index's slots, so the index's key map serves both: the engine upserts a cluster
in the index before its row, and hands the rows the index moved when it removes some
(``moved``). The id's detection key is the part of the key after the first detection stream's
``stream:`` prefix, so it is not stored again.

``ClusterColumns`` reads as a mapping of key to ``Cluster``: a lookup builds the value from its
row (a copy, so it stays valid after later changes). Code that only needs a field or two of
one cluster reads its row instead (``row``, ``version_of``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

import numpy as np

from app.engine.types import Cluster, ClusterId

if TYPE_CHECKING:
    from app.index.base import VectorIndex

class Row(NamedTuple):
    """A cluster's integer columns, as Python ints (codes for its strings)."""

    first_detection_time: int
    num_observations: int
    realized: int
    first_time: int
    last_time: int
    retention_ms: int
    version: int
    pending: int
    pending_since: int
    last_emit_time: int
    emitted: int
    track_time: int
    stream: int  # code of the first detection stream id
    streams: int  # code of the streams tuple
    model_id: int  # code
    type: int  # code


FIELD = {name: i for i, name in enumerate(Row._fields)}  # column of each field in ``gather``
_WIDTH = len(Row._fields)
_VERSION = Row._fields.index("version")
_REALIZED = Row._fields.index("realized")
_RETENTION = Row._fields.index("retention_ms")

_V = TypeVar("_V", str, tuple[str, ...])


class _Codes(Generic[_V]):
    """Small integers for the few distinct values of a field (stream ids, models, types)."""

    def __init__(self) -> None:
        self.values: list[_V] = []
        self._codes: dict[_V, int] = {}

    def code(self, value: _V) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self.values)
            self.values.append(value)
        return code


class ClusterColumns(Mapping[str, Cluster]):
    """Every held cluster as a row; representatives are read from ``index``'s table."""

    def __init__(self, index: VectorIndex, capacity: int = 1024) -> None:
        self._index = index
        self._ints = np.zeros((capacity, _WIDTH), dtype=np.int64)
        self._norms = np.zeros(capacity, dtype=np.float64)
        self._tracks: dict[str, str] = {}  # key -> track, only for clusters a track fed
        self._names: _Codes[str] = _Codes()  # stream ids, model ids, types
        self._streams: _Codes[tuple[str, ...]] = _Codes()

    # -- the mapping ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        index = self._index
        return iter([index.key_at(slot) for slot in range(len(index))])

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __getitem__(self, key: str) -> Cluster:
        at = self._index.slot_of(key)
        (
            detected, members, realized, first, last, retention, version, pending, since,
            emitted_at, emitted, track_time, stream, streams, model, kind,
        ) = self._ints[at].tolist()  # one call for every field: this is on the hot path
        names = self._names.values
        stream_id = names[stream]
        return Cluster(
            ClusterId(detected, key[len(stream_id) + 1 :], stream_id),
            self._index.vector(key),
            float(self._norms[at]),
            members,
            bool(realized),
            first,
            last,
            self._streams.values[streams],
            retention,
            version,
            pending,
            since,
            emitted_at,
            bool(emitted),
            names[model],
            names[kind],
            self._tracks.get(key, ""),
            track_time,
        )

    # -- reading columns --------------------------------------------------------------------------

    def row(self, key: str) -> Row:
        """The integer fields of cluster ``key`` (KeyError when it is not held)."""
        return Row._make(self._ints[self._index.slot_of(key)].tolist())

    def gather(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The integer fields (one row per slot, columns as ``FIELD``) and norms at ``slots``."""
        return self._ints[slots], self._norms[slots]

    def version_of(self, key: str) -> int | None:
        """The version of ``key``, None when it is not held."""
        if key not in self._index:
            return None
        return int(self._ints[self._index.slot_of(key), _VERSION])

    def mortal(self, key: str) -> bool:
        """Whether ``key`` is held with a retention period (it can expire)."""
        return key in self._index and bool(self._ints[self._index.slot_of(key), _RETENTION] > 0)

    def track_of(self, key: str) -> str:
        """The track that last fed ``key`` ("" when none did, or it is not held)."""
        return self._tracks.get(key, "")

    def realized_count(self) -> int:
        """How many clusters are realized (one pass over a column, no values built)."""
        return int(self._ints[: len(self._index), _REALIZED].sum())

    # -- writing --------------------------------------------------------------------------------

    def put(self, cluster: Cluster) -> None:
        """Hold ``cluster`` in its row: the index's slot, where its representative was put."""
        key = cluster.key
        row = self._index.slot_of(key)
        if row >= len(self._norms):
            self._grow(max(row + 1, 2 * len(self._norms)))
        names = self._names
        cid = cluster.id
        self._ints[row] = (
            cid.first_detection_time,
            cluster.num_observations,
            cluster.realized,
            cluster.first_time,
            cluster.last_time,
            cluster.retention_ms,
            cluster.version,
            cluster.pending,
            cluster.pending_since,
            cluster.last_emit_time,
            cluster.emitted,
            cluster.track_time,
            names.code(cid.first_detection_stream_id),
            self._streams.code(cluster.streams),
            names.code(cluster.model_id),
            names.code(cluster.type),
        )
        self._norms[row] = cluster.norm
        if cluster.track:
            self._tracks[key] = cluster.track
        else:
            self._tracks.pop(key, None)

    def forget(self, key: str) -> None:
        """``key`` is about to be removed from the index: drop what is kept by key."""
        self._tracks.pop(key, None)

    def moved(self, moves: Sequence[tuple[str, int, int]]) -> None:
        """Follow the rows the index moved (``(key, old slot, new slot)``, in order)."""
        for _key, old, new in moves:
            self._ints[new] = self._ints[old]
            self._norms[new] = self._norms[old]

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` clusters at once (a bootstrap), no more."""
        if rows > len(self._norms):
            self._grow(rows)

    def _grow(self, capacity: int) -> None:
        ints = np.zeros((capacity, _WIDTH), dtype=np.int64)
        ints[: len(self._ints)] = self._ints
        norms = np.zeros(capacity, dtype=np.float64)
        norms[: len(self._norms)] = self._norms
        self._ints, self._norms = ints, norms
