"""``fvc run``: batch mode — process the input topics to their end, emit END_OF_INPUT, exit."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from app.commands.worker import add_service_flags, settings_from

DESCRIPTION = """\
Process the camera topics of the config from the beginning (or from --since) up to
their end as seen at start, publish the resulting cluster events, finish with an
END_OF_INPUT_RECORD on the downstream topic and exit 0.

State goes to Redis as for a worker (offsets included), so running the same batch
twice changes nothing the second time. Settings come from FVC_* variables.
"""

EPILOG = """\
examples:
  fvc run --config config/demo.json
  fvc run --config config/demo.json --since 1700000000000 --namespace backfill-1
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc run``."""
    parser = subparsers.add_parser(
        "run", help="process topics in batch mode to their end, emit END_OF_INPUT, stop",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_service_flags(parser)
    parser.add_argument("--since", type=int, metavar="MS",
                        help="start at this event time (ms since epoch) instead of the beginning")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Run the batch and print its report."""
    from tqdm import tqdm

    from app.worker.run import run_batch
    from app.worker.runtime import Runtime

    settings, config_path = settings_from(args)
    logging.basicConfig(level=logging.WARNING)
    runtime = Runtime(settings, config_path, batch=True)
    with tqdm(unit="rec", desc="processing", disable=not sys.stderr.isatty()) as bar:
        report = asyncio.run(run_batch(runtime, args.since, bar.update))
    print(
        f"processed {report.records} records ({report.dead_letters} dead letters), "
        f"{report.clusters} clusters, {report.events} records published "
        f"to {runtime.settings.output_topic} ending with END_OF_INPUT_RECORD"
    )
    return 0
