"""Turn JSON Schema errors into problems an operator can act on: (JSON path, value, rule).

jsonschema's own messages repeat the whole offending object and speak of "subschemas"; an
operator fixing a config file needs the field, the value there and the rule in a few words.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jsonschema import ValidationError

from schemas import validator

Problem = tuple[str, object, str]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_WORDS = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
_BOUNDS = {
    "minimum": ">=",
    "maximum": "<=",
    "exclusiveMinimum": ">",
    "exclusiveMaximum": "<",
}


class _Missing:
    """Stands for the value of a field that is absent, so it prints as such."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def json_path(parts: Iterable[str | int]) -> str:
    """``$.a[1].b`` from ``("a", 1, "b")``; odd keys are quoted: ``$['a b']``."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}"
        else:
            text += f"[{part!r}]"
    return text


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in document order: by path, list indices compared as numbers."""

    def key(problem: Problem) -> str:
        return re.sub(r"\[(\d+)\]", lambda m: f"[{int(m[1]):09d}]", problem[0])

    return sorted(problems, key=key)


def non_finite_problems(value: object, parts: tuple[str | int, ...] = ()) -> list[Problem]:
    """NaN or infinite numbers anywhere: they pass every JSON Schema bound unnoticed."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(json_path(parts), value, "must be a finite number")]
    if isinstance(value, dict):
        items: Iterable[tuple[str | int, object]] = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    return [p for key, item in items for p in non_finite_problems(item, (*parts, key))]


def read_json_file(path: str | Path) -> tuple[object, list[Problem]]:
    """The parsed JSON in file ``path``, or the problem that stops it being read.

    NaN and Infinity are refused: they are not JSON and would pass every numeric bound.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [("$", str(path), "cannot be read: file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [("$", str(path), f"cannot be read: {exc}")]
    try:
        return json.loads(text, parse_constant=_refuse_constant), []
    except json.JSONDecodeError as exc:
        return None, [json_syntax_problem(text, exc.pos, exc.msg)]
    except _NotJsonConstant as exc:
        return None, [json_syntax_problem(text, text.find(exc.name), str(exc))]


class _NotJsonConstant(ValueError):
    def __init__(self, name: str) -> None:
        self.name = name
        message = f"{name} is not allowed"
        super().__init__(message)


def _refuse_constant(name: str) -> float:
    raise _NotJsonConstant(name)


def json_syntax_problem(text: str, pos: int, what: str) -> Problem:
    """A JSON syntax error as a problem at ``$`` naming line and column, the line as value."""
    pos = max(pos, 0)
    line_no = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    lines = text.splitlines()
    line = lines[line_no - 1].strip()[:80] if line_no <= len(lines) else ""
    return ("$", line, f"is not valid JSON: {what} at line {line_no}, column {column}")


def schema_problems(name: str, instance: object) -> list[Problem]:
    """Every problem schema ``name`` finds in ``instance``, ordered by path, without repeats."""
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    found: list[Problem] = []
    for error in errors:
        for problem in _translate(error):
            if problem not in found:
                found.append(problem)
    return found


def _translate(error: ValidationError) -> list[Problem]:
    """One jsonschema error as one or more problems."""
    parts = list(error.absolute_path)
    path = json_path(parts)
    kind, instance = error.validator, error.instance
    expected: Any = error.validator_value
    if kind == "required":
        return [
            (json_path([*parts, key]), MISSING, "is required")
            for key in expected
            if isinstance(instance, dict) and key not in instance
        ]
    if kind in ("additionalProperties", "unevaluatedProperties"):
        return _unknown_fields(parts, instance, error.schema)
    if kind in ("anyOf", "oneOf") and _required_choices(expected):
        return [_choice_problem(path, instance, _required_choices(expected), kind)]
    if kind == "not" and isinstance(expected, dict) and "required" in expected:
        *others, last = expected["required"]
        value = instance.get(last, MISSING) if isinstance(instance, dict) else MISSING
        rule = f"must not be given with {', '.join(others)} (they are aliases)"
        return [(json_path([*parts, last]), value, rule)]
    return [(path, instance, _rule(str(kind), expected, error.message))]


def _rule(kind: str, expected: Any, message: str) -> str:
    """The rule broken, in words, for the simple keywords; jsonschema's message otherwise."""
    if kind == "type":
        kinds = [expected] if isinstance(expected, str) else list(expected)
        return "must be " + " or ".join(_TYPE_WORDS.get(k, k) for k in kinds)
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {expected}"
    if kind == "enum":
        return "is not one of [" + ", ".join(str(v) for v in expected) + "]"
    if kind == "const":
        return f"must be {expected!r}"
    if kind == "minLength":
        return "must not be empty" if expected == 1 else f"must have at least {expected} characters"
    if kind == "minItems":
        return f"must have at least {expected} item" + ("" if expected == 1 else "s")
    if kind == "pattern":
        return f"must match {expected}"
    return message


def _unknown_fields(parts: list[str | int], instance: object, schema: Any) -> list[Problem]:
    """One problem per unexpected key, suggesting the known key it most resembles."""
    if not isinstance(instance, dict):
        return []
    known = list(schema.get("properties", {})) if isinstance(schema, dict) else []
    problems: list[Problem] = []
    for key in instance:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        rule = f"unknown field (did you mean {close[0]!r}?)" if close else "unknown field"
        problems.append((json_path([*parts, str(key)]), instance[key], rule))
    return problems


def _required_choices(branches: Any) -> list[str]:
    """The field names when every branch is just ``{"required": [name]}``, else []."""
    if not isinstance(branches, Sequence) or isinstance(branches, str):
        return []
    names: list[str] = []
    for branch in branches:
        if not isinstance(branch, dict) or len(branch.get("required", ())) != 1:
            return []
        names.append(branch["required"][0])
    return names


def _choice_problem(path: str, instance: object, names: list[str], kind: str) -> Problem:
    """A missing or doubled choice between alternative fields, e.g. the two selector paths."""
    given = [n for n in names if isinstance(instance, dict) and n in instance]
    choices = ", ".join(names)
    if len(given) > 1:
        return (path, instance, f"must give only one of {choices}")
    count = "exactly one" if kind == "oneOf" else "one"
    return (path, instance, f"needs {count} of {choices}")
