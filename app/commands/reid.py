"""``fvc reid``: the re-identification service, matching faces against the realized clusters.

The service lives in ``app.downstream.reid``; this module parses arguments, sets up logging and runs
it. Run it without the ``fvc`` entry point as ``python -m app.commands.reid ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.errors import FvcError

DESCRIPTION = """\
Answer "who is this face?" against the realized clusters, live.

The service reads the downstream topic of cluster events (FVClusterUpdateRecords) from its
beginning, keeps the realized clusters in its own FAISS index (REG adds or replaces, MERGE
maps the merged ids to the survivor, DELETE removes; duplicates and replays change nothing),
then follows the topic. It needs no Redis and no consumer-group offsets: every start
rebuilds the same view. /ready is 200 once it has caught up.

HTTP (--port):
  POST /identify       {"vector": [...]} or {"vectors": [[...], ...]}, optional "k" and
                       "threshold"; JSON, or msgpack with Content-Type application/msgpack
                       ("feature" as float32 bytes or a list). Per query: the top-k
                       realized clusters (cluster_id, similarity, num_observations) and
                       "match": best similarity >= threshold.
  GET  /clusters/ID    where an id's members are now (following merges); 404 if deleted
  GET  /health /ready /metrics /stats /openapi.json

Streaming mode (--stream --config FILE): also consume the config's camera topics (same
record formats and field selectors as the workers) and write one match record per input
record to --output-topic, with the input's key and timestamp, the best cluster id and
similarity, the top-k candidates and "match". Unreadable records are counted
(fvc_reid_stream_bad_records_total{reason}) and skipped.

Settings come from FVC_* variables (FVC_KAFKA_BOOTSTRAP, FVC_OUTPUT_TOPIC, FVC_INDEX,
FVC_DEVICE, FVC_INPUT_FORMAT, FVC_OUTPUT_FORMAT, security); the flags override them.
"""

EPILOG = """\
examples:
  fvc reid                                          # the workers' FVC_OUTPUT_TOPIC, port 6070
  curl -s localhost:6070/ready
  curl -s localhost:6070/identify -H 'Content-Type: application/json' \\
       -d '{"vector": [0.12, -0.03, ...], "k": 3}'
  fvc reid --threshold 0.6 --k 10 --port 8080 --topic stage2.FVClusterUpdateRecord.json
  fvc reid --stream --config config/demo.json --output-topic fvc.reid-matches
  fvc tail --topic fvc.reid-matches --json          # the match records, as they come
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc reid``."""
    p = subparsers.add_parser(
        "reid", help="re-identification service: match vectors against the realized clusters",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--topic", help="cluster events to read (default FVC_OUTPUT_TOPIC)")
    p.add_argument("--port", type=int, default=6070, help="HTTP port (default 6070)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    p.add_argument("--threshold", type=float, default=0.5,
                   help="cosine similarity a best cluster needs to be a match (default 0.5)")
    p.add_argument("--k", type=int, default=5, help="clusters per query by default (default 5)")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka (default FVC_KAFKA_BOOTSTRAP)")
    p.add_argument("--index", dest="index_type", choices=("exact", "ivf", "ivfpq", "hnsw"),
                   help="FAISS index (default FVC_INDEX, exact)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), help="FAISS device (FVC_DEVICE)")
    s = p.add_argument_group("streaming mode")
    s.add_argument("--stream", action="store_true", help="also match the camera topics")
    s.add_argument("--config", help="clustering config naming the camera topics (FVC_CONFIG)")
    s.add_argument("--output-topic", default="fvc.reid-matches",
                   help="topic of the match records (default fvc.reid-matches)")
    s.add_argument("--group", help="consumer group of the matchers (default <FVC_APP_ID>-reid)")
    s.add_argument("--start-at", choices=("earliest", "latest"), default="earliest",
                   help="where a new group starts in the camera topics (default earliest)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Check the flags, build the service and serve until SIGTERM or Ctrl-C."""
    from app.downstream.reid.request import MAX_K
    from app.downstream.reid.service import ReidOptions, ReidService
    from app.logs import configure
    from app.settings import Settings

    if not 1 <= args.k <= MAX_K:
        raise FvcError(f"--k must be from 1 to {MAX_K}, not {args.k}")
    if not -1.0 <= args.threshold <= 1.0:
        raise FvcError(f"--threshold must be from -1 to 1, not {args.threshold}")
    if not 1 <= args.port <= 65535:
        raise FvcError(f"--port must be from 1 to 65535, not {args.port}")
    settings = Settings.from_env(
        kafka_bootstrap=args.bootstrap, index_type=args.index_type, device=args.device
    )
    config = args.config or settings.config_path
    if args.stream and not config:
        raise FvcError("--stream needs the camera topics: pass --config FILE or set FVC_CONFIG")
    configure(settings.log_level, settings.log_format)
    options = ReidOptions(
        topic=args.topic or settings.output_topic, host=args.host, port=args.port, k=args.k,
        threshold=args.threshold, stream=args.stream, config_path=config or "",
        output_topic=args.output_topic, group=args.group or f"{settings.app_id}-reid",
        start_at=args.start_at,
    )
    service = ReidService(settings, options)
    service.prepare()
    try:
        asyncio.run(service.run())
    except OSError as exc:  # most often: the port is taken
        raise FvcError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m app.commands.reid``: the same command without the ``fvc`` entry point."""
    from app.cli import main as fvc

    return fvc(["reid", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
