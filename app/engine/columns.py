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
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Some clusters' rows as they were (``keys``), and the keys that were not held."""

    keys: list[str]
    absent: list[str]
    ints: np.ndarray
    norms: np.ndarray
    units: np.ndarray
    tracks: dict[str, str]


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
        vector, track = self._index.vector(key), self._tracks.get(key, "")
        return self._cluster(key, self._ints[at].tolist(), float(self._norms[at]), vector, track)

    def at(self, slots: np.ndarray) -> list[Cluster]:
        """The clusters at index ``slots``, read with one gather per column (a batch's touches)."""
        index, tracks = self._index, self._tracks
        units = index.vectors[slots]
        rows, norms = self._ints[slots].tolist(), self._norms[slots].tolist()
        keys = [index.key_at(slot) for slot in slots.tolist()]
        return [
            self._cluster(key, rows[i], norms[i], units[i], tracks.get(key, ""))
            for i, key in enumerate(keys)
        ]

    def _cluster(
        self, key: str, ints: list[int], norm: float, unit: np.ndarray, track: str
    ) -> Cluster:
        """The ``Cluster`` of a row's values (``ints``: the row as Python ints)."""
        (
            detected, members, realized, first, last, retention, version, pending, since,
            emitted_at, emitted, track_time, stream, streams, model, kind,
        ) = ints
        names = self._names.values
        stream_id = names[stream]
        return Cluster(
            ClusterId(detected, key[len(stream_id) + 1 :], stream_id),
            unit,
            norm,
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
            track,
            track_time,
        )

    def snapshot(self, keys: Sequence[str]) -> Snapshot:
        """The rows of ``keys`` as they are now (copies), for ``restore``; absent keys too.

        Cheaper than reading each as a ``Cluster``: one gather per column for all of them.
        """
        index = self._index
        held = [key for key in keys if key in index]
        slots = np.fromiter((index.slot_of(k) for k in held), dtype=np.int64, count=len(held))
        return Snapshot(
            keys=held,
            absent=[key for key in keys if key not in index],
            ints=self._ints[slots],
            norms=self._norms[slots],
            units=index.vectors[slots],
            tracks={key: self._tracks[key] for key in held if key in self._tracks},
        )

    def restore(self, snapshot: Snapshot) -> list[Cluster]:
        """The clusters a ``snapshot`` holds, as values to put back."""
        rows, norms = snapshot.ints.tolist(), snapshot.norms.tolist()
        return [
            self._cluster(key, rows[i], norms[i], snapshot.units[i], snapshot.tracks.get(key, ""))
            for i, key in enumerate(snapshot.keys)
        ]

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

    def mortals(self, keys: Sequence[str]) -> int:
        """How many of ``keys`` are held with a retention period (``mortal``, all at once)."""
        index = self._index
        held = [index.slot_of(k) for k in keys if k in index]
        return int((self._ints[held, _RETENTION] > 0).sum()) if held else 0

    def track_of(self, key: str) -> str:
        """The track that last fed ``key`` ("" when none did, or it is not held)."""
        return self._tracks.get(key, "")

    def realized_count(self) -> int:
        """How many clusters are realized (one pass over a column, no values built)."""
        return int(self._ints[: len(self._index), _REALIZED].sum())

    # -- writing --------------------------------------------------------------------------------

    def put(self, clusters: Sequence[Cluster]) -> None:
        """Hold ``clusters`` in their rows: the index's slots, where their representatives were put.

        The rows are written with one assignment per column group, not one per cluster.
        """
        if not clusters:
            return
        index, names, streams, tracks = self._index, self._names, self._streams, self._tracks
        slots = np.fromiter(
            (index.slot_of(c.key) for c in clusters), dtype=np.int64, count=len(clusters)
        )
        top = int(slots.max())
        if top >= len(self._norms):
            self._grow(max(top + 1, 2 * len(self._norms)))
        self._ints[slots] = [
            (
                c.id.first_detection_time, c.num_observations, c.realized, c.first_time,
                c.last_time, c.retention_ms, c.version, c.pending, c.pending_since,
                c.last_emit_time, c.emitted, c.track_time,
                names.code(c.id.first_detection_stream_id), streams.code(c.streams),
                names.code(c.model_id), names.code(c.type),
            )
            for c in clusters
        ]
        self._norms[slots] = [c.norm for c in clusters]
        for cluster in clusters:
            if cluster.track:
                tracks[cluster.key] = cluster.track
            elif tracks:
                tracks.pop(cluster.key, None)

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
