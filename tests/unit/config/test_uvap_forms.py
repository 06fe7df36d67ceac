"""Configs as a UVAP deployment writes them.

Each accepted form parses to its canonical twin; each form UVAP refuses is refused naming the
field (as the file wrote it) and the rule.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.config import (
    ClusteringConfig,
    MergingConfig,
    RealizationConfig,
    json_name,
    load_config,
    normalise_config,
    parse_config,
    read_config,
    read_config_data,
)
from app.errors import ConfigError
from app.settings import Settings
from app.store import MemoryStore
from schemas import load_schema, validator
from schemas.problems import MISSING

ROOT = Path(__file__).resolve().parents[3]

# Every field fvc has, in the canonical form.
FULL: dict[str, Any] = {
    "clustering_config": {
        "method": "SIMPLE_AVERAGE",
        "ema_alpha": 0.2,
        "cluster_realization": {
            "num_samples": 5,
            "time_limit_ms": 10000,
            "realized_cluster_action": "UNREALIZE",
        },
        "cluster_merging": {
            "initial_threshold": 0.8,
            "threshold_discount_rate": 0.95,
            "min_threshold": 0.6,
            "time_interval_ms": 4000,
        },
        "save_internal_state": True,
        "start_from_internal_state": True,
        "emit_unrealized": True,
        "min_update_interval_ms": 100,
        "improved_mode": {"enabled": True, "size_discount": 0.02},
    },
    "input_stream_configs": [
        {
            "stream_id": "entrance",
            "topic": "cam.entrance.FeatureVectorRecord.json",
            "fv_field_selector": {"feature_vector_path": "features"},
            "reg_stream_config": {"reg_threshold": 0.8, "cluster_retention_period_ms": 86400000},
            "track_linking": {
                "track_id_path": "track_id",
                "track_threshold": 0.3,
                "time_window_ms": 5000,
            },
        },
        {
            "stream_id": "exit",
            "topic": "cam.exit.FeatureVectorRecord.json",
            "fv_field_selector": {"fv_cluster_path": "reg_event.cluster"},
            "reg_stream_config": {"reg_threshold": 0.7, "cluster_retention_period_ms": 0},
        },
    ],
}

# UVAP's own FVC template (docs/_src_templates/uvap_kafka_fvc_fve_TEMPLATE.json), filled in.
MICROSERVICE: dict[str, Any] = {
    "sources": [
        {"broker_list": "kafka:9092", "name": "uvap.cam.0.fvecs.FeatureVectorRecord.json"},
        {"broker_list": "kafka:9092", "name": "uvap.cam.1.fvecs.FeatureVectorRecord.json"},
    ],
    "source_options": {"start": "START_NOW", "end": "END_NEVER"},
    "target_options": {"handling": "REPLACE"},
    "target": {"broker_list": "kafka:9092", "name": "uvap.fvc.FVClusterUpdateRecord.json"},
    "config_data": {
        "clustering_config": {
            "method": "SIMPLE_AVERAGE",
            "cluster_realization": {
                "num_samples": 5,
                "time_limit_ms": 10000,
                "realized_cluster_action": "KEEP_REALIZED",
            },
            "save_internal_state": False,
            "start_from_internal_state": False,
        },
        "input_stream_configs": [
            {
                "stream_id": f"camera_{i}",
                "fv_field_selector": {"feature_vector_path": "features"},
                "reg_stream_config": {"reg_threshold": 0.8, "cluster_retention_period_ms": 35000},
            }
            for i in range(2)
        ],
    },
}


def microservice() -> dict[str, Any]:
    return copy.deepcopy(MICROSERVICE)


def twin_of_microservice() -> dict[str, Any]:
    """The canonical form of MICROSERVICE, written by hand."""
    twin = copy.deepcopy(MICROSERVICE["config_data"])
    for i, stream in enumerate(twin["input_stream_configs"]):
        stream["topic"] = f"uvap.cam.{i}.fvecs.FeatureVectorRecord.json"
    twin["output_topic"] = "uvap.fvc.FVClusterUpdateRecord.json"
    return twin


def camelise(value: Any) -> Any:
    """Every key as protobuf's JSON name, recursively (what json_format.MessageToJson writes)."""
    if isinstance(value, dict):
        return {json_name(k): camelise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camelise(v) for v in value]
    return value


def problems_of(data: object) -> list[tuple[str, object, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def assert_refused(data: object, path: str, *rule: str) -> None:
    problems = problems_of(data)
    matching = [p for p in problems if p[0] == path and all(r in p[2] for r in rule)]
    assert matching, f"no problem at {path} with {rule!r}; got {problems}"


# -- accepted forms -------------------------------------------------------------------------


def test_json_names_are_protobufs():
    assert json_name("input_stream_configs") == "inputStreamConfigs"
    assert json_name("fv_field_selector") == "fvFieldSelector"
    assert json_name("cluster_retention_period_ms") == "clusterRetentionPeriodMs"
    assert json_name("method") == "method"


def test_the_canonical_form_is_read_as_such():
    reading = read_config_data(copy.deepcopy(FULL))
    assert reading.config == parse_config(FULL)
    assert (reading.form, reading.notes, reading.read_as) == ((), (), "canonical form")


def test_microservice_form_parses_to_its_canonical_twin():
    reading = read_config_data(microservice())
    assert reading.config == parse_config(twin_of_microservice())
    assert reading.config is not None
    assert reading.config.topics == (
        "uvap.cam.0.fvecs.FeatureVectorRecord.json",
        "uvap.cam.1.fvecs.FeatureVectorRecord.json",
    )
    assert reading.config.output_topic == "uvap.fvc.FVClusterUpdateRecord.json"
    assert reading.form == ("microservice form",)
    notes = "\n".join(reading.notes)
    assert (
        "$.sources[1] -> topic of input_stream_configs[1] (camera_1): "
        "uvap.cam.1.fvecs.FeatureVectorRecord.json" in notes
    )
    assert "$.target -> output topic uvap.fvc.FVClusterUpdateRecord.json" in notes
    assert "$.source_options ignored" in notes and "$.target_options ignored" in notes
    assert (
        "ignored, fvc connects with FVC_KAFKA_BOOTSTRAP and FVC_SASL_* / FVC_SSL_*: "
        "$.sources[0].broker_list, $.sources[1].broker_list, $.target.broker_list" in notes
    )


def test_microservice_form_with_topic_names_and_internal_state():
    data = microservice()
    data["sources"] = [source["name"] for source in data["sources"]]
    data["target"] = "uvap.fvc.FVClusterUpdateRecord.json"
    data["internal_state"] = {"name": "uvap.fvc.internal-state"}
    config = parse_config(data)
    twin = twin_of_microservice() | {"internal_state_topic": "uvap.fvc.internal-state"}
    assert config == parse_config(twin)
    assert config.settings_overrides() == {
        "output_topic": "uvap.fvc.FVClusterUpdateRecord.json",
        "internal_state_topic": "uvap.fvc.internal-state",
    }


def test_microservice_form_round_trips_through_the_canonical_form():
    config = parse_config(microservice())
    canonical = config.to_dict()
    assert canonical["output_topic"] == "uvap.fvc.FVClusterUpdateRecord.json"
    assert list(validator("config").iter_errors(canonical)) == []
    assert parse_config(json.loads(json.dumps(canonical))) == config
    assert "output_topic" not in parse_config(FULL).to_dict()


def test_proto3_json_names_parse_to_the_canonical_twin():
    camel = camelise(FULL)
    assert "inputStreamConfigs" in camel and "clusterRealization" in camel["clusteringConfig"]
    reading = read_config_data(camel)
    assert reading.config == parse_config(FULL)
    assert reading.form == ("proto3 JSON names",)
    assert "streamId -> stream_id" in reading.notes[0]


def test_every_schema_field_has_its_json_name_accepted():
    """The JSON names come from the schema itself: every snake_case property is covered."""
    schema = load_schema("config")
    names: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            names.update(k for k in node.get("properties", {}) if "_" in k)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(schema)
    deferred = copy.deepcopy(FULL)  # deferral excludes track linking, which FULL has
    deferred["clustering_config"]["improved_mode"].update(deferral_ms=1000, window_threshold=0.7,
                                                     max_window_size=512)
    used = set()
    for config in (FULL, deferred):
        renamed = normalise_config(camelise(config)).notes[0].split(": ", 1)[1].split(", ")
        used |= {name.split(" -> ")[1] for name in renamed}
    assert names - used <= {"min_num_samples", "output_topic", "internal_state_topic"}
    alias = camelise(
        {
            "clustering_config": {
                "method": "SIMPLE_AVERAGE",
                "cluster_realization": {"min_num_samples": 2},
            },
            "input_stream_configs": FULL["input_stream_configs"],
            "output_topic": "out",
            "internal_state_topic": "state",
        }
    )
    config = parse_config(alias)
    assert config.realization is not None and config.realization.num_samples == 2
    assert (config.output_topic, config.internal_state_topic) == ("out", "state")


def test_microservice_form_in_proto3_json():
    data = camelise(microservice())
    assert "configData" in data and "brokerList" in data["sources"][0]
    reading = read_config_data(data)
    assert reading.config == parse_config(twin_of_microservice())
    assert reading.form == ("microservice form", "proto3 JSON names")


@pytest.mark.parametrize(("number", "name"), [(1, "USE_LAST"), (2, "SIMPLE_AVERAGE")])
def test_method_numbers_are_uvaps(number, name):
    data = {
        "clustering_config": {"method": number},
        "input_stream_configs": copy.deepcopy(FULL["input_stream_configs"]),
    }
    reading = read_config_data(data)
    assert reading.config is not None and reading.config.method == name
    assert reading.form == ("enum numbers",)
    assert reading.notes == (f"$.clustering_config.method: {number} read as {name}",)


@pytest.mark.parametrize(
    ("number", "name"), [(1, "REMOVE"), (2, "UNREALIZE"), (3, "KEEP_REALIZED")]
)
def test_realized_cluster_action_numbers_are_uvaps(number, name):
    data = copy.deepcopy(FULL)
    data["clustering_config"]["cluster_realization"]["realized_cluster_action"] = number
    twin = copy.deepcopy(FULL)
    twin["clustering_config"]["cluster_realization"]["realized_cluster_action"] = name
    assert parse_config(data) == parse_config(twin)


def test_numbers_as_strings_are_proto3_json():
    data = copy.deepcopy(FULL)
    stream = data["input_stream_configs"][0]
    stream["reg_stream_config"] = {
        "reg_threshold": "0.8",
        "cluster_retention_period_ms": "86400000",
    }
    data["clustering_config"]["cluster_realization"]["time_limit_ms"] = "10000"
    data["clustering_config"]["cluster_realization"]["num_samples"] = "5"
    data["clustering_config"]["cluster_merging"]["time_interval_ms"] = "4000"
    reading = read_config_data(data)
    assert reading.config == parse_config(FULL)
    assert reading.form == ("numbers as strings",)
    assert (
        '$.input_stream_configs[0].reg_stream_config.cluster_retention_period_ms: "86400000" '
        "read as 86400000" in reading.notes
    )


def test_everything_proto3_at_once():
    """What protobuf's json_format.MessageToJson writes: JSON names, int64 as strings."""
    data = camelise(microservice())
    clustering = data["configData"]["clusteringConfig"]
    clustering["method"] = 2
    clustering["clusterRealization"]["realizedClusterAction"] = 3
    clustering["clusterRealization"]["timeLimitMs"] = "10000"
    for stream in data["configData"]["inputStreamConfigs"]:
        stream["regStreamConfig"]["clusterRetentionPeriodMs"] = "35000"
    reading = read_config_data(data)
    assert reading.config == parse_config(twin_of_microservice())
    assert reading.form == (
        "microservice form",
        "proto3 JSON names",
        "enum numbers",
        "numbers as strings",
    )


def test_reg_threshold_left_out_is_uvaps_default_zero():
    data = copy.deepcopy(FULL)
    del data["input_stream_configs"][1]["reg_stream_config"]["reg_threshold"]
    twin = copy.deepcopy(FULL)
    twin["input_stream_configs"][1]["reg_stream_config"]["reg_threshold"] = 0.0
    reading = read_config_data(data)
    assert reading.config == parse_config(twin)
    assert reading.config is not None and reading.config.streams[1].reg_threshold == 0.0
    assert reading.form == ("UVAP defaults",)
    assert reading.notes == (
        "$.input_stream_configs[1].reg_stream_config.reg_threshold absent: UVAP's default 0.0",
    )


def test_merge_interval_zero_is_a_merge_attempt_at_every_input():
    data = copy.deepcopy(FULL)
    data["clustering_config"]["cluster_merging"]["time_interval_ms"] = 0
    reading = read_config_data(data)
    assert reading.config is not None
    merging = reading.config.merging
    assert merging == MergingConfig(0.8, 0.95, 0.6, 0) and merging.at_every_input
    assert "merge at every input" in reading.notes[0]
    canonical = reading.config.to_dict()
    assert canonical["clustering_config"]["cluster_merging"]["time_interval_ms"] == 0
    assert parse_config(canonical) == reading.config


def test_realization_by_time_limit_only_has_uvaps_num_samples_zero():
    data = copy.deepcopy(FULL)
    data["clustering_config"]["cluster_realization"] = {"time_limit_ms": 10000}
    twin = copy.deepcopy(FULL)
    twin["clustering_config"]["cluster_realization"] = {"num_samples": 0, "time_limit_ms": 10000}
    reading = read_config_data(data)
    assert reading.config == parse_config(twin)
    assert reading.config is not None
    assert reading.config.realization == RealizationConfig(0, 10000, "KEEP_REALIZED")
    assert "num_samples absent: UVAP's default 0" in reading.notes[0]
    assert parse_config(reading.config.to_dict()) == reading.config


def test_null_is_an_absent_field():
    data = {
        "clustering_config": {
            "method": "USE_LAST",
            "cluster_merging": None,
            "cluster_realization": None,
        },
        "input_stream_configs": copy.deepcopy(FULL["input_stream_configs"]),
    }
    reading = read_config_data(data)
    assert reading.config is not None and reading.config.merging is None
    assert reading.form == ("null as absent",)


def test_example_of_the_microservice_form_loads():
    config = load_config(ROOT / "config" / "uvap-microservice.json")
    assert isinstance(config, ClusteringConfig)
    assert config.output_topic == "sample.FVClusterUpdateRecord.json"
    assert config.topics == (
        "cam.entrance.FeatureVectorRecord.json",
        "cam.exit.FeatureVectorRecord.json",
    )


# -- refused forms --------------------------------------------------------------------------


def test_trailing_comma_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "uvap.json"
    text = json.dumps(MICROSERVICE, indent=2)
    field = '"cluster_retention_period_ms": 35000'
    text = text.replace(field, field + ",", 1)
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [(where, value, rule)] = info.value.problems
    stream = "$.config_data.input_stream_configs[0]"
    assert where == f"{stream}.reg_stream_config.cluster_retention_period_ms"
    assert value == '"cluster_retention_period_ms": 35000,'
    assert "trailing comma at line" in rule and "UVAP refuses it too" in rule


def test_trailing_comma_in_an_array_names_its_last_item(tmp_path):
    path = tmp_path / "uvap.json"
    path.write_text('{"sources": ["a", "b",], "config_data": {}}')
    [(where, _, rule)] = read_config(path).problems
    assert where == "$.sources[1]" and "trailing comma" in rule


@pytest.mark.parametrize("value", ["INVALID", 0])
def test_invalid_method_is_refused(value):
    data = camelise(microservice())
    data["configData"]["clusteringConfig"]["method"] = value
    assert_refused(
        data,
        "$.configData.clusteringConfig.method",
        "UVAP's unset value",
        "USE_LAST, SIMPLE_AVERAGE, EXP_AVERAGE",
    )


@pytest.mark.parametrize("value", ["INVALID", 0])
def test_invalid_action_is_refused(value):
    data = copy.deepcopy(FULL)
    data["clustering_config"]["cluster_realization"]["realized_cluster_action"] = value
    assert_refused(
        data,
        "$.clustering_config.cluster_realization.realized_cluster_action",
        "UVAP's unset value",
        "KEEP_REALIZED, UNREALIZE, REMOVE",
    )


def test_unknown_enum_numbers_are_refused():
    data = copy.deepcopy(FULL)
    data["clustering_config"]["method"] = 3
    data["clustering_config"]["cluster_realization"]["realized_cluster_action"] = 4
    problems = problems_of(data)
    assert problems == [
        (
            "$.clustering_config.cluster_realization.realized_cluster_action",
            4,
            "is not a UVAP RealizedClusterAction number (1 = REMOVE, 2 = UNREALIZE, "
            "3 = KEEP_REALIZED)",
        ),
        (
            "$.clustering_config.method",
            3,
            "is not a UVAP ClusteringMethod number (1 = USE_LAST, 2 = SIMPLE_AVERAGE)",
        ),
    ]


@pytest.mark.parametrize(
    ("selector", "path", "rule"),
    [
        ({}, "$.configData.inputStreamConfigs[0].fvFieldSelector", "needs exactly one of"),
        (
            {"featureVectorPath": ""},
            "$.configData.inputStreamConfigs[0].fvFieldSelector.featureVectorPath",
            "must not be empty",
        ),
    ],
)
def test_empty_selector_is_refused_where_written(selector, path, rule):
    data = camelise(microservice())
    data["configData"]["inputStreamConfigs"][0]["fvFieldSelector"] = selector
    assert_refused(data, path, rule)


@pytest.mark.parametrize("section", ["clusterRealization", "clusterMerging"])
def test_use_last_with_realization_or_merging_is_refused_where_written(section):
    data = camelise(microservice())
    clustering = data["configData"]["clusteringConfig"]
    clustering["method"] = 1
    clustering.pop("clusterRealization")
    clustering[section] = copy.deepcopy(camelise(FULL)["clusteringConfig"][section])
    assert_refused(
        data, f"$.configData.clusteringConfig.{section}", "is not allowed with method USE_LAST"
    )


def test_schema_problems_name_the_field_as_written():
    data = camelise(microservice())
    data["configData"]["inputStreamConfigs"][1]["regStreamConfig"]["regThreshold"] = 1.5
    data["configData"]["inputStreamConfigs"][1]["streamId"] = "camera_0"
    data["configData"]["clusteringConfig"]["colour"] = "red"
    problems = problems_of(data)
    assert (
        "$.configData.inputStreamConfigs[1].regStreamConfig.regThreshold",
        1.5,
        "must be <= 1",
    ) in problems
    assert (
        "$.configData.inputStreamConfigs[1].streamId",
        "camera_0",
        "is also used by $.configData.inputStreamConfigs[0]",
    ) in problems
    assert ("$.configData.clusteringConfig.colour", "red", "unknown field") in problems


def test_a_field_and_its_json_name_together_are_refused():
    data = copy.deepcopy(FULL)
    data["input_stream_configs"][0]["streamId"] = "other"
    assert_refused(data, "$.input_stream_configs[0].streamId", "is given twice: also as stream_id")


def test_sources_must_match_the_streams_one_to_one():
    data = microservice()
    data["sources"].append("third")
    assert_refused(
        data,
        "$.sources",
        "must name one topic per input stream",
        "$.config_data.input_stream_configs has 2",
    )
    data = microservice()
    data["sources"] = "cam.FeatureVectorRecord.json"
    assert_refused(data, "$.sources", "must be an array of topics")


def test_a_source_and_an_explicit_topic_must_agree():
    data = microservice()
    data["config_data"]["input_stream_configs"][0]["topic"] = "elsewhere"
    assert_refused(
        data,
        "$.sources[0].name",
        "names another topic than $.config_data.input_stream_configs[0].topic",
    )
    data = microservice()
    data["config_data"]["input_stream_configs"][0]["topic"] = data["sources"][0]["name"]
    assert parse_config(data) == parse_config(twin_of_microservice())


def test_a_topic_needs_a_name():
    data = microservice()
    data["sources"][0] = {"broker_list": "kafka:9092"}
    data["target"] = {"name": ""}
    data["internal_state"] = 7
    problems = problems_of(data)
    assert ("$.sources[0].name", MISSING, "is required") in problems
    assert ("$.target.name", "", "must be a non-empty string") in problems
    assert any(p[0] == "$.internal_state" and "must be a topic name" in p[2] for p in problems)


def test_microservice_form_needs_config_data_and_nothing_beside():
    data = microservice()
    data["clustering_config"] = data["config_data"].pop("clustering_config")
    assert_refused(data, "$.clustering_config", "belongs inside config_data")
    data = microservice()
    del data["config_data"]
    assert_refused(data, "$.config_data", "is required")
    data = microservice()
    data["targets"] = data.pop("target")
    assert_refused(data, "$.targets", "did you mean 'target'?")


def test_passwords_never_reach_notes_or_problems():
    data = microservice()
    data["sources"][0] |= {"user_name": "fvc", "password": "s3cret"}
    data["config_data"]["clustering_config"]["method"] = "MEDIAN"
    reading = read_config_data(data)
    assert "s3cret" not in repr(reading)
    data["config_data"]["clustering_config"]["method"] = "SIMPLE_AVERAGE"
    reading = read_config_data(data)
    assert reading.config is not None and "s3cret" not in repr(reading)
    assert any("$.sources[0].password" in note for note in reading.notes)


# -- the worker uses the topics the config names --------------------------------------------


def test_explicit_settings_win_over_the_config():
    config = parse_config(microservice())
    assert config.settings_overrides({"output_topic"}) == {}
    assert config.settings_overrides() == {"output_topic": "uvap.fvc.FVClusterUpdateRecord.json"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "uvap.fvc.FVClusterUpdateRecord.json"),
        ({"FVC_OUTPUT_TOPIC": "mine"}, "mine"),
    ],
)
def test_runtime_publishes_to_the_configs_target_unless_set(tmp_path, environ, expected):
    from app.worker.runtime import Runtime

    path = tmp_path / "uvap.json"
    path.write_text(json.dumps(MICROSERVICE))
    runtime = Runtime(Settings.from_env(environ), str(path), store=MemoryStore())
    assert runtime.settings.output_topic == expected
    assert runtime.pipeline.outbox.settings.output_topic == expected
    assert runtime.settings.internal_state_topic == "fvc.internal-state"


def test_config_without_topics_leaves_settings_alone(tmp_path):
    from app.worker.runtime import Runtime

    path = tmp_path / "plain.json"
    path.write_text(json.dumps(FULL))
    settings = Settings.from_env({})
    assert Runtime(settings, str(path), store=MemoryStore()).settings is settings


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_proto3_special_floats_are_refused(text):
    data = camelise(FULL)
    data["inputStreamConfigs"][0]["regStreamConfig"]["regThreshold"] = text
    assert_refused(
        data, "$.inputStreamConfigs[0].regStreamConfig.regThreshold", "must be a finite number"
    )
