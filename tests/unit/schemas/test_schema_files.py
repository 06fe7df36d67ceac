"""The schema files themselves: valid draft 2020-12, loadable by name, cross-references offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from schemas import SCHEMA_NAMES, load_schema, validator

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"


def test_every_file_is_listed_and_every_name_has_a_file():
    files = {p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json")}
    assert files == set(SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_2020_12(name):
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.schema.json")


def test_names_are_accepted_with_or_without_suffix():
    assert load_schema("config") is load_schema("config.schema.json")
    assert validator("fv_cluster") is validator("fv_cluster")
    with pytest.raises(KeyError, match="unknown schema"):
        load_schema("nope")


def test_cross_file_references_resolve():
    record = {"features": {"model_id": "m", "feature": ["x"], "type": "t"}}
    errors = list(validator("feature_vector_record").iter_errors(record))
    assert [list(e.absolute_path) for e in errors] == [["features", "feature", 0]]


def test_input_record_allows_extra_fields_and_bare_end_of_frame():
    check = validator("feature_vector_record")
    assert check.is_valid({"features": {"feature": [1.0]}, "camera_pose": 3})
    assert check.is_valid({"end_of_frame": True})
    assert not check.is_valid({"end_of_frame": False})


def test_fv_cluster_needs_a_positive_count():
    check = validator("fv_cluster")
    fv = {"model_id": "m", "feature": [0.5], "type": "t"}
    assert check.is_valid({"representative_fv": fv, "num_observations": 3})
    assert not check.is_valid({"representative_fv": fv, "num_observations": 0})
