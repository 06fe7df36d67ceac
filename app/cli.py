"""The ``fvc`` command: builds the argument parser from app.commands and dispatches.

Logic lives in the command modules and below them; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from app import __version__
from app.errors import FvcError
from app.threads import single_threaded_numpy_blas

# Each module under app.commands has register(subparsers) and sets a handler as ``func``.
COMMAND_MODULES = (
    "local", "config", "synth", "evaluate", "worker", "run", "produce", "tail", "clusters",
    "reid", "calibrate", "demo", "bench",
)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``fvc`` parser, one sub-parser per command module."""
    parser = argparse.ArgumentParser(
        prog="fvc",
        description=(
            "Feature-vector clustering: groups face/body feature vectors from many cameras "
            "into identity clusters, online (Kafka + Redis) or offline (a file of vectors)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fvc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"app.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run the command, turn fvc errors into one clear line."""
    args = build_parser().parse_args(argv)
    single_threaded_numpy_blas()
    try:
        return int(args.func(args) or 0)
    except FvcError as exc:
        print(f"fvc {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
