"""values.yaml, values.schema.json and README.md agree; the chart has the shape CONVENTIONS asks.

Every leaf of values.yaml has a `## @param` line, every @param names a real value, the README's
table is generated from them and current, the schema knows every value and refuses unknown
keys in every object it describes, and its `config` part is schemas/config.schema.json.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml
from chart_support import CHART, ROOT

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

# Kubernetes objects passed through as a whole (validated when rendered, by the manifest checks),
# and maps of free keys: the schema lets these hold any key.
PASS_THROUGH = {
    "global",
    "affinity",
    "podSecurityContext",
    "securityContext",
    "autoscaling.behavior.scaleUp",
    "autoscaling.behavior.scaleDown",
}


def _generate_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "chart_generate", ROOT / "scripts" / "chart_generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = _generate_module()
PARAMS = {path for _, path, _ in GENERATE.params(VALUES_TEXT)}


def _leaves(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of values.yaml down to the first path that has a @param line."""
    if prefix in PARAMS:
        return [prefix]
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_every_value_has_a_param_line() -> None:
    undocumented = [p for p in _leaves(VALUES) if p not in PARAMS]
    assert not undocumented, f"values without a `## @param` line: {undocumented}"


def test_every_param_line_names_a_value() -> None:
    stale = []
    for path in PARAMS:
        try:
            GENERATE.lookup(VALUES, path)
        except KeyError:
            stale.append(path)
    assert stale == [], f"@param lines name no value: {stale}"


def test_values_are_grouped_in_sections() -> None:
    sections = [s for s, _, _ in GENERATE.params(VALUES_TEXT)]
    assert all(sections), "a @param before the first @section"
    assert len(set(sections)) >= 10


def test_readme_lists_every_value_and_is_current() -> None:
    readme = (CHART / "README.md").read_text()
    assert GENERATE.updated(readme, VALUES_TEXT) == readme, (
        "helm/fvc/README.md is out of date: run python scripts/chart_generate.py"
    )
    for path in PARAMS:
        assert f"| `{path}` |" in readme


def _schema_at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for key in path.split("."):
        assert "properties" in node and key in node["properties"], (
            f"values.schema.json lacks {path}"
        )
        node = node["properties"][key]
        if "$ref" in node:
            node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_schema_knows_every_value() -> None:
    def walk(node: Any, prefix: str) -> None:
        if prefix:
            _schema_at(prefix)
        if isinstance(node, dict) and prefix not in PASS_THROUGH:
            schema = _schema_at(prefix) if prefix else SCHEMA
            if "properties" in schema:
                for key, value in node.items():
                    walk(value, f"{prefix}.{key}" if prefix else key)

    walk(VALUES, "")
    assert SCHEMA["additionalProperties"] is False


def test_schema_refuses_unknown_keys_everywhere() -> None:
    """Every object the schema describes with properties also has additionalProperties false."""
    loose: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            conditional = where.endswith(("/if", "/then")) or "/if/" in where or "/then/" in where
            if (
                "properties" in node
                and node.get("additionalProperties") is not False
                and not conditional
            ):
                loose.append(where or "<root>")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(SCHEMA, "")
    # extraEnv items: an EnvVar (name plus value or valueFrom), checked when rendered.
    assert loose == ["/properties/extraEnv/items"]


def test_schema_requires_the_top_level_groups() -> None:
    assert SCHEMA["additionalProperties"] is False
    assert {"image", "settings", "kafka", "redis", "config", "autoscaling"} <= set(
        SCHEMA["required"]
    )


def test_values_validate_against_their_schema() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(VALUES)
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        merged = _merge(VALUES, yaml.safe_load(path.read_text()) or {})
        jsonschema.Draft202012Validator(SCHEMA).validate(merged)


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return over


def test_config_schema_is_the_projects() -> None:
    """values.schema.json's `config` is schemas/config.schema.json (its $defs at the root)."""
    project = json.loads((ROOT / "schemas" / "config.schema.json").read_text())
    assert GENERATE.synced_schema(SCHEMA, project) == SCHEMA, (
        "values.schema.json's config is stale: run python scripts/chart_generate.py"
    )
    config = SCHEMA["properties"]["config"]
    for key in ("type", "required", "additionalProperties", "properties"):
        assert config[key] == project[key], key
    for name, definition in project["$defs"].items():
        assert SCHEMA["$defs"][name] == definition, name
    for threshold in ("initial_threshold", "min_threshold"):
        assert SCHEMA["$defs"]["Merging"]["properties"][threshold] == {"$ref": "#/$defs/Threshold"}
    assert SCHEMA["$defs"]["Threshold"] == {"type": "number", "minimum": 0, "maximum": 1}


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == ">=1.28.0-0"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject, "appVersion differs from pyproject"
    assert (CHART / ".helmignore").is_file()


def test_one_resource_a_file_with_the_conventional_helpers() -> None:
    templates = CHART / "templates"
    names = {p.name for p in templates.iterdir() if p.is_file()}
    assert {
        "_helpers.tpl",
        "deployment.yaml",
        "configmap.yaml",
        "service.yaml",
        "serviceaccount.yaml",
        "pdb.yaml",
        "hpa.yaml",
        "scaledobject.yaml",
        "servicemonitor.yaml",
        "networkpolicy.yaml",
        "NOTES.txt",
    } <= names
    assert any((templates / "tests").glob("*.yaml"))
    helpers = (templates / "_helpers.tpl").read_text()
    for helper in (
        "fvc.name",
        "fvc.fullname",
        "fvc.labels",
        "fvc.selectorLabels",
        "fvc.image",
        "fvc.consumerGroup",
    ):
        assert f'define "{helper}"' in helpers
    for path in templates.rglob("*.yaml"):
        assert path.read_text().count("\nkind:") + path.read_text().startswith("kind:") <= 1, path


def test_ci_values_files_are_valid_yaml(tmp_path: Path) -> None:
    for path in (CHART / "ci").glob("*-values.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()) or {}, dict), path
