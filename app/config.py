"""The clustering configuration: UVAP-style JSON turned into one frozen, validated value.

Every form a UVAP deployment writes is accepted: the FVClusteringConfigRecord itself, the FVC
microservice form around it (``sources``, ``target``, ``config_data``...), proto3 JSON
(lowerCamelCase names, enum numbers, integers as strings). ``normalise_config`` turns any of
them into the one canonical form first, noting what it did, and the JSON Schema then validates
that canonical form only.

Validation collects every problem at once (normalising, schema and cross-field rules) so an
operator fixes a file in one go; each problem names the JSON path as the file wrote it, the value
found and the rule it breaks.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, TypeGuard, cast

from app.errors import ConfigError
from schemas import load_schema
from schemas.problems import (
    MISSING,
    Problem,
    json_path,
    non_finite_problems,
    read_json_file,
    schema_problems,
    sort_problems,
)

METHODS = ("USE_LAST", "SIMPLE_AVERAGE", "EXP_AVERAGE")
ACTIONS = ("KEEP_REALIZED", "UNREALIZE", "REMOVE")
# UVAP's enum numbers, as proto3 JSON may give them: kafka_config.proto of UVAP
# (github.com/Ultinous/uvap, proto_files/ultinous/proto/common/kafka_config.proto, message
# FVClusteringConfig): ClusteringMethod INVALID = 0, USE_LAST = 1, SIMPLE_AVERAGE = 2;
# ClusterRealizationConfig.RealizedClusterAction INVALID = 0, REMOVE = 1, UNREALIZE = 2,
# KEEP_REALIZED = 3. EXP_AVERAGE is fvc's own method: it has no number, only its name.
ENUM_NUMBERS: Mapping[str, Mapping[int, str]] = {
    "method": {0: "INVALID", 1: "USE_LAST", 2: "SIMPLE_AVERAGE"},
    "realized_cluster_action": {0: "INVALID", 1: "REMOVE", 2: "UNREALIZE", 3: "KEEP_REALIZED"},
}
_ENUM_TYPES = {"method": "ClusteringMethod", "realized_cluster_action": "RealizedClusterAction"}
UNSET_ENUM = "INVALID"  # proto3's zero value of both enums: UVAP refuses it, and so does fvc
DEFAULT_REG_THRESHOLD = 0.0  # UVAP's default when reg_threshold is left out
DEFAULT_EMA_ALPHA = 0.1
DEFAULT_SIZE_DISCOUNT = 0.03  # improved mode: how far thresholds fall for large clusters
# Deferred decisions: the most observations one window holds (its average linkage is O(n^2))
DEFAULT_MAX_WINDOW_SIZE = 2048
DEFAULT_TRACK_WINDOW_MS = 5000  # a track unseen this long starts over (a tracker reuses ids)
TOPIC_SUFFIX = ".FeatureVectorRecord.json"


def default_topic(stream_id: str) -> str:
    """The topic a stream reads when its config names none, as UVAP does."""
    return stream_id + TOPIC_SUFFIX


@dataclass(frozen=True, slots=True)
class RealizationConfig:
    """When a new cluster becomes an identity, and what happens to it then."""

    num_samples: int  # 0 (UVAP's default): a cluster realizes at its first observation
    time_limit_ms: int = 0
    action: str = "KEEP_REALIZED"


@dataclass(frozen=True, slots=True)
class MergingConfig:
    """The periodic merge pass: a threshold that falls as clusters grow, down to a floor."""

    initial_threshold: float
    threshold_discount_rate: float
    min_threshold: float
    time_interval_ms: int  # 0: UVAP's "a merge attempt at every input"

    @property
    def at_every_input(self) -> bool:
        """Whether UVAP would try a merge at every input (``time_interval_ms`` 0)."""
        return self.time_interval_ms == 0

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
    # Deferred decisions (app/engine/window.py, docs/deferral.md): 0 decides each observation
    # when it comes; otherwise windows of this much event time are decided together, their
    # observations grouped first by average linkage at ``window_threshold`` (None: each
    # stream's reg_threshold). A window holds at most ``max_window_size`` observations: the next
    # one opens a new window, which bounds the linkage's time and memory and the wait behind a
    # camera clock far ahead.
    deferral_ms: int = 0
    window_threshold: float | None = None
    max_window_size: int = DEFAULT_MAX_WINDOW_SIZE

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
    """The whole clustering configuration, immutable once validated.

    ``output_topic`` and ``internal_state_topic`` are set when the file names them (the
    microservice form's ``target`` and ``internal_state``); see ``settings_overrides``.
    ``emit_unrealized`` is None when the file leaves it out: the output profile decides
    (``for_output_profile``), and the engine reads None as false.
    """

    method: str
    ema_alpha: float
    realization: RealizationConfig | None
    merging: MergingConfig | None
    save_internal_state: bool
    start_from_internal_state: bool
    emit_unrealized: bool | None
    min_update_interval_ms: int
    streams: tuple[StreamConfig, ...]
    improved: ImprovedModeConfig | None = None
    output_topic: str | None = None
    internal_state_topic: str | None = None

    def settings_overrides(self, explicit: Collection[str] = ()) -> dict[str, str]:
        """Service settings this config names, less those set ``explicit``-ly (they win).

        A worker applies them to its Settings: the microservice form's ``target`` becomes
        ``output_topic`` unless FVC_OUTPUT_TOPIC (or ``--output-topic``) was given, and likewise
        ``internal_state`` for FVC_INTERNAL_STATE_TOPIC.
        """
        named = {"output_topic": self.output_topic}
        named["internal_state_topic"] = self.internal_state_topic
        return {k: v for k, v in named.items() if v is not None and k not in explicit}

    def for_output_profile(self, profile: str) -> ClusteringConfig:
        """This config with ``emit_unrealized`` settled for output ``profile`` when left out.

        UVAP emits registrations of unrealized clusters too, so the ``uvap`` profile does by
        default; fvc's own profile does not. A value the file gives wins either way.

        >>> config = ClusteringConfig.for_threshold(0.8, ["camera_1"])
        >>> config.for_output_profile("uvap").emit_unrealized
        True
        >>> config.for_output_profile("default").emit_unrealized
        False
        """
        if self.emit_unrealized is not None:
            return self
        return replace(self, emit_unrealized=profile == "uvap")

    @property
    def improved_mode(self) -> ImprovedModeConfig | None:
        """The improved mode when it is switched on, else None (plain DESIGN.md semantics)."""
        return self.improved if self.improved is not None and self.improved.enabled else None

    @property
    def deferral_ms(self) -> int:
        """The deferral window of the improved mode (0: every observation decided when it comes)."""
        mode = self.improved_mode
        return 0 if mode is None else mode.deferral_ms

    @property
    def max_window_size(self) -> int:
        """The most observations one deferral window holds (app/engine/window.py)."""
        mode = self.improved_mode
        return DEFAULT_MAX_WINDOW_SIZE if mode is None else mode.max_window_size

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
        """The canonical UVAP JSON of this config: every field explicit, no aliases.

        Except ``emit_unrealized`` when the file left it to the output profile.
        """
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
        if self.emit_unrealized is not None:
            clustering["emit_unrealized"] = self.emit_unrealized
        clustering["min_update_interval_ms"] = self.min_update_interval_ms
        if self.improved is not None:
            clustering["improved_mode"] = {
                "enabled": self.improved.enabled,
                "size_discount": self.improved.size_discount,
                **_deferral_fields(self.improved),
            }
        streams = [_stream_dict(s) for s in self.streams]
        canonical = {"clustering_config": clustering, "input_stream_configs": streams}
        return canonical | self.settings_overrides()


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


@dataclass(frozen=True, slots=True)
class ConfigReading:
    """How a config was read: the config (None when refused), its problems, form and notes.

    ``form`` names what was not canonical (empty: the canonical form); ``notes`` say, field by
    field, what normalising did (a topic taken from ``sources[i]``, a default UVAP fills in...).
    """

    config: ClusteringConfig | None
    problems: tuple[Problem, ...] = ()
    form: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def read_as(self) -> str:
        """The form in words, e.g. ``microservice form, proto3 JSON names``."""
        return ", ".join(self.form) or "canonical form"


def load_config(path: str | Path) -> ClusteringConfig:
    """Read, validate and build the config in file ``path``; ConfigError lists every problem."""
    reading = read_config(path)
    if reading.config is None:
        raise ConfigError(list(reading.problems))
    return reading.config


def read_config(path: str | Path) -> ConfigReading:
    """Read file ``path`` in any accepted form; problems are returned, not raised."""
    data, problems = read_json_file(path)
    if problems:
        return ConfigReading(None, tuple(_explain_syntax(path, problems)))
    return read_config_data(data)


def parse_config(data: object) -> ClusteringConfig:
    """Normalise, validate (schema and cross-field rules) and build ``data`` (parsed JSON).

    Raises ConfigError with every problem found, not just the first.
    """
    reading = read_config_data(data)
    if reading.config is None:
        raise ConfigError(list(reading.problems))
    return reading.config


def read_config_data(data: object) -> ConfigReading:
    """``parse_config`` that returns its problems and says how ``data`` was read."""
    normalised = normalise_config(data)
    problems = list(normalised.problems)
    if normalised.data is not MISSING:
        found = schema_problems("config", normalised.data)
        seen = {path for path, _, _ in found}
        found += [p for p in non_finite_problems(normalised.data) if p[0] not in seen]
        found += _cross_field_problems(normalised.data)
        told = {path for path, _, _ in problems}  # normalising named these already
        problems += [p for p in map(normalised.translate, found) if p[0] not in told]
    if problems:
        problems = sort_problems(problems)
        return ConfigReading(None, tuple(problems), normalised.form, normalised.notes)
    config = _build(cast(dict[str, Any], normalised.data))  # the schema made sure it is an object
    return ConfigReading(config, (), normalised.form, normalised.notes)


# ---------------------------------------------------------------------------------------------
# Normalising: every accepted form to the canonical one


MICROSERVICE = "microservice form"
JSON_NAMES = "proto3 JSON names"
ENUM_NUMBER_FORM = "enum numbers"
NUMBER_STRINGS = "numbers as strings"
NULLS = "null as absent"
UVAP_DEFAULTS = "UVAP defaults"
_FORMS = (MICROSERVICE, JSON_NAMES, ENUM_NUMBER_FORM, NUMBER_STRINGS, NULLS, UVAP_DEFAULTS)

# FeatureVectorClusteringMSConfig (UVAP's kafka_superconfig.proto) and its Topic message.
_MS_FIELDS = (
    "source_options",
    "sources",
    "target_options",
    "target",
    "internal_state",
    "config_data",
)
_TOPIC_FIELDS = ("broker_list", "name", "user_name", "password", "auth_ref")
_IGNORED_OPTIONS = {
    "source_options": "fvc resumes from its consumer group's offsets (fvc run --since: a time)",
    "target_options": "fvc appends to its output topic and never deletes it",
}
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_SPECIAL_FLOATS = ("NaN", "Infinity", "-Infinity")
_PATH_IN_TEXT = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])+")


def json_name(name: str) -> str:
    """The protobuf JSON name of field ``name``: lowerCamelCase (``stream_id`` -> ``streamId``)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True, slots=True)
class Normalised:
    """What ``normalise_config`` made of a config.

    ``data`` is the canonical form (MISSING when nothing could be made of it); ``paths`` maps a
    canonical JSON path to the path as the file wrote it, for naming problems the way the
    operator reads the file.
    """

    data: object
    form: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    paths: Mapping[str, str] = dataclass_field(default_factory=dict)

    def written(self, path: str) -> str:
        """Canonical JSON ``path`` as the file wrote it (its longest known prefix replaced)."""
        for canonical in sorted(self.paths, key=len, reverse=True):
            if path == canonical or path.startswith((canonical + ".", canonical + "[")):
                return self.paths[canonical] + path[len(canonical) :]
        return path

    def translate(self, problem: Problem) -> Problem:
        """A problem found on the canonical form, its paths (also in the rule) as written."""
        path, value, rule = problem
        rule = _PATH_IN_TEXT.sub(lambda m: self.written(m[0]), rule)
        return self.written(path), value, rule


def normalise_config(data: object) -> Normalised:
    """Any accepted form of a config (parsed JSON) in the canonical form, and how it was read.

    Accepted: the canonical form (UVAP's FVClusteringConfigRecord with fvc's extensions); the
    FVC microservice form around it, whose ``sources[i]`` becomes the topic of
    ``input_stream_configs[i]``, ``target`` the output topic and ``internal_state`` the
    internal-state topic; proto3 JSON (lowerCamelCase field names, UVAP's enum numbers, numbers
    as strings, null for an absent field). What cannot be normalised is left as found for the
    schema to refuse, or refused here when only the original form can say why.
    """
    reader = _Normaliser()
    canonical = reader.read(data)
    if reader.renamed:
        names = ", ".join(f"{k} -> {v}" for k, v in sorted(reader.renamed.items()))
        reader.notes.insert(0, f"proto3 JSON names read as field names: {names}")
    form = tuple(f for f in _FORMS if f in reader.form)
    return Normalised(
        canonical, form, tuple(reader.notes), tuple(reader.problems), dict(reader.paths)
    )


class _Normaliser:
    """One normalisation: the schema-guided walk and what it found."""

    def __init__(self) -> None:
        self.schema = load_schema("config")
        self.form: set[str] = set()
        self.notes: list[str] = []
        self.problems: list[Problem] = []
        self.paths: dict[str, str] = {}
        self.renamed: dict[str, str] = {}
        self.connection: list[str] = []  # the Topic fields fvc does not use

    def read(self, data: object) -> object:
        if isinstance(data, dict) and any(_ms_name(key) in _MS_FIELDS for key in data):
            return self._microservice(data)
        canonical = self._value(data, self.schema, (), ())
        self._defaults(canonical)
        return canonical

    # -- the walk ---------------------------------------------------------------------------

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """``schema`` with its local ``$ref`` (``#/$defs/Name``) merged in."""
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            return schema
        target = self.schema["$defs"][ref.removeprefix("#/$defs/")]
        return {**self._resolve(target), **{k: v for k, v in schema.items() if k != "$ref"}}

    def _value(
        self,
        value: object,
        schema: Mapping[str, Any],
        canon: tuple[str | int, ...],
        written: tuple[str | int, ...],
    ) -> object:
        schema = self._resolve(schema)
        if canon != written:
            self.paths[json_path(canon)] = json_path(written)
        if isinstance(value, dict) and "properties" in schema:
            return self._object(value, schema["properties"], canon, written)
        if isinstance(value, list) and "items" in schema:
            items = schema["items"]
            return [
                self._value(item, items, (*canon, i), (*written, i)) for i, item in enumerate(value)
            ]
        return self._scalar(value, schema, canon, written)

    def _object(
        self,
        value: dict[Any, Any],
        properties: Mapping[str, Any],
        canon: tuple[str | int, ...],
        written: tuple[str | int, ...],
    ) -> dict[Any, Any]:
        names = {json_name(name): name for name in properties if json_name(name) != name}
        result: dict[Any, Any] = {}
        for key, item in value.items():
            name = names.get(key, key)
            where = json_path((*written, key))
            if name != key:
                self.form.add(JSON_NAMES)
                self.renamed[key] = name
                if name in value:
                    self.problems.append((where, item, f"is given twice: also as {name}"))
                    continue
            if item is None and name in properties:
                self.form.add(NULLS)
                self.notes.append(f"{where}: null read as absent, as proto3 JSON does")
                if canon + (name,) != written + (key,):
                    self.paths[json_path((*canon, name))] = where
                continue
            schema = properties.get(name)
            if schema is None:  # unknown: left for the schema to refuse
                result[name] = item
                if canon != written:
                    self.paths[json_path((*canon, name))] = where
                continue
            result[name] = self._value(item, schema, (*canon, name), (*written, key))
        return result

    def _scalar(
        self,
        value: object,
        schema: Mapping[str, Any],
        canon: tuple[str | int, ...],
        written: tuple[str | int, ...],
    ) -> object:
        name, where = canon[-1] if canon else "", json_path(written)
        numbers = ENUM_NUMBERS.get(str(name))
        if numbers is not None:
            return self._enum(value, str(name), numbers, where)
        kind = schema.get("type")
        if isinstance(value, str) and kind in ("integer", "number"):
            pattern = _INTEGER if kind == "integer" else _NUMBER
            if value in _SPECIAL_FLOATS:  # proto3 JSON's, but no bound or rule holds for them
                self.problems.append((where, value, "must be a finite number"))
            elif pattern.fullmatch(value):
                number: int | float = int(value) if kind == "integer" else float(value)
                self.form.add(NUMBER_STRINGS)
                self.notes.append(f'{where}: "{value}" read as {number}')
                return number
        return value

    def _enum(self, value: object, name: str, numbers: Mapping[int, str], where: str) -> object:
        """An enum given by number as its name; INVALID (UVAP's unset value) refused."""
        if isinstance(value, bool) or not isinstance(value, int | str):
            return value  # the schema refuses it
        label = numbers.get(value) if isinstance(value, int) else value
        if label == UNSET_ENUM:
            allowed = ", ".join(METHODS if name == "method" else ACTIONS)
            rule = f"is INVALID, UVAP's unset value: give one of [{allowed}]"
            self.problems.append((where, value, rule))
        elif label is None:
            choices = ", ".join(f"{n} = {text}" for n, text in numbers.items() if n)
            enum = _ENUM_TYPES[name]
            self.problems.append((where, value, f"is not a UVAP {enum} number ({choices})"))
        elif isinstance(value, int):
            self.form.add(ENUM_NUMBER_FORM)
            self.notes.append(f"{where}: {value} read as {label}")
            return label
        return value

    # -- UVAP defaults ----------------------------------------------------------------------

    def _note_default(self, canon: tuple[str | int, ...], what: str) -> None:
        self.form.add(UVAP_DEFAULTS)
        where = Normalised(None, paths=self.paths).written(json_path(canon))
        self.notes.append(f"{where} {what}")

    def _defaults(self, canonical: object) -> None:
        """Notes on the fields UVAP fills in with defaults that matter (fvc does the same)."""
        if not isinstance(canonical, dict):
            return
        clustering = canonical.get("clustering_config")
        if isinstance(clustering, dict):
            realization = clustering.get("cluster_realization")
            if isinstance(realization, dict) and not (
                {"num_samples", "min_num_samples"} & realization.keys()
            ):
                self._note_default(
                    ("clustering_config", "cluster_realization", "num_samples"),
                    "absent: UVAP's default 0, so a cluster realizes at its first observation",
                )
            merging = clustering.get("cluster_merging")
            if isinstance(merging, dict):
                self._merging_zeros(merging)
        streams = canonical.get("input_stream_configs")
        for index, stream in enumerate(streams if isinstance(streams, list) else []):
            reg = stream.get("reg_stream_config") if isinstance(stream, dict) else None
            if isinstance(reg, dict) and "reg_threshold" not in reg:
                self._note_default(
                    ("input_stream_configs", index, "reg_stream_config", "reg_threshold"),
                    f"absent: UVAP's default {DEFAULT_REG_THRESHOLD}",
                )

    def _merging_zeros(self, merging: dict[str, Any]) -> None:
        """A 0 UVAP reads where protobuf's JSON leaves it out: the interval and the floor.

        The other two thresholds stay required: 0 is no discount rate, and an initial
        threshold of 0 would merge every pair.
        """
        where = ("clustering_config", "cluster_merging")
        absent = "absent: UVAP's (proto3's) default 0"
        if "min_threshold" not in merging:
            merging["min_threshold"] = 0
            self._note_default((*where, "min_threshold"), absent)
        every_input = "UVAP tries a merge at every input; fvc runs merge passes back to back"
        if "time_interval_ms" not in merging:
            merging["time_interval_ms"] = 0
            self._note_default((*where, "time_interval_ms"), f"{absent}: {every_input}")
        elif merging["time_interval_ms"] == 0:
            self._note_default((*where, "time_interval_ms"), f"0: {every_input}")

    # -- the microservice form --------------------------------------------------------------

    def _microservice(self, data: dict[Any, Any]) -> object:
        """FeatureVectorClusteringMSConfig: the record in ``config_data``, topics around it."""
        self.form.add(MICROSERVICE)
        fields: dict[str, tuple[str, object]] = {}
        for key, value in data.items():
            name = _ms_name(key)
            where = json_path((key,))
            if name not in _MS_FIELDS:
                self.problems.append((where, value, _ms_unknown(str(key))))
                continue
            if name != key:
                self.form.add(JSON_NAMES)
                self.renamed[key] = name
                if name in data:
                    self.problems.append((where, value, f"is given twice: also as {name}"))
                    continue
            if value is None:
                self.form.add(NULLS)
                self.notes.append(f"{where}: null read as absent, as proto3 JSON does")
                continue
            fields[name] = (key, value)
        if "config_data" not in fields:
            rule = "is required: the microservice form carries the clustering config in it"
            self.problems.append(("$.config_data", MISSING, rule))
            return MISSING
        key, config_data = fields["config_data"]
        canonical = self._value(config_data, self.schema, (), (key,))
        self._defaults(canonical)
        if not isinstance(canonical, dict):
            return canonical  # the schema refuses it, at config_data
        self._sources(fields.get("sources"), canonical)
        self._topic_setting(fields.get("target"), canonical, "output_topic", "FVC_OUTPUT_TOPIC")
        self._topic_setting(
            fields.get("internal_state"),
            canonical,
            "internal_state_topic",
            "FVC_INTERNAL_STATE_TOPIC",
        )
        if self.connection:
            self.notes.append(
                "ignored, fvc connects with FVC_KAFKA_BOOTSTRAP and FVC_SASL_* / FVC_SSL_*: "
                + ", ".join(self.connection)
            )
        for name, why in _IGNORED_OPTIONS.items():
            if name in fields:
                key, value = fields[name]
                if isinstance(value, dict):
                    self.notes.append(f"{json_path((key,))} ignored: {why}")
                else:
                    self.problems.append((json_path((key,)), value, "must be an object"))
        return canonical

    def _sources(self, entry: tuple[str, object] | None, canonical: dict[str, Any]) -> None:
        """``sources[i]`` is the topic of ``input_stream_configs[i]``, as in UVAP."""
        streams = canonical.get("input_stream_configs")
        if entry is None:
            self.notes.append(
                f"no sources: each stream reads its topic (or <stream_id>{TOPIC_SUFFIX})"
            )
            return
        key, sources = entry
        if not isinstance(sources, list):
            self.problems.append((json_path((key,)), sources, "must be an array of topics"))
            return
        if not isinstance(streams, list):
            return  # the schema refuses it
        if len(sources) != len(streams):
            where = Normalised(None, paths=self.paths).written("$.input_stream_configs")
            rule = (
                f"must name one topic per input stream: {where} has {len(streams)} "
                "(UVAP feeds sources[i] to input_stream_configs[i])"
            )
            self.problems.append((json_path((key,)), len(sources), rule))
            return
        for index, (source, stream) in enumerate(zip(sources, streams, strict=True)):
            found = self._topic(source, (key, index))
            if found is None or not isinstance(stream, dict):
                continue
            topic, where = found
            canon = json_path(("input_stream_configs", index, "topic"))
            if "topic" in stream and stream["topic"] != topic:
                given = Normalised(None, paths=self.paths).written(canon)
                rule = f"names another topic than {given} ({stream['topic']!r}): give it once"
                self.problems.append((where, topic, rule))
                continue
            stream["topic"] = topic
            self.paths[canon] = where
            stream_id = stream.get("stream_id")
            self.notes.append(
                f"{json_path((key, index))} -> topic of input_stream_configs[{index}] "
                f"({stream_id}): {topic}"
            )

    def _topic_setting(
        self,
        entry: tuple[str, object] | None,
        canonical: dict[str, Any],
        field_name: str,
        variable: str,
    ) -> None:
        """``target`` or ``internal_state``: a topic the worker uses unless ``variable`` is set."""
        if entry is None:
            return
        key, value = entry
        found = self._topic(value, (key,))
        if found is None:
            return
        topic, where = found
        given = canonical.get(field_name)
        if given is not None and given != topic:
            rule = f"names another topic than config_data.{field_name} ({given!r}): give it once"
            self.problems.append((where, topic, rule))
            return
        canonical[field_name] = topic
        self.paths[json_path((field_name,))] = where
        label = field_name.removesuffix("_topic").replace("_", "-")
        note = f"{json_path((key,))} -> {label} topic {topic} (unless {variable} is set)"
        self.notes.append(note)

    def _topic(self, value: object, written: tuple[str | int, ...]) -> tuple[str, str] | None:
        """The name of a topic given as a string or a UVAP Topic, and where it was written."""
        where = json_path(written)
        if isinstance(value, str):
            if value:
                return value, where
            self.problems.append((where, value, "must not be empty"))
            return None
        if not isinstance(value, dict):
            rule = "must be a topic name or a Topic object ({broker_list, name, ...})"
            self.problems.append((where, value, rule))
            return None
        fields: dict[str, tuple[str, object]] = {}
        for key, item in value.items():
            name = {json_name(f): f for f in _TOPIC_FIELDS}.get(key, key)
            if name not in _TOPIC_FIELDS:
                close = difflib.get_close_matches(str(key), _TOPIC_FIELDS, n=1)
                rule = f"unknown field (did you mean {close[0]!r}?)" if close else "unknown field"
                self.problems.append((json_path((*written, key)), item, rule))
                continue
            if name != key:
                self.form.add(JSON_NAMES)
                self.renamed[key] = name
            fields[name] = (key, item)
        self.connection += [  # paths only: a password never reaches a note
            json_path((*written, key))
            for name, (key, item) in fields.items()
            if name != "name" and item
        ]
        if "name" not in fields:
            self.problems.append((f"{where}.name", MISSING, "is required"))
            return None
        key, topic = fields["name"]
        if not isinstance(topic, str) or not topic:
            self.problems.append((json_path((*written, key)), topic, "must be a non-empty string"))
            return None
        return topic, json_path((*written, key))


def _ms_name(key: object) -> str:
    """A microservice-form key by its field name (proto3 JSON names accepted)."""
    return {json_name(f): f for f in _MS_FIELDS}.get(str(key), str(key))


def _ms_unknown(key: str) -> str:
    """The rule for a key the microservice form does not have."""
    record = {"clustering_config", "input_stream_configs"}
    if key in record or key in {json_name(k) for k in record}:
        return "belongs inside config_data in the microservice form"
    close = difflib.get_close_matches(key, _MS_FIELDS, n=1)
    return f"unknown field (did you mean {close[0]!r}?)" if close else "unknown field"


# -- JSON syntax: name the field before a trailing comma --------------------------------------


def _explain_syntax(path: str | Path, problems: list[Problem]) -> list[Problem]:
    """A trailing comma named by the field it follows; other problems as they are."""
    if len(problems) != 1 or not problems[0][2].startswith("is not valid JSON"):
        return problems
    try:
        text = Path(path).read_text(encoding="utf-8")
        json.loads(text)
    except json.JSONDecodeError as exc:
        pos = exc.pos
    except (OSError, ValueError):
        return problems
    else:
        return problems
    before = text[:pos].rstrip()
    if not before.endswith(",") or text[pos : pos + 1] not in ("}", "]"):
        return problems
    comma = len(before) - 1
    line_no = text.count("\n", 0, comma) + 1
    column = comma - (text.rfind("\n", 0, comma) + 1) + 1
    rule = (
        f"is followed by a trailing comma at line {line_no}, column {column}: "
        "JSON allows none, and UVAP refuses it too"
    )
    line = text[text.rfind("\n", 0, comma) + 1 :].split("\n", 1)[0].strip()[:80]
    return [(_path_before(text, comma), line, rule)]


@dataclass(slots=True)
class _Frame:
    """An open object or array while scanning JSON text."""

    is_object: bool
    at: str | int | None  # the key of an object's current member, an array's current index
    expecting_key: bool = False


def _path_before(text: str, end: int) -> str:
    """The JSON path of the value that ends just before ``text[end]`` (a scan, not a parse)."""
    frames: list[_Frame] = []
    i = 0
    while i < end:
        char = text[i]
        if char == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if frames and frames[-1].is_object and frames[-1].expecting_key:
                try:
                    frames[-1].at = str(json.loads(text[i : j + 1]))
                except ValueError:
                    frames[-1].at = text[i + 1 : j]
            i = j + 1
            continue
        if char in "{[":
            frames.append(_Frame(char == "{", None if char == "{" else 0, char == "{"))
        elif char in "}]" and frames:
            frames.pop()
        elif char == "," and frames:
            frame = frames[-1]
            if frame.is_object:
                frame.expecting_key = True
            elif isinstance(frame.at, int):
                frame.at += 1
        elif char == ":" and frames and frames[-1].is_object:
            frames[-1].expecting_key = False
        i += 1
    return json_path([f.at for f in frames if f.at is not None])


def _cross_field_problems(data: object) -> list[Problem]:
    """Rules one field cannot state alone; each checks only values of the right type."""
    if not isinstance(data, dict):
        return []
    problems: list[Problem] = []
    clustering = data.get("clustering_config")
    if isinstance(clustering, dict):
        problems += _method_problems(clustering)
        problems += _merging_problems(clustering.get("cluster_merging"))
        problems += _improved_problems(clustering, data.get("input_stream_configs"))
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


def _improved_problems(clustering: dict[str, Any], streams: object) -> list[Problem]:
    """The improved mode needs member sums (SIMPLE_AVERAGE) and the merge timer it repairs on.

    Deferred decisions decide a window's groups as one, which a track's link cannot follow.
    """
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
    deferral = mode.get("deferral_ms", 0)
    if not isinstance(deferral, int) or deferral <= 0:
        return problems
    where = "$.clustering_config.improved_mode.deferral_ms"
    if isinstance(streams, list) and any(
        isinstance(s, dict) and "track_linking" in s for s in streams
    ):
        rule = "cannot be used with track_linking: a window's groups are decided as one"
        problems.append((where, deferral, rule))
    merging = clustering.get("cluster_merging")
    interval = merging.get("time_interval_ms") if isinstance(merging, dict) else None
    if isinstance(interval, int) and (interval <= 0 or interval % deferral):
        rule = (f"must divide cluster_merging.time_interval_ms ({interval}), which must be > 0: "
                "a merge pass between a window's observations would cut the window in two")
        problems.append((where, deferral, rule))
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
        emit_unrealized=c.get("emit_unrealized"),
        min_update_interval_ms=int(c.get("min_update_interval_ms", 0)),
        streams=tuple(_build_stream(s) for s in data["input_stream_configs"]),
        improved=_build_improved(c.get("improved_mode")),
        output_topic=data.get("output_topic"),
        internal_state_topic=data.get("internal_state_topic"),
    )


def _deferral_fields(mode: ImprovedModeConfig) -> dict[str, Any]:
    """The deferral fields of a canonical config, only where they are set."""
    fields: dict[str, Any] = {}
    if mode.deferral_ms:
        fields["deferral_ms"] = mode.deferral_ms
    if mode.window_threshold is not None:
        fields["window_threshold"] = mode.window_threshold
    if mode.max_window_size != DEFAULT_MAX_WINDOW_SIZE:
        fields["max_window_size"] = mode.max_window_size
    return fields


def _build_improved(m: dict[str, Any] | None) -> ImprovedModeConfig | None:
    if m is None:
        return None
    window = m.get("window_threshold")
    return ImprovedModeConfig(
        bool(m["enabled"]),
        float(m.get("size_discount", DEFAULT_SIZE_DISCOUNT)),
        int(m.get("deferral_ms", 0)),
        None if window is None else float(window),
        int(m.get("max_window_size", DEFAULT_MAX_WINDOW_SIZE)),
    )


def _build_realization(r: dict[str, Any] | None) -> RealizationConfig | None:
    if r is None:
        return None
    samples = r.get("num_samples", r.get("min_num_samples", 0))  # 0: UVAP's default
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
        reg_threshold=float(reg.get("reg_threshold", DEFAULT_REG_THRESHOLD)),
        retention_ms=int(reg.get("cluster_retention_period_ms", 0)),
        track_linking=_build_track_linking(s.get("track_linking")),
    )


def _build_track_linking(t: dict[str, Any] | None) -> TrackLinkingConfig | None:
    if t is None:
        return None
    window = int(t.get("time_window_ms", DEFAULT_TRACK_WINDOW_MS))
    return TrackLinkingConfig(t["track_id_path"], float(t["track_threshold"]), window)
