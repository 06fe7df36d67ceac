"""``fvc demo``: the whole pipeline on this machine, from a synthetic scene to scored events."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Run the whole pipeline locally: start Kafka and Redis if they are not running, start a
worker, send a synthetic four-camera scene with known identities, wait for every
observation to be clustered, print the realized clusters and the live run's B-cubed
quality against the ground truth, then stop everything this command started.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc demo``."""
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline locally on a synthetic scene and score it",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default="config/demo.json", help="clustering config")
    parser.add_argument("--n", type=int, default=6000, help="vectors to send (default 6000)")
    parser.add_argument("--seed", type=int, default=7, help="scene seed")
    parser.add_argument("--workdir", default=".fvc/demo", help="logs and data of the run")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Bring the stack up if needed, run the demo, bring down what we started."""
    from app.dev.demo import Demo
    from app.dev.localrun import local_stack

    with local_stack():
        Demo(Path(args.workdir), Path(args.config), args.n, args.seed).execute()
    return 0
