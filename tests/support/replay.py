"""A scene as a live run sees it, and a live run's answer as ``fvc evaluate`` writes its own.

Shared by the in-process and the real-Kafka equivalence tests (issue: event time everywhere):
records as ``fvc produce`` sends them, the offline assignments of the same scene, and a live
run's assignments resolved through its MERGE events.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import orjson

from app.config import ClusteringConfig, parse_config
from app.engine import Engine
from app.offline.evaluate import evaluate
from app.offline.produce import as_rows, encode_records, routes_for
from app.offline.synth import Scene
from app.store import MemoryStore
from app.worker.pipeline import RawRecord

Assignments = dict[tuple[str, str], str]  # (stream, detection key) -> final cluster id


def event_time_config(
    streams: Iterable[str], *, interval_ms: int = 2_000, retention_ms: int = 15_000
) -> ClusteringConfig:
    """A config with every timer in play.

    Merging every ``interval_ms``, retention, realization by count and by time, and updates of
    unrealized clusters emitted (so every merge is visible to a consumer).
    """
    registration = {"reg_threshold": 0.6, "cluster_retention_period_ms": retention_ms}
    configs = [
        {
            "stream_id": s,
            "fv_field_selector": {"feature_vector_path": "features"},
            "reg_stream_config": registration,
        }
        for s in streams
    ]
    clustering = {
        "method": "SIMPLE_AVERAGE",
        "cluster_realization": {"num_samples": 4, "time_limit_ms": 3_000},
        "cluster_merging": {
            "initial_threshold": 0.75, "threshold_discount_rate": 0.98, "min_threshold": 0.55,
            "time_interval_ms": interval_ms,
        },
        "emit_unrealized": True,
    }
    return parse_config({"clustering_config": clustering, "input_stream_configs": configs})


def scene_records(scene: Scene, config: ClusteringConfig) -> list[RawRecord]:
    """The records ``fvc produce`` sends for ``scene``: one partition per stream's topic."""
    rows = as_rows(scene)
    offsets: dict[str, int] = {}
    out = []
    for outgoing, value in encode_records(rows, routes_for(rows.streams, config)):
        offset = offsets.get(outgoing.topic, 0)
        offsets[outgoing.topic] = offset + 1
        out.append(RawRecord(outgoing.topic, 0, offset, outgoing.key.encode(), value,
                             outgoing.timestamp))
    return out


def offline_assignments(scene: Scene, config: ClusteringConfig, batch_size: int = 512) -> (
    Assignments
):
    """``fvc evaluate --assignments`` of ``scene``, read back."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "assignments.jsonl"
        evaluate(scene, config, Engine(config), MemoryStore(), batch_size=batch_size,
                 assignments=path)
        lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return {(a["stream"], a["key"]): a["cluster_id"] for a in lines}


class LiveAnswer:
    """A live run's assignments resolved through its MERGE events, as a consumer would."""

    def __init__(self) -> None:
        self.assigned: Assignments = {}
        self.parent: dict[str, str] = {}

    def assignment(self, value: bytes) -> None:
        """An assignments-topic record."""
        body = orjson.loads(value)
        self.assigned[(body["stream_id"], body["key"])] = body["cluster_id"]

    def event(self, value: bytes) -> None:
        """A downstream event (JSON); MERGE events re-point the clusters they absorbed."""
        body = orjson.loads(value)
        if body.get("type") != "MERGE_EVENT":
            return
        merge = body["merge_event"]
        survivor = _key(merge["cluster_id"])
        for absorbed in merge["merged_clusters"]:
            self.parent[_key(absorbed)] = survivor

    def final(self) -> Assignments:
        """Each observation's cluster at the end of the run."""
        return {where: self._root(key) for where, key in self.assigned.items()}

    def _root(self, key: str) -> str:
        while key in self.parent:
            key = self.parent[key]
        return key


def _key(cluster_id: dict) -> str:
    return f"{cluster_id['first_detection_stream_id']}:{cluster_id['first_detection_key']}"
