"""UVAP's config forms, checked against UVAP's own messages as well as read by fvc.

Each form fvc reads as UVAP's (test_uvap_forms.py) is parsed strictly with protobuf's
``json_format`` into FeatureVectorClusteringMSConfig (the microservice form) or
FVClusteringConfigRecord (tests/proto/uvap_fvc.proto): so it is a form UVAP itself reads, and
fvc reads every field to the value protobuf reads.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.json_format import ParseError
from test_uvap_forms import MICROSERVICE, camelise

from app.config import ClusteringConfig, MergingConfig, load_config, parse_config, read_config_data

ROOT = Path(__file__).resolve().parents[3]


def microservice() -> dict[str, Any]:
    return copy.deepcopy(MICROSERVICE)


def enum_numbers() -> dict[str, Any]:
    data = camelise(microservice())
    clustering = data["configData"]["clusteringConfig"]
    clustering["method"] = 2  # SIMPLE_AVERAGE
    clustering["clusterRealization"]["realizedClusterAction"] = 3  # KEEP_REALIZED
    return data


def int64_as_strings() -> dict[str, Any]:
    data = microservice()
    data["config_data"]["clustering_config"]["cluster_realization"]["time_limit_ms"] = "10000"
    for stream in data["config_data"]["input_stream_configs"]:
        stream["reg_stream_config"]["cluster_retention_period_ms"] = "35000"
    return data


def reg_threshold_omitted() -> dict[str, Any]:
    data = microservice()
    del data["config_data"]["input_stream_configs"][1]["reg_stream_config"]["reg_threshold"]
    return data


def merge_at_every_input() -> dict[str, Any]:
    data = microservice()
    data["config_data"]["clustering_config"]["cluster_merging"] = {
        "initial_threshold": 0.8, "threshold_discount_rate": 0.95, "min_threshold": 0.6,
        "time_interval_ms": 0,
    }
    return data


def realization_by_time_only() -> dict[str, Any]:
    data = microservice()
    data["config_data"]["clustering_config"]["cluster_realization"] = {"time_limit_ms": 10000}
    return data


def internal_state_and_fv_clusters() -> dict[str, Any]:
    data = microservice()
    data["internal_state"] = {"broker_list": "kafka:9092", "name": "uvap.fvc.internal-state"}
    stream = data["config_data"]["input_stream_configs"][1]
    stream["fv_field_selector"] = {"fv_cluster_path": "reg_event.cluster"}
    data["config_data"]["clustering_config"]["save_internal_state"] = True
    return data


def as_protobuf_writes_it(uvap) -> dict[str, Any]:
    """What ``json_format.MessageToJson`` makes of a UVAP config: all of proto3 JSON at once.

    Names in lowerCamelCase, enums as numbers, int64 as strings, and every 0 left out.
    """
    data = merge_at_every_input()
    data["config_data"]["clustering_config"]["cluster_merging"]["min_threshold"] = 0.0
    message = uvap.parse("FeatureVectorClusteringMSConfig", json.dumps(data))
    return json.loads(json_format.MessageToJson(message, use_integers_for_enums=True))


FORMS = {
    "microservice form (UVAP's template)": microservice,
    "FVClusteringConfigRecord alone": lambda: microservice()["config_data"],
    "proto3 JSON names": lambda: camelise(microservice()),
    "enum numbers": enum_numbers,
    "int64 as strings": int64_as_strings,
    "reg_threshold omitted": reg_threshold_omitted,
    "time_interval_ms 0": merge_at_every_input,
    "cluster_realization with only time_limit_ms": realization_by_time_only,
    "internal_state and an FVCluster input": internal_state_and_fv_clusters,
    "config/uvap-microservice.json": lambda: json.loads(
        (ROOT / "config" / "uvap-microservice.json").read_text()
    ),
}


def message_for(data: dict[str, Any]) -> str:
    microservice_form = "config_data" in data or "configData" in data
    return "FeatureVectorClusteringMSConfig" if microservice_form else "FVClusteringConfigRecord"


@pytest.mark.parametrize("form", list(FORMS))
def test_each_uvap_form_is_uvaps_message_and_fvc_reads_it_alike(uvap, form: str) -> None:
    data = FORMS[form]()
    message = uvap.parse(message_for(data), json.dumps(data))
    assert_reads_alike(uvap.as_dict(message), parse_config(data))


def test_protobufs_own_json_is_read_alike(uvap) -> None:
    data = as_protobuf_writes_it(uvap)
    clustering = data["configData"]["clusteringConfig"]
    assert clustering["method"] == 2 and clustering["clusterRealization"]["timeLimitMs"] == "10000"
    assert set(clustering["clusterMerging"]) == {"initialThreshold", "thresholdDiscountRate"}
    message = uvap.parse("FeatureVectorClusteringMSConfig", json.dumps(data))
    reading = read_config_data(data)
    assert reading.config is not None
    assert_reads_alike(uvap.as_dict(message), reading.config)
    assert reading.config.merging == MergingConfig(0.8, 0.95, 0.0, 0)
    merging = "$.configData.clusteringConfig.clusterMerging"
    assert f"{merging}.min_threshold absent: UVAP's (proto3's) default 0" in reading.notes
    assert any(n.startswith(f"{merging}.time_interval_ms absent: UVAP's (proto3's) default 0: "
                            "UVAP tries a merge at every input") for n in reading.notes)


def test_the_example_file_is_uvaps_and_loads(uvap) -> None:
    path = ROOT / "config" / "uvap-microservice.json"
    message = uvap.parse("FeatureVectorClusteringMSConfig", path.read_text())
    assert_reads_alike(uvap.as_dict(message), load_config(path))


@pytest.mark.parametrize(
    ("field", "value"),
    [("ema_alpha", 0.2), ("emit_unrealized", True), ("min_update_interval_ms", 100)],
)
def test_fvcs_own_fields_are_not_uvaps(uvap, field: str, value: object) -> None:
    """What fvc adds to the form is refused by UVAP: a config using it is fvc's alone."""
    data = microservice()
    data["config_data"]["clustering_config"][field] = value
    parse_config(data)
    with pytest.raises(ParseError, match=field):
        uvap.parse("FeatureVectorClusteringMSConfig", json.dumps(data))


def assert_reads_alike(read: dict[str, Any], config: ClusteringConfig) -> None:
    """The config fvc built holds what protobuf read, field by field (floats are float32)."""
    record = read.get("config_data", read)
    clustering = record["clustering_config"]
    assert config.method == clustering["method"]
    assert (config.save_internal_state, config.start_from_internal_state) == (
        clustering["save_internal_state"], clustering["start_from_internal_state"]
    )
    realization = clustering.get("cluster_realization")
    if realization is None:
        assert config.realization is None
    else:
        assert config.realization is not None
        action = realization["realized_cluster_action"]
        # left out, proto3 reads INVALID; UVAP's own examples leave it out: KEEP_REALIZED
        action = "KEEP_REALIZED" if action == "INVALID" else action
        assert (config.realization.num_samples, config.realization.time_limit_ms,
                config.realization.action) == (
            realization["num_samples"], int(realization["time_limit_ms"]), action
        )
    merging = clustering.get("cluster_merging")
    if merging is None:
        assert config.merging is None
    else:
        assert config.merging is not None
        assert (config.merging.initial_threshold, config.merging.threshold_discount_rate,
                config.merging.min_threshold) == pytest.approx(
            (merging["initial_threshold"], merging["threshold_discount_rate"],
             merging["min_threshold"]), rel=1e-6)
        assert config.merging.time_interval_ms == int(merging["time_interval_ms"])
    streams = record["input_stream_configs"]
    assert len(config.streams) == len(streams)
    for stream, entry in zip(config.streams, streams, strict=True):
        assert stream.stream_id == entry["stream_id"]
        selector = entry["fv_field_selector"]
        assert (stream.feature_vector_path, stream.fv_cluster_path) == (
            selector.get("feature_vector_path"), selector.get("fv_cluster_path")
        )
        reg = entry["reg_stream_config"]
        assert stream.reg_threshold == pytest.approx(reg["reg_threshold"], rel=1e-6)
        assert stream.retention_ms == int(reg["cluster_retention_period_ms"])
    if "config_data" in read:
        assert config.topics == tuple(source["name"] for source in read["sources"])
        assert config.output_topic == read["target"]["name"]
        assert config.internal_state_topic == read.get("internal_state", {}).get("name")
