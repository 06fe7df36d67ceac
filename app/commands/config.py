"""``fvc config``: check clustering config files before they reach a worker.

``validate`` reports every problem of every file at once (so CI or an operator fixes a file in
one pass); ``show`` prints the canonical form a worker would run with, defaults filled in.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from app.config import ClusteringConfig, load_config
from app.errors import ConfigError
from schemas.problems import MISSING, Problem


def register(subparsers: Any) -> None:
    """Add ``fvc config validate`` and ``fvc config show``."""
    parser = subparsers.add_parser(
        "config",
        help="check and show clustering config files",
        description="Check clustering config files (UVAP-compatible JSON) against "
        "schemas/config.schema.json and the cross-field rules.",
    )
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = actions.add_parser(
        "validate",
        help="check config files; exit 1 if any is invalid",
        description="Check each FILE and report every problem as 'path: value — rule'. "
        "Exits 0 when all files are valid, 1 otherwise.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="config file(s) to check")
    validate.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per file (file, valid, problems) instead of text",
    )
    validate.set_defaults(func=validate_command)
    show = actions.add_parser(
        "show",
        help="print a config in canonical form (defaults filled in, aliases resolved)",
        description="Validate FILE and print the canonical JSON a worker runs with, e.g. to "
        "put in the Helm ConfigMap. Exits 1 if the file is invalid.",
    )
    show.add_argument("file", metavar="FILE", help="config file to show")
    show.set_defaults(func=show_command)


def validate_command(args: argparse.Namespace) -> int:
    """Check every file; print a verdict or its problems for each; 1 if any is invalid."""
    results = [_check(path) for path in args.files]
    for path, config, problems in results:
        if args.json:
            print(json.dumps(_as_json(path, config, problems), default=str, ensure_ascii=False))
        elif config is not None:
            print(f"{path}: valid ({_summary(config)})")
        else:
            print(f"{path}: invalid ({len(problems)} problem{'s' * (len(problems) != 1)})")
            for problem in problems:
                print(f"  {format_problem(problem)}")
    return 0 if all(config is not None for _, config, _ in results) else 1


def show_command(args: argparse.Namespace) -> int:
    """Print the canonical JSON of a valid file; problems to stderr and 1 otherwise."""
    path, config, problems = _check(args.file)
    if config is None:
        for problem in problems:
            print(f"{path}: {format_problem(problem)}", file=sys.stderr)
        return 1
    print(json.dumps(config.to_dict(), indent=2))
    return 0


def _check(path: str) -> tuple[str, ClusteringConfig | None, list[Problem]]:
    try:
        return path, load_config(path), []
    except ConfigError as exc:
        return path, None, list(exc.problems)


def _summary(config: ClusteringConfig) -> str:
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


def _as_json(path: str, config: ClusteringConfig | None, problems: list[Problem]) -> dict[str, Any]:
    """The machine-readable verdict for one file (a missing value is null)."""
    result: dict[str, Any] = {"file": path, "valid": config is not None}
    if config is not None:
        result |= {"streams": len(config.streams), "method": config.method}
    result["problems"] = [
        {"path": p, "value": None if v is MISSING else v, "rule": r} for p, v, r in problems
    ]
    return result
