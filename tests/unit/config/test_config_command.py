"""``fvc config validate`` / ``show``: exit codes and what an operator reads."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.commands import config as command

ROOT = Path(__file__).resolve().parents[3]
GOOD = str(ROOT / "config" / "single-camera.json")
FOUR = str(ROOT / "config" / "four-cameras.json")
UVAP = str(ROOT / "config" / "uvap-microservice.json")


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fvc")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def bad_file(tmp_path) -> str:
    data = json.loads(Path(GOOD).read_text())
    data["clustering_config"]["method"] = "MEDIAN"
    data["clustering_config"]["colour"] = "red"
    data["input_stream_configs"][0]["reg_stream_config"]["reg_threshold"] = 1.5
    del data["input_stream_configs"][0]["stream_id"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_valid_files_exit_0_with_a_summary(capsys):
    assert run("config", "validate", GOOD, FOUR) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{GOOD}: valid (1 stream, method SIMPLE_AVERAGE)",
        f"{FOUR}: valid (4 streams, method SIMPLE_AVERAGE)",
    ]


def test_invalid_file_exits_1_listing_every_problem(bad_file, capsys):
    assert run("config", "validate", GOOD, bad_file) == 1
    out = capsys.readouterr().out
    assert f"{bad_file}: invalid (4 problems)" in out
    assert '$.clustering_config.colour: "red" — unknown field' in out
    assert '$.clustering_config.method: "MEDIAN" — is not one of [USE_LAST' in out
    assert "$.input_stream_configs[0].reg_stream_config.reg_threshold: 1.5 — must be <= 1" in out
    assert "$.input_stream_configs[0].stream_id — is required" in out


def test_missing_file_exits_1(tmp_path, capsys):
    assert run("config", "validate", str(tmp_path / "nope.json")) == 1
    assert "file not found" in capsys.readouterr().out


def test_json_output_is_machine_readable(bad_file, capsys):
    assert run("config", "validate", "--json", GOOD, bad_file) == 1
    good, bad = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert good == {
        "file": GOOD,
        "valid": True,
        "streams": 1,
        "method": "SIMPLE_AVERAGE",
        "read_as": [],
        "notes": [],
        "problems": [],
    }
    assert bad["valid"] is False
    assert {
        "path": "$.input_stream_configs[0].stream_id",
        "value": None,
        "rule": "is required",
    } in (bad["problems"])
    assert len(bad["problems"]) == 4


def test_show_prints_the_canonical_config(capsys):
    assert run("config", "show", GOOD) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "emit_unrealized" not in shown["clustering_config"]  # the output profile decides
    assert shown["input_stream_configs"][0]["topic"] == "camera_1.FeatureVectorRecord.json"


def test_show_refuses_an_invalid_file(bad_file, capsys):
    assert run("config", "show", bad_file) == 1
    assert "unknown field" in capsys.readouterr().err


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as info:
        run("config", "validate", "--help")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "path: value — rule" in out and "--json" in out


def proto3_file(tmp_path, **changes: object) -> str:
    """The UVAP example in proto3 JSON: JSON names, enum numbers, int64 as strings."""
    data = json.loads(Path(UVAP).read_text())
    clustering = data["config_data"]["clustering_config"]
    clustering["method"] = 2
    clustering["cluster_realization"]["realized_cluster_action"] = 3
    for stream in data["config_data"]["input_stream_configs"]:
        stream["reg_stream_config"]["cluster_retention_period_ms"] = "86400000"
    clustering.update(changes)
    text = json.dumps(data)
    for snake, camel in (
        ("config_data", "configData"),
        ("input_stream_configs", "inputStreamConfigs"),
        ("stream_id", "streamId"),
        ("reg_stream_config", "regStreamConfig"),
        ("reg_threshold", "regThreshold"),
    ):
        text = text.replace(f'"{snake}"', f'"{camel}"')
    path = tmp_path / "proto3.json"
    path.write_text(text)
    return str(path)


def test_validate_says_how_a_microservice_config_was_read(tmp_path, capsys):
    path = proto3_file(tmp_path)
    assert run("config", "validate", GOOD, path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{GOOD}: valid (1 stream, method SIMPLE_AVERAGE)"
    assert out[1] == f"{path}: valid (2 streams, method SIMPLE_AVERAGE)"
    assert out[2] == (
        "  read as: microservice form, proto3 JSON names, enum numbers, numbers as strings"
    )
    notes = "\n".join(out[3:])
    assert "configData -> config_data" in notes and "streamId -> stream_id" in notes
    assert "$.configData.clustering_config.method: 2 read as SIMPLE_AVERAGE" in notes
    assert (
        "$.sources[0] -> topic of input_stream_configs[0] (entrance): "
        "cam.entrance.FeatureVectorRecord.json" in notes
    )
    assert "$.target -> output topic sample.FVClusterUpdateRecord.json" in notes
    assert all(line.startswith("    ") for line in out[3:])


def test_validate_names_problems_where_the_file_wrote_them(tmp_path, capsys):
    path = proto3_file(tmp_path, method=0)
    assert run("config", "validate", path) == 1
    out = capsys.readouterr().out
    assert f"{path}: invalid (1 problem)" in out
    assert "read as: microservice form, proto3 JSON names" in out
    assert "$.configData.clustering_config.method: 0 — is INVALID, UVAP's unset value" in out


def test_validate_json_has_the_form_and_notes(tmp_path, capsys):
    assert run("config", "validate", "--json", proto3_file(tmp_path)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["read_as"][:2] == ["microservice form", "proto3 JSON names"]
    assert any("-> output topic" in note for note in result["notes"])


def test_show_prints_the_canonical_form_of_a_microservice_config(tmp_path, capsys):
    path = proto3_file(tmp_path)
    assert run("config", "show", path) == 0
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    assert shown == json.loads(_show(UVAP))  # the same config as the snake_case example
    assert shown["output_topic"] == "sample.FVClusterUpdateRecord.json"
    assert [s["topic"] for s in shown["input_stream_configs"]] == [
        "cam.entrance.FeatureVectorRecord.json",
        "cam.exit.FeatureVectorRecord.json",
    ]
    assert shown["clustering_config"]["cluster_realization"]["realized_cluster_action"] == (
        "KEEP_REALIZED"
    )
    assert (
        captured.err == f"{path}: read as: microservice form, proto3 JSON names, "
        "enum numbers, numbers as strings\n"
    )


def _show(path: str) -> str:
    """``fvc config show`` as an operator runs it."""
    fvc = Path(sys.executable).with_name("fvc")
    done = subprocess.run(  # noqa: S603 - our own CLI
        [str(fvc), "config", "show", path], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_show_output_is_canonical_and_valid_again(tmp_path):
    canonical = tmp_path / "canonical.json"
    canonical.write_text(_show(UVAP))
    assert json.loads(_show(str(canonical))) == json.loads(canonical.read_text())
