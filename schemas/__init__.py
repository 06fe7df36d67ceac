"""The wire contract: JSON Schemas for every record fvc reads or writes, and for its config.

The files ship as package data and are read through ``importlib.resources`` so an installed
wheel and a source checkout behave the same. They reference each other by relative ``$ref``
(``feature_vector.schema.json``), resolved through one shared registry: nothing is fetched.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_NAMES = (
    "feature_vector",
    "feature_vector_record",
    "fv_cluster",
    "fv_cluster_update_record",
    "config",
)
_SUFFIX = ".schema.json"

__all__ = ["SCHEMA_NAMES", "load_schema", "registry", "validator"]


def _file_name(name: str) -> str:
    """Accept ``config``, ``config.schema.json`` or ``config.json`` for the same schema."""
    stem = name.removesuffix(_SUFFIX).removesuffix(".json")
    if stem not in SCHEMA_NAMES:
        message = f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}"
        raise KeyError(message)
    return stem + _SUFFIX


def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema ``name`` (cached and shared: do not modify it)."""
    return _load(_file_name(name))


@cache
def _load(file_name: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(file_name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def registry() -> Registry:
    """All schemas by ``$id``, so relative ``$ref`` between the files resolve offline."""
    resources_ = [
        (schema["$id"], Resource.from_contents(schema))
        for schema in (load_schema(name) for name in SCHEMA_NAMES)
    ]
    return Registry().with_resources(resources_)


def validator(name: str) -> Draft202012Validator:
    """A ready validator for schema ``name``; ``iter_errors`` lists every problem at once."""
    return _validator(_file_name(name))


@cache
def _validator(file_name: str) -> Draft202012Validator:
    return Draft202012Validator(_load(file_name), registry=registry())
