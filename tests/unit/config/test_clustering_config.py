"""The clustering config: every rule refused with its path, examples load, canonical round trip."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from app.config import (
    ClusteringConfig,
    MergingConfig,
    RealizationConfig,
    StreamConfig,
    load_config,
    parse_config,
)
from app.errors import ConfigError
from schemas import validator

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "config").glob("*.json"))

BASE = {
    "clustering_config": {
        "method": "SIMPLE_AVERAGE",
        "cluster_realization": {
            "num_samples": 5,
            "time_limit_ms": 10000,
            "realized_cluster_action": "KEEP_REALIZED",
        },
        "cluster_merging": {
            "initial_threshold": 0.8,
            "threshold_discount_rate": 0.98,
            "min_threshold": 0.65,
            "time_interval_ms": 5000,
        },
        "save_internal_state": True,
        "start_from_internal_state": False,
    },
    "input_stream_configs": [
        {
            "stream_id": "camera_1",
            "topic": "camera_1.FeatureVectorRecord.json",
            "fv_field_selector": {"feature_vector_path": "features"},
            "reg_stream_config": {"reg_threshold": 0.8, "cluster_retention_period_ms": 86400000},
        }
    ],
}


def base() -> dict:
    return copy.deepcopy(BASE)


def second_stream(stream_id: str = "camera_2", **extra: object) -> dict:
    stream = copy.deepcopy(BASE["input_stream_configs"][0])
    stream["stream_id"] = stream_id
    stream.pop("topic")
    stream.update(extra)
    return stream


def problems_of(data: object) -> list[tuple[str, object, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


CC = "$.clustering_config"
S0 = "$.input_stream_configs[0]"
REALIZATION = f"{CC}.cluster_realization"
MERGING = f"{CC}.cluster_merging"


def _set(path: tuple, value: object):
    def mutate(d: dict) -> None:
        target = d
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple):
    def mutate(d: dict) -> None:
        target = d
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def _add_stream(stream: dict):
    return lambda d: d["input_stream_configs"].append(stream)


C, I0 = ("clustering_config",), ("input_stream_configs", 0)
BROKEN = [
    ("unknown method", _set((*C, "method"), "MEDIAN"), f"{CC}.method", "is not one of [USE_LAST"),
    ("method missing", _delete((*C, "method")), f"{CC}.method", "is required"),
    (
        "threshold above 1",
        _set((*I0, "reg_stream_config", "reg_threshold"), 1.5),
        f"{S0}.reg_stream_config.reg_threshold",
        "must be <= 1",
    ),
    (
        "threshold below 0",
        _set((*I0, "reg_stream_config", "reg_threshold"), -0.1),
        f"{S0}.reg_stream_config.reg_threshold",
        "must be >= 0",
    ),
    (
        "threshold as words",  # "0.8" is proto3 JSON for 0.8, accepted
        _set((*I0, "reg_stream_config", "reg_threshold"), "high"),
        f"{S0}.reg_stream_config.reg_threshold",
        "must be a number",
    ),
    (
        "threshold NaN",
        _set((*I0, "reg_stream_config", "reg_threshold"), math.nan),
        f"{S0}.reg_stream_config.reg_threshold",
        "must be a finite number",
    ),
    ("unknown top-level key", _set(("clustering",), {}), "$.clustering", "unknown field"),
    (
        "typo suggests the field",
        _set((*C, "cluster_realization", "time_limit"), 5),
        f"{REALIZATION}.time_limit",
        "unknown field (did you mean 'time_limit_ms'?)",
    ),
    (
        "USE_LAST with merging",
        lambda d: (_set((*C, "method"), "USE_LAST")(d), _delete((*C, "cluster_realization"))(d)),
        MERGING,
        "is not allowed with method USE_LAST",
    ),
    (
        "USE_LAST with realization",
        lambda d: (_set((*C, "method"), "USE_LAST")(d), _delete((*C, "cluster_merging"))(d)),
        REALIZATION,
        "is not allowed with method USE_LAST",
    ),
    (
        "min above initial threshold",
        _set((*C, "cluster_merging", "min_threshold"), 0.9),
        f"{MERGING}.min_threshold",
        "must be <= initial_threshold (0.8)",
    ),
    (
        "num_samples and its alias",
        _set((*C, "cluster_realization", "min_num_samples"), 3),
        f"{REALIZATION}.min_num_samples",
        "must not be given with num_samples",
    ),
    (
        "num_samples negative",  # 0 (or absent) is UVAP's default, accepted
        _set((*C, "cluster_realization", "num_samples"), -1),
        f"{REALIZATION}.num_samples",
        "must be >= 0",
    ),
    (
        "time limit not an integer",
        _set((*C, "cluster_realization", "time_limit_ms"), 1.5),
        f"{REALIZATION}.time_limit_ms",
        "must be an integer",
    ),
    (
        "unknown action",
        _set((*C, "cluster_realization", "realized_cluster_action"), "DROP"),
        f"{REALIZATION}.realized_cluster_action",
        "is not one of [KEEP_REALIZED, UNREALIZE, REMOVE]",
    ),
    (
        "discount rate zero",
        _set((*C, "cluster_merging", "threshold_discount_rate"), 0),
        f"{MERGING}.threshold_discount_rate",
        "must be > 0",
    ),
    (
        "discount rate above 1",
        _set((*C, "cluster_merging", "threshold_discount_rate"), 1.01),
        f"{MERGING}.threshold_discount_rate",
        "must be <= 1",
    ),
    (
        "merge interval negative",  # 0 is UVAP's merge attempt at every input, accepted
        _set((*C, "cluster_merging", "time_interval_ms"), -1),
        f"{MERGING}.time_interval_ms",
        "must be >= 0",
    ),
    (
        "merging incomplete",
        _delete((*C, "cluster_merging", "initial_threshold")),
        f"{MERGING}.initial_threshold",
        "is required",
    ),
    ("ema_alpha zero", _set((*C, "ema_alpha"), 0), f"{CC}.ema_alpha", "must be > 0"),
    (
        "flag as text",
        _set((*C, "save_internal_state"), "yes"),
        f"{CC}.save_internal_state",
        "must be true or false",
    ),
    (
        "negative update interval",
        _set((*C, "min_update_interval_ms"), -1),
        f"{CC}.min_update_interval_ms",
        "must be >= 0",
    ),
    (
        "no streams",
        _set(("input_stream_configs",), []),
        "$.input_stream_configs",
        "must have at least 1 item",
    ),
    ("empty stream id", _set((*I0, "stream_id"), ""), f"{S0}.stream_id", "must not be empty"),
    (
        "both selector paths",
        _set((*I0, "fv_field_selector", "fv_cluster_path"), "cluster"),
        f"{S0}.fv_field_selector",
        "must give only one of feature_vector_path, fv_cluster_path",
    ),
    (
        "no selector path",
        _set((*I0, "fv_field_selector"), {}),
        f"{S0}.fv_field_selector",
        "needs exactly one of feature_vector_path, fv_cluster_path",
    ),
    (
        "negative retention",
        _set((*I0, "reg_stream_config", "cluster_retention_period_ms"), -1),
        f"{S0}.reg_stream_config.cluster_retention_period_ms",
        "must be >= 0",
    ),
    (
        "reg_stream_config missing",
        _delete((*I0, "reg_stream_config")),
        f"{S0}.reg_stream_config",
        "is required",
    ),
    (
        "duplicate stream id",
        _add_stream(second_stream("camera_1", topic="other")),
        "$.input_stream_configs[1].stream_id",
        "is also used by $.input_stream_configs[0]",
    ),
    (
        "duplicate topic through the default",
        _add_stream(second_stream("camera_2", topic="camera_1.FeatureVectorRecord.json")),
        "$.input_stream_configs[1].topic",
        "is also used by $.input_stream_configs[0]",
    ),
    (
        "improved mode with EXP_AVERAGE",
        lambda d: (
            _set((*C, "method"), "EXP_AVERAGE")(d),
            _set((*C, "improved_mode"), {"enabled": True})(d),
        ),
        f"{CC}.improved_mode.enabled",
        "needs method SIMPLE_AVERAGE",
    ),
    (
        "improved mode without a merge timer",
        lambda d: (
            _delete((*C, "cluster_merging"))(d),
            _set((*C, "improved_mode"), {"enabled": True})(d),
        ),
        f"{CC}.improved_mode.enabled",
        "needs cluster_merging",
    ),
    (
        "improved mode size discount above 0.5",
        _set((*C, "improved_mode"), {"enabled": True, "size_discount": 0.6}),
        f"{CC}.improved_mode.size_discount",
        "must be <= 0.5",
    ),
    (
        "improved mode without enabled",
        _set((*C, "improved_mode"), {"size_discount": 0.02}),
        f"{CC}.improved_mode.enabled",
        "is required",
    ),
    (
        "improved mode enabled as text",
        _set((*C, "improved_mode"), {"enabled": "yes"}),
        f"{CC}.improved_mode.enabled",
        "must be true or false",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "rule"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_broken_config_is_refused_naming_path_and_rule(mutate, path, rule):
    data = base()
    mutate(data)
    problems = problems_of(data)
    matching = [p for p in problems if p[0] == path and rule in p[2]]
    assert matching, f"no problem at {path} with {rule!r}; got {problems}"


def test_broken_value_is_reported_with_the_problem():
    data = base()
    data["input_stream_configs"][0]["reg_stream_config"]["reg_threshold"] = 1.5
    assert problems_of(data) == [(f"{S0}.reg_stream_config.reg_threshold", 1.5, "must be <= 1")]


def test_not_an_object_at_all():
    assert problems_of([1, 2]) == [("$", [1, 2], "must be an object")]


def test_every_problem_is_reported_at_once_in_document_order():
    data = base()
    data["clustering_config"]["method"] = "MEDIAN"
    data["clustering_config"]["cluster_merging"]["min_threshold"] = 0.9
    data["input_stream_configs"].append(second_stream("camera_1"))
    data["input_stream_configs"].extend(second_stream(f"c{i}") for i in range(9))
    data["input_stream_configs"][10]["reg_stream_config"]["reg_threshold"] = 2
    paths = [path for path, _, _ in problems_of(data)]
    assert paths == [
        f"{MERGING}.min_threshold",
        f"{CC}.method",
        "$.input_stream_configs[1].stream_id",
        "$.input_stream_configs[1].topic",
        "$.input_stream_configs[10].reg_stream_config.reg_threshold",
    ]


def test_error_message_lists_each_problem():
    data = base()
    data["clustering_config"]["method"] = "MEDIAN"
    data["input_stream_configs"][0]["stream_id"] = ""
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = str(info.value)
    assert "$.clustering_config.method: 'MEDIAN' is not one of" in text
    assert "$.input_stream_configs[0].stream_id: '' must not be empty" in text


def test_design_example_builds_the_expected_values():
    config = parse_config(base())
    assert config.method == "SIMPLE_AVERAGE"
    assert config.ema_alpha == 0.1
    assert config.realization == RealizationConfig(5, 10000, "KEEP_REALIZED")
    assert config.merging == MergingConfig(0.8, 0.98, 0.65, 5000)
    assert (config.save_internal_state, config.start_from_internal_state) == (True, False)
    assert (config.emit_unrealized, config.min_update_interval_ms) == (None, 0)
    assert config.streams == (
        StreamConfig(
            "camera_1", "camera_1.FeatureVectorRecord.json", "features", None, 0.8, 86400000
        ),
    )


def test_min_num_samples_is_an_alias_of_num_samples():
    data = base()
    data["clustering_config"]["cluster_realization"] = {"min_num_samples": 3}
    config = parse_config(data)
    assert config.realization == RealizationConfig(3, 0, "KEEP_REALIZED")
    assert config.to_dict()["clustering_config"]["cluster_realization"]["num_samples"] == 3


def test_topic_defaults_to_the_uvap_name_and_retention_to_forever():
    data = base()
    data["input_stream_configs"] = [
        {
            "stream_id": "lobby",
            "fv_field_selector": {"fv_cluster_path": "reg_event.cluster"},
            "reg_stream_config": {"reg_threshold": 0.7},
        }
    ]
    stream = parse_config(data).stream("lobby")
    assert stream.topic == "lobby.FeatureVectorRecord.json"
    assert (stream.retention_ms, stream.feature_vector_path) == (0, None)
    assert stream.fv_cluster_path == stream.path == "reg_event.cluster"


def test_optional_sections_may_be_left_out():
    data = {
        "clustering_config": {"method": "USE_LAST"},
        "input_stream_configs": [second_stream("a")],
    }
    config = parse_config(data)
    assert (config.realization, config.merging) == (None, None)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_files_load_and_round_trip(path):
    config = load_config(path)
    canonical = config.to_dict()
    assert list(validator("config").iter_errors(canonical)) == []
    assert parse_config(json.loads(json.dumps(canonical))) == config


def test_the_expected_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"single-camera.json", "four-cameras.json", "demo.json"} <= names
    assert load_config(ROOT / "config" / "single-camera.json") == parse_config(base())
    demo = load_config(ROOT / "config" / "demo.json")
    assert demo.topics == tuple(f"camera_{i}.FeatureVectorRecord.json" for i in range(4))
    assert {s.reg_threshold for s in demo.streams} == {0.5}
    assert demo.realization is not None and demo.realization.num_samples == 3
    assert demo.merging is not None


def test_to_dict_is_canonical():
    data = base()
    data["clustering_config"]["cluster_realization"] = {"min_num_samples": 2}
    data["input_stream_configs"][0].pop("topic")
    canonical = parse_config(data).to_dict()
    assert canonical["clustering_config"]["cluster_realization"] == {
        "num_samples": 2,
        "time_limit_ms": 0,
        "realized_cluster_action": "KEEP_REALIZED",
    }
    assert canonical["input_stream_configs"][0]["topic"] == "camera_1.FeatureVectorRecord.json"
    assert parse_config(canonical) == parse_config(data)


def test_stream_lookup_by_id_and_topic():
    data = base()
    data["input_stream_configs"].append(second_stream("camera_2"))
    config = parse_config(data)
    assert config.stream("camera_2").topic == "camera_2.FeatureVectorRecord.json"
    assert config.by_topic("camera_1.FeatureVectorRecord.json").stream_id == "camera_1"
    assert config.stream_ids == ("camera_1", "camera_2")
    with pytest.raises(KeyError, match="camera_1, camera_2"):
        config.stream("camera_9")
    with pytest.raises(KeyError):
        config.by_topic("nope")


def test_for_threshold_builds_a_plain_config():
    config = ClusteringConfig.for_threshold(0.6, ["a", "b"])
    assert config.method == "SIMPLE_AVERAGE"
    assert (config.realization, config.merging) == (None, None)
    assert [(s.stream_id, s.reg_threshold, s.retention_ms) for s in config.streams] == [
        ("a", 0.6, 0),
        ("b", 0.6, 0),
    ]
    assert config.stream("a").feature_vector_path == "features"
    assert ClusteringConfig.for_threshold(1.0, ["a"], method="USE_LAST").method == "USE_LAST"


def test_for_threshold_refuses_a_bad_threshold():
    with pytest.raises(ConfigError) as info:
        ClusteringConfig.for_threshold(1.5, ["a"])
    assert info.value.problems[0][0] == f"{S0}.reg_stream_config.reg_threshold"


def test_merge_threshold_falls_to_the_floor():
    merging = MergingConfig(0.8, 0.95, 0.65, 1000)
    assert merging.threshold(1, 1) == pytest.approx(0.8 * 0.95**2)
    assert merging.threshold(50, 50) == 0.65


def test_config_is_frozen():
    config = parse_config(base())
    with pytest.raises(AttributeError):
        config.method = "USE_LAST"  # type: ignore[misc]


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"clustering_config": {\n  "method": "USE_LAST",,\n}}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [(where, value, rule)] = info.value.problems
    assert where == "$"
    assert value == '"method": "USE_LAST",,'
    assert "is not valid JSON" in rule and "line 2, column 24" in rule


def test_nan_in_a_file_is_not_json(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text('{"clustering_config": {"method": "USE_LAST", "ema_alpha": NaN}}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "NaN is not allowed at line 1" in info.value.problems[0][2]


def test_missing_file_is_said_plainly(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [("$", str(path), "cannot be read: file not found")]
    assert "file not found" in str(info.value)


def test_schema_problems_in_a_file_are_all_reported(tmp_path):
    data = base()
    data["clustering_config"]["method"] = "X"
    data["input_stream_configs"][0]["reg_stream_config"]["reg_threshold"] = 3
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 2


def test_improved_mode_builds_and_round_trips():
    data = base()
    data["clustering_config"]["improved_mode"] = {"enabled": True}
    config = parse_config(data)
    assert config.improved_mode is not None and config.improved_mode.size_discount == 0.03
    canonical = config.to_dict()
    assert canonical["clustering_config"]["improved_mode"] == {
        "enabled": True,
        "size_discount": 0.03,
    }
    assert parse_config(json.loads(json.dumps(canonical))) == config
    data["clustering_config"]["improved_mode"] = {"enabled": False, "size_discount": 0.1}
    off = parse_config(data)
    assert off.improved_mode is None and off.improved is not None
    assert parse_config(off.to_dict()) == off
    assert "improved_mode" not in parse_config(base()).to_dict()["clustering_config"]
