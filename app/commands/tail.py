"""``fvc tail``: follow the downstream topic and print each cluster event as it arrives.

The reading is :func:`app.downstream.tail.follow`; this module parses arguments, prints and turns
Ctrl-C or a closed pipe into a clean exit.
"""

from __future__ import annotations

import argparse
import os
import sys

import orjson

DESCRIPTION = """\
Follow the downstream topic (FVClusterUpdateRecords) and print each event.

By default only events that arrive from now on are shown, read with a one-off consumer
group that commits nothing, so tailing never moves any real consumer's offsets. With
--group G the reading joins group G and commits its progress (a later run resumes there;
--from-beginning then applies only while G has no committed offsets).

Readable lines (default):
  REG    camera_1:1571138183912_0  n=7  realized  from camera_1  @2019-10-15T11:16:23.912Z
  MERGE  camera_1:1571138183912_0 <- camera_2:1571138184012_1  n=12  @...
  DELETE camera_3:1571138190000_0 EXPIRED  @...
  END_OF_INPUT  @...
The time is the record's Kafka timestamp: the event time of the input that caused it.
With --json each record is printed as one JSON object per line, as on the wire (msgpack
records converted, "feature" as a list of numbers).
"""

EPILOG = """\
examples:
  fvc tail                                      # new events on FVC_OUTPUT_TOPIC, until Ctrl-C
  fvc tail --from-beginning --until-end-of-input
  fvc tail --json --max 100 | jq .type
  fvc tail --topic stage2.FVClusterUpdateRecord.json --from-beginning --timeout 10
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc tail`` to the ``fvc`` parser."""
    p = subparsers.add_parser(
        "tail",
        help="follow the downstream topic of cluster events, one readable line (or JSON) each",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--topic", help="topic to follow (default FVC_OUTPUT_TOPIC)")
    p.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record (default: new)"
    )
    p.add_argument("--group", help="consumer group (default: a one-off group that never commits)")
    p.add_argument("--json", action="store_true", help="print each record as one JSON object")
    p.add_argument("--max", type=int, metavar="N", help="stop after N events")
    p.add_argument(
        "--timeout", type=float, metavar="S", help="stop after S seconds without an event"
    )
    p.add_argument(
        "--until-end-of-input", action="store_true", help="stop after an END_OF_INPUT_RECORD"
    )
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka (default FVC_KAFKA_BOOTSTRAP)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Follow and print until a stop condition; Ctrl-C exits 130 without a traceback."""
    from app.errors import FvcError
    from app.kafka_client import quiet_client_logs
    from app.settings import Settings

    if (args.max is not None and args.max < 1) or (args.timeout is not None and args.timeout <= 0):
        raise FvcError("--max and --timeout must be positive")
    quiet_client_logs()
    settings = Settings.from_env(kafka_bootstrap=args.bootstrap)
    topic = args.topic or settings.output_topic
    try:
        _warn_if_missing(settings, topic)
        _print_all(settings, topic, args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `fvc tail | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print_all(settings: object, topic: str, args: argparse.Namespace) -> None:
    from app.downstream.tail import follow, format_event

    items = follow(
        settings, topic, from_beginning=args.from_beginning, group=args.group,
        idle_timeout=args.timeout, max_events=args.max, until_end=args.until_end_of_input,
    )
    for item in items:
        if item.event is None:
            where = f"partition {item.partition} offset {item.offset}"
            print(f"fvc tail: skipped a record at {where}: {item.error}", file=sys.stderr)
        elif args.json:
            print(orjson.dumps(item.event).decode(), flush=True)
        else:
            print(format_event(item.event, item.timestamp), flush=True)


def _warn_if_missing(settings: object, topic: str) -> None:
    """Fail fast on an unreachable broker, and say so when the topic does not exist (yet).

    Both would otherwise look like a quiet topic: the consumer waits silently forever.
    """
    from app.kafka_client import topic_names

    if topic not in topic_names(settings, timeout=10):
        print(f"fvc tail: topic {topic!r} does not exist yet; waiting for it", file=sys.stderr)
