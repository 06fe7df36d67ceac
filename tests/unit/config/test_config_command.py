"""``fvc config validate`` / ``show``: exit codes and what an operator reads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from app.commands import config as command

ROOT = Path(__file__).resolve().parents[3]
GOOD = str(ROOT / "config" / "single-camera.json")
FOUR = str(ROOT / "config" / "four-cameras.json")


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
    assert shown["clustering_config"]["emit_unrealized"] is False
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
