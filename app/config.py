"""The clustering configuration: UVAP-style JSON turned into one frozen, validated value.

Validation collects every problem at once (schema and cross-field rules) so an operator fixes a
file in one go; each problem names the JSON path, the value found and the rule it breaks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, cast

from app.errors import ConfigError
from schemas.problems import (
    Problem,
    non_finite_problems,
    read_json_file,
    schema_problems,
    sort_problems,
)

METHODS = ("USE_LAST", "SIMPLE_AVERAGE", "EXP_AVERAGE")
ACTIONS = ("KEEP_REALIZED", "UNREALIZE", "REMOVE")
DEFAULT_EMA_ALPHA = 0.1
DEFAULT_SIZE_DISCOUNT = 0.03  # improved mode: how far thresholds fall for large clusters
DEFAULT_TRACK_WINDOW_MS = 5000  # a track unseen this long starts over (a tracker reuses ids)
TOPIC_SUFFIX = ".FeatureVectorRecord.json"


def default_topic(stream_id: str) -> str:
    """The topic a stream reads when its config names none, as UVAP does."""
    return stream_id + TOPIC_SUFFIX


@dataclass(frozen=True, slots=True)
class RealizationConfig:
    """When a new cluster becomes an identity, and what happens to it then."""

    num_samples: int
    time_limit_ms: int = 0
    action: str = "KEEP_REALIZED"


@dataclass(frozen=True, slots=True)
class MergingConfig:
    """The periodic merge pass: a threshold that falls as clusters grow, down to a floor."""

    initial_threshold: float
    threshold_discount_rate: float
    min_threshold: float
    time_interval_ms: int

    def threshold(self, n_a: int, n_b: int) -> float:
        """Similarity two clusters of ``n_a`` and ``n_b`` observations need to merge."""
        discounted = self.initial_threshold * self.threshold_discount_rate ** (n_a + n_b)
        return max(self.min_threshold, discounted)


@dataclass(frozen=True, slots=True)
class ImprovedModeConfig:
    """The improved online mode (``clustering_config.improved_mode``, docs/quality.md).

    With ``enabled``, joins and merges compare the *mean similarity between members* (exact from
    a SIMPLE_AVERAGE sum: ``x . S / n`` and ``S_a . S_b / (n_a n_b)``) with a threshold that falls
    by up to ``size_discount`` as clusters grow, because the mean over more members is a less
    noisy estimate. Off, or absent, the engine follows DESIGN.md section 4 exactly.
    """

    enabled: bool
    size_discount: float = DEFAULT_SIZE_DISCOUNT

    def discount(self, n_a: int, n_b: int) -> float:
        """How much lower the threshold is for clusters of ``n_a`` and ``n_b`` observations.

        Zero for two single observations, rising to ``size_discount`` as both grow: the standard
        error of a mean similarity over n_a x n_b member pairs shrinks like sqrt(1/n_a + 1/n_b).

        >>> mode = ImprovedModeConfig(True, 0.03)
        >>> mode.discount(1, 1), round(mode.discount(1, 10**6), 4), round(mode.discount(50, 50), 4)
        (0.0, 0.0088, 0.0258)
        """
        return self.size_discount * (1.0 - math.sqrt((1.0 / n_a + 1.0 / n_b) / 2.0))


@dataclass(frozen=True, slots=True)
class TrackLinkingConfig:
    """Keep one tracker track of a stream in one cluster (docs/tracks.md).

    An observation whose record carries a track id at ``id_path`` joins the cluster its track
    last fed, when that was at most ``window_ms`` ago (event time) and the observation is at
    least ``threshold`` similar to it, unless another cluster reaches ``reg_threshold`` and is
    more similar still.
    """

    id_path: str
    threshold: float
    window_ms: int = DEFAULT_TRACK_WINDOW_MS


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """One input stream: its topic, where the vector is in a record, and its thresholds.

    Exactly one of ``feature_vector_path`` and ``fv_cluster_path`` is set.
    """

    stream_id: str
    topic: str
    feature_vector_path: str | None
    fv_cluster_path: str | None
    reg_threshold: float
    retention_ms: int = 0
    track_linking: TrackLinkingConfig | None = None

    @property
    def path(self) -> str:
        """The dot path of the vector (or of the FVCluster) in each record."""
        return self.fv_cluster_path or self.feature_vector_path or ""


@dataclass(frozen=True, slots=True)
class ClusteringConfig:
    """The whole clustering configuration, immutable once validated."""

    method: str
    ema_alpha: float
    realization: RealizationConfig | None
    merging: MergingConfig | None
    save_internal_state: bool
    start_from_internal_state: bool
    emit_unrealized: bool
    min_update_interval_ms: int
    streams: tuple[StreamConfig, ...]
    improved: ImprovedModeConfig | None = None

    @property
    def improved_mode(self) -> ImprovedModeConfig | None:
        """The improved mode when it is switched on, else None (plain DESIGN.md semantics)."""
        return self.improved if self.improved is not None and self.improved.enabled else None

    def stream(self, stream_id: str) -> StreamConfig:
        """The config of stream ``stream_id``; KeyError names the known ones."""
        for stream in self.streams:
            if stream.stream_id == stream_id:
                return stream
        message = f"unknown stream {stream_id!r}; configured: {', '.join(self.stream_ids)}"
        raise KeyError(message)

    def by_topic(self, topic: str) -> StreamConfig:
        """The stream that reads ``topic`` (how a worker maps a message to its stream)."""
        for stream in self.streams:
            if stream.topic == topic:
                return stream
        message = f"no stream reads topic {topic!r}"
        raise KeyError(message)

    @property
    def stream_ids(self) -> tuple[str, ...]:
        """Stream ids in config order."""
        return tuple(s.stream_id for s in self.streams)

    @property
    def topics(self) -> tuple[str, ...]:
        """Input topics in config order."""
        return tuple(s.topic for s in self.streams)

    @classmethod
    def for_threshold(
        cls,
        threshold: float,
        stream_ids: Iterable[str],
        method: str = "SIMPLE_AVERAGE",
        track_linking: dict[str, Any] | None = None,
    ) -> ClusteringConfig:
        """A plain config: one threshold for all streams, no realization, merging or retention.

        Used where only the threshold matters (``fvc evaluate --threshold``); validated like a
        file, so a bad threshold is refused the same way. ``track_linking`` (the config's JSON
        object) is given to every stream.
        """
        streams = [
            {
                "stream_id": stream_id,
                "fv_field_selector": {"feature_vector_path": "features"},
                "reg_stream_config": {"reg_threshold": threshold},
            }
            | ({} if track_linking is None else {"track_linking": track_linking})
            for stream_id in stream_ids
        ]
        data = {"clustering_config": {"method": method}, "input_stream_configs": streams}
        return parse_config(data)

    def to_dict(self) -> dict[str, Any]:
        """The canonical UVAP JSON of this config: every field explicit, no aliases."""
        clustering: dict[str, Any] = {"method": self.method, "ema_alpha": self.ema_alpha}
        if self.realization is not None:
            clustering["cluster_realization"] = {
                "num_samples": self.realization.num_samples,
                "time_limit_ms": self.realization.time_limit_ms,
                "realized_cluster_action": self.realization.action,
            }
        if self.merging is not None:
            m = self.merging
            clustering["cluster_merging"] = {
                "initial_threshold": m.initial_threshold,
                "threshold_discount_rate": m.threshold_discount_rate,
                "min_threshold": m.min_threshold,
                "time_interval_ms": m.time_interval_ms,
            }
        clustering["save_internal_state"] = self.save_internal_state
        clustering["start_from_internal_state"] = self.start_from_internal_state
        clustering["emit_unrealized"] = self.emit_unrealized
        clustering["min_update_interval_ms"] = self.min_update_interval_ms
        if self.improved is not None:
            clustering["improved_mode"] = {
                "enabled": self.improved.enabled,
                "size_discount": self.improved.size_discount,
            }
        streams = [_stream_dict(s) for s in self.streams]
        return {"clustering_config": clustering, "input_stream_configs": streams}


def _stream_dict(stream: StreamConfig) -> dict[str, Any]:
    """One canonical entry of ``input_stream_configs``."""
    selector = (
        {"fv_cluster_path": stream.fv_cluster_path}
        if stream.fv_cluster_path is not None
        else {"feature_vector_path": stream.feature_vector_path}
    )
    entry: dict[str, Any] = {
        "stream_id": stream.stream_id,
        "topic": stream.topic,
        "fv_field_selector": selector,
        "reg_stream_config": {
            "reg_threshold": stream.reg_threshold,
            "cluster_retention_period_ms": stream.retention_ms,
        },
    }
    tracks = stream.track_linking
    if tracks is not None:
        entry["track_linking"] = {
            "track_id_path": tracks.id_path,
            "track_threshold": tracks.threshold,
            "time_window_ms": tracks.window_ms,
        }
    return entry


def load_config(path: str | Path) -> ClusteringConfig:
    """Read, validate and build the config in file ``path``; ConfigError lists every problem."""
    data, problems = read_json_file(path)
    if problems:
        raise ConfigError(problems)
    return parse_config(data)


def parse_config(data: object) -> ClusteringConfig:
    """Validate ``data`` (parsed JSON) against the schema and the cross-field rules, then build.

    Raises ConfigError with every problem found, not just the first.
    """
    problems = schema_problems("config", data)
    seen = {path for path, _, _ in problems}
    problems += [p for p in non_finite_problems(data) if p[0] not in seen]
    problems += _cross_field_problems(data)
    if problems:
        raise ConfigError(sort_problems(problems))
    return _build(cast(dict[str, Any], data))  # the schema made sure it is an object


def _cross_field_problems(data: object) -> list[Problem]:
    """Rules one field cannot state alone; each checks only values of the right type."""
    if not isinstance(data, dict):
        return []
    problems: list[Problem] = []
    clustering = data.get("clustering_config")
    if isinstance(clustering, dict):
        problems += _method_problems(clustering)
        problems += _merging_problems(clustering.get("cluster_merging"))
        problems += _improved_problems(clustering)
    streams = data.get("input_stream_configs")
    if isinstance(streams, list):
        problems += _unique_problems(streams)
        problems += _track_problems(streams)
    return problems


def _method_problems(clustering: dict[str, Any]) -> list[Problem]:
    """USE_LAST keeps no history, so there is nothing to realize or merge on."""
    if clustering.get("method") != "USE_LAST":
        return []
    return [
        (f"$.clustering_config.{key}", clustering[key], "is not allowed with method USE_LAST")
        for key in ("cluster_realization", "cluster_merging")
        if key in clustering
    ]


def _merging_problems(merging: object) -> list[Problem]:
    """The merge threshold falls towards ``min_threshold``, so it cannot start below it."""
    if not isinstance(merging, dict):
        return []
    low, high = merging.get("min_threshold"), merging.get("initial_threshold")
    if _is_number(low) and _is_number(high) and low > high:
        rule = f"must be <= initial_threshold ({high})"
        return [("$.clustering_config.cluster_merging.min_threshold", low, rule)]
    return []


def _improved_problems(clustering: dict[str, Any]) -> list[Problem]:
    """The improved mode needs member sums (SIMPLE_AVERAGE) and the merge timer it repairs on."""
    mode = clustering.get("improved_mode")
    if not isinstance(mode, dict) or mode.get("enabled") is not True:
        return []
    path = "$.clustering_config.improved_mode.enabled"
    problems: list[Problem] = []
    method = clustering.get("method")
    if isinstance(method, str) and method != "SIMPLE_AVERAGE":
        rule = f"needs method SIMPLE_AVERAGE (got {method}): mean member similarity needs sums"
        problems.append((path, True, rule))
    if "cluster_merging" not in clustering:
        rule = "needs cluster_merging: its repairs run on the merge timer"
        problems.append((path, True, rule))
    return problems


def _unique_problems(streams: Sequence[object]) -> list[Problem]:
    """Stream ids and topics (explicit or default) must each name one stream only."""
    problems: list[Problem] = []
    first: dict[tuple[str, str], int] = {}
    for index, stream in enumerate(streams):
        if not isinstance(stream, dict) or not isinstance(stream.get("stream_id"), str):
            continue
        topic = stream.get("topic", default_topic(stream["stream_id"]))
        for field, value in (("stream_id", stream["stream_id"]), ("topic", topic)):
            if not isinstance(value, str):
                continue
            earlier = first.setdefault((field, value), index)
            if earlier != index:
                rule = f"is also used by $.input_stream_configs[{earlier}]"
                problems.append((f"$.input_stream_configs[{index}].{field}", value, rule))
    return problems


def _track_problems(streams: Sequence[object]) -> list[Problem]:
    """A track's bar can only be lower than the stream's: a higher one would never apply."""
    problems: list[Problem] = []
    for index, stream in enumerate(streams):
        if not isinstance(stream, dict):
            continue
        tracks, reg = stream.get("track_linking"), stream.get("reg_stream_config")
        if not isinstance(tracks, dict) or not isinstance(reg, dict):
            continue
        low, high = tracks.get("track_threshold"), reg.get("reg_threshold")
        if _is_number(low) and _is_number(high) and low > high:
            path = f"$.input_stream_configs[{index}].track_linking.track_threshold"
            problems.append((path, low, f"must be <= reg_threshold ({high})"))
    return problems


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _build(data: dict[str, Any]) -> ClusteringConfig:
    """The config value from schema-valid, rule-valid data, defaults filled in."""
    c = data["clustering_config"]
    return ClusteringConfig(
        method=c["method"],
        ema_alpha=float(c.get("ema_alpha", DEFAULT_EMA_ALPHA)),
        realization=_build_realization(c.get("cluster_realization")),
        merging=_build_merging(c.get("cluster_merging")),
        save_internal_state=c.get("save_internal_state", False),
        start_from_internal_state=c.get("start_from_internal_state", False),
        emit_unrealized=c.get("emit_unrealized", False),
        min_update_interval_ms=int(c.get("min_update_interval_ms", 0)),
        streams=tuple(_build_stream(s) for s in data["input_stream_configs"]),
        improved=_build_improved(c.get("improved_mode")),
    )


def _build_improved(m: dict[str, Any] | None) -> ImprovedModeConfig | None:
    if m is None:
        return None
    return ImprovedModeConfig(
        bool(m["enabled"]), float(m.get("size_discount", DEFAULT_SIZE_DISCOUNT))
    )


def _build_realization(r: dict[str, Any] | None) -> RealizationConfig | None:
    if r is None:
        return None
    samples = r["num_samples"] if "num_samples" in r else r["min_num_samples"]
    action = r.get("realized_cluster_action", "KEEP_REALIZED")
    return RealizationConfig(int(samples), int(r.get("time_limit_ms", 0)), action)


def _build_merging(m: dict[str, Any] | None) -> MergingConfig | None:
    if m is None:
        return None
    return MergingConfig(
        float(m["initial_threshold"]),
        float(m["threshold_discount_rate"]),
        float(m["min_threshold"]),
        int(m["time_interval_ms"]),
    )


def _build_stream(s: dict[str, Any]) -> StreamConfig:
    selector, reg = s["fv_field_selector"], s["reg_stream_config"]
    return StreamConfig(
        stream_id=s["stream_id"],
        topic=s.get("topic", default_topic(s["stream_id"])),
        feature_vector_path=selector.get("feature_vector_path"),
        fv_cluster_path=selector.get("fv_cluster_path"),
        reg_threshold=float(reg["reg_threshold"]),
        retention_ms=int(reg.get("cluster_retention_period_ms", 0)),
        track_linking=_build_track_linking(s.get("track_linking")),
    )


def _build_track_linking(t: dict[str, Any] | None) -> TrackLinkingConfig | None:
    if t is None:
        return None
    window = int(t.get("time_window_ms", DEFAULT_TRACK_WINDOW_MS))
    return TrackLinkingConfig(t["track_id_path"], float(t["track_threshold"]), window)
