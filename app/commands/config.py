"""``fvc config``: check clustering config files before they reach a worker.

``validate`` reports every problem of every file at once (so CI or an operator fixes a file in
one pass), and how a file not in the canonical form was read (UVAP's microservice form, proto3
JSON...); ``show`` prints the canonical form a worker would run with, defaults filled in.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from app.config import ConfigReading, read_config
from schemas.problems import MISSING, Problem


def register(subparsers: Any) -> None:
    """Add ``fvc config validate`` and ``fvc config show``."""
    parser = subparsers.add_parser(
        "config",
        help="check and show clustering config files",
        description="Check clustering config files (UVAP-compatible JSON) against "
        "schemas/config.schema.json and the cross-field rules. Every form UVAP accepts is "
        "read: the FVClusteringConfigRecord, the FVC microservice form (sources, target, "
        "config_data) and proto3 JSON (lowerCamelCase names, enum numbers, numbers as strings).",
    )
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = actions.add_parser(
        "validate",
        help="check config files; exit 1 if any is invalid",
        description="Check each FILE and report every problem as 'path: value — rule', and "
        "how a file not in the canonical form was read ('read as: microservice form, ...'). "
        "Exits 0 when all files are valid, 1 otherwise.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="config file(s) to check")
    validate.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per file (file, valid, read_as, notes, problems) instead "
        "of text",
    )
    validate.set_defaults(func=validate_command)
    show = actions.add_parser(
        "show",
        help="print a config in canonical form (defaults filled in, aliases resolved)",
        description="Validate FILE (in any accepted form) and print the canonical JSON a "
        "worker runs with, e.g. to put in the Helm ConfigMap; how it was read goes to stderr. "
        "Exits 1 if the file is invalid.",
    )
    show.add_argument("file", metavar="FILE", help="config file to show")
    show.set_defaults(func=show_command)


def validate_command(args: argparse.Namespace) -> int:
    """Check every file; print a verdict or its problems for each; 1 if any is invalid."""
    results = [(path, read_config(path)) for path in args.files]
    for path, reading in results:
        if args.json:
            print(json.dumps(_as_json(path, reading), default=str, ensure_ascii=False))
            continue
        if reading.config is not None:
            print(f"{path}: valid ({_summary(reading)})")
        else:
            count = len(reading.problems)
            print(f"{path}: invalid ({count} problem{'s' * (count != 1)})")
        if reading.form or reading.notes:
            print(f"  read as: {reading.read_as}")
        if reading.config is not None:
            for note in reading.notes:
                print(f"    {note}")
        for problem in reading.problems:
            print(f"  {format_problem(problem)}")
    return 0 if all(reading.config is not None for _, reading in results) else 1


def show_command(args: argparse.Namespace) -> int:
    """Print the canonical JSON of a valid file; problems to stderr and 1 otherwise."""
    reading = read_config(args.file)
    if reading.config is None:
        for problem in reading.problems:
            print(f"{args.file}: {format_problem(problem)}", file=sys.stderr)
        return 1
    if reading.form:
        print(f"{args.file}: read as: {reading.read_as}", file=sys.stderr)
    print(json.dumps(reading.config.to_dict(), indent=2))
    return 0


def _summary(reading: ConfigReading) -> str:
    config = reading.config
    if config is None:
        return "invalid"
    count = len(config.streams)
    return f"{count} stream{'s' * (count != 1)}, method {config.method}"


def format_problem(problem: Problem) -> str:
    """``path: value — rule``, the value as JSON (omitted when the field is missing)."""
    path, value, rule = problem
    if value is MISSING:
        return f"{path} — {rule}"
    shown = f'"{value}"' if isinstance(value, str) else json.dumps(value, default=str)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{path}: {shown} — {rule}"


def _as_json(path: str, reading: ConfigReading) -> dict[str, Any]:
    """The machine-readable verdict for one file (a missing value is null)."""
    config = reading.config
    result: dict[str, Any] = {"file": path, "valid": config is not None}
    if config is not None:
        result |= {"streams": len(config.streams), "method": config.method}
    result |= {"read_as": list(reading.form), "notes": list(reading.notes)}
    result["problems"] = [
        {"path": p, "value": None if v is MISSING else v, "rule": r} for p, v, r in reading.problems
    ]
    return result
