"""The realized clusters a re-identification service matches against: a view and its index.

The view (``app.downstream.view.ClusterView``) decides what is realized now; the index only mirrors
it, so after every batch of events the ids the view reports as changed are upserted (if still
realized) or removed. One lock serialises the topic follower's updates and the searches of HTTP
requests and the streaming matcher, which run on other threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.codec.decode import cluster_name
from app.downstream.view import ClusterView, ViewCluster
from app.index import make_index

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One realized cluster proposed for a query."""

    cluster_id: str
    similarity: float
    num_observations: int

    def to_dict(self) -> dict[str, Any]:
        """The wire form of a candidate."""
        return {
            "cluster_id": self.cluster_id,
            "similarity": round(self.similarity, 6),
            "num_observations": self.num_observations,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """The best ``k`` clusters for one query, and whether the best reaches the threshold."""

    candidates: tuple[Candidate, ...]
    match: bool

    @property
    def best(self) -> Candidate | None:
        """The most similar cluster, if there is any."""
        return self.candidates[0] if self.candidates else None

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``match``, the best ``cluster_id`` and ``similarity``, ``candidates``."""
        best = self.best
        return {
            "match": self.match,
            "cluster_id": best.cluster_id if best else None,
            "similarity": round(best.similarity, 6) if best else None,
            "candidates": [c.to_dict() for c in self.candidates],
        }


class ReidState:
    """Realized clusters (view) and their representatives (index), safe to share by threads."""

    def __init__(self, index_kind: str = "exact", device: str = "auto") -> None:
        self.view = ClusterView()
        self.index = make_index(index_kind, device)
        self.lock = threading.Lock()
        self.dropped = 0  # representatives refused for a dimension other than the index's

    def __len__(self) -> int:
        return len(self.view.clusters)

    @property
    def dimension(self) -> int:
        """Dimension of the representatives (0 until the first one arrived)."""
        return int(self.index.table.dim)

    def apply(self, events: Iterable[dict[str, Any]]) -> int:
        """Apply decoded events in order; returns how many were refused as malformed.

        A malformed event (a field missing or of the wrong type) is logged and skipped; the
        ids it names are re-synchronised anyway, so the index never drifts from the view.
        """
        refused = 0
        with self.lock:
            changed: dict[str, None] = {}
            for event in events:
                try:
                    changed.update(dict.fromkeys(self.view.apply(event)))
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    refused += 1
                    log.warning("skipped a malformed %s event %s: %r", event.get("type"),
                                event.get("event_id"), exc)
                    changed.update(dict.fromkeys(_named_ids(event)))
            self._sync(list(changed))
        return refused

    def identify(self, queries: np.ndarray, k: int, threshold: float) -> list[Answer]:
        """Top-``k`` realized clusters for each row of ``queries`` (normalised here)."""
        queries = np.asarray(queries, dtype=np.float64).reshape(len(queries), -1)
        norms = np.linalg.norm(queries, axis=1, keepdims=True)  # float64: no overflow
        queries = (queries / np.maximum(norms, np.finfo(np.float64).tiny)).astype(np.float32)
        with self.lock:
            if len(self.index) == 0:
                return [Answer((), False) for _ in range(len(queries))]
            if queries.shape[1] != self.dimension:
                message = (f"vectors have {queries.shape[1]} values; the clusters have "
                           f"{self.dimension}")
                raise ValueError(message)
            sims, slots = self.index.search(queries, k)
            return [
                self._answer(row_sims, row_slots, threshold)
                for row_sims, row_slots in zip(sims.tolist(), slots.tolist(), strict=True)
            ]

    def _answer(self, sims: list[float], slots: list[int], threshold: float) -> Answer:
        found = []
        for sim, slot in zip(sims, slots, strict=True):
            if slot < 0:
                break
            cluster = self.view.clusters[self.index.key_at(slot)]
            found.append(Candidate(cluster.key, float(sim), cluster.num_observations))
        return Answer(tuple(found), bool(found) and found[0].similarity >= threshold)

    def lookup(self, cluster_id: str) -> tuple[str, ViewCluster | None]:
        """Where ``cluster_id``'s members are now (following merges), and that cluster.

        The cluster is None when it was deleted or is not realized.
        """
        with self.lock:
            current = self.view.resolve(cluster_id)
            return current, self.view.clusters.get(current)

    def _sync(self, changed: list[str]) -> None:
        """Make the index hold exactly the view's representatives for ``changed`` ids.

        A representative that cannot be searched (another dimension than the others, as from
        another model; not finite; zero) is logged and left out of the view too.
        """
        clusters = self.view.clusters
        gone = [key for key in changed if key not in clusters]
        present = [key for key in changed if key in clusters]
        dim = self.dimension or (clusters[present[0]].representative.shape[0] if present else 0)
        misfits = [key for key in present if not _usable(clusters[key].representative, dim)]
        if misfits:
            log.warning("left out %d clusters whose representative is not a finite, non-zero "
                        "vector of dimension %d, e.g. %s", len(misfits), dim, misfits[0])
            self.dropped += len(misfits)
            for key in misfits:
                clusters.pop(key)
            gone += misfits
            present = [key for key in present if key in clusters]
        if gone:
            self.index.remove(gone)
        if present:
            vectors = np.stack([clusters[key].representative for key in present])
            norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
            self.index.upsert(present, (vectors / norms).astype(np.float32))


def _usable(vector: np.ndarray, dim: int) -> bool:
    if vector.ndim != 1 or vector.shape[0] != dim or not np.isfinite(vector).all():
        return False
    return bool(np.any(vector))


def _named_ids(event: dict[str, Any]) -> list[str]:
    """Every cluster id an event mentions, whatever its shape."""
    names = []
    for part in ("reg_event", "merge_event", "delete_event"):
        body = event.get(part)
        if isinstance(body, dict):
            ids = [body.get("cluster_id"), body.get("deleted_cluster")]
            merged = body.get("merged_clusters")
            ids += merged if isinstance(merged, list) else []
            names += [cluster_name(i) for i in ids if isinstance(i, dict)]
    return names
