"""``fvc worker``: run one stream-processor worker (a Faust app) with a config file."""

from __future__ import annotations

import argparse
import asyncio
import logging

from app.errors import FvcError

DESCRIPTION = """\
Run a worker: consume every camera topic of the config, cluster the feature vectors
into identities with all state in Redis, and publish cluster events downstream.

Start as many workers as you like with the same FVC_APP_ID: they form one consumer
group, share the partitions, and keep their indexes current from Redis. Bad records
go to the dead-letter topic. HTTP on the web port: /health, /ready, /metrics,
/stats, POST /reload (re-read the config file).

Settings come from FVC_* variables (see README); the flags below override them.
"""

EPILOG = """\
examples:
  fvc local up && fvc worker --config config/demo.json
  FVC_KAFKA_BOOTSTRAP=kafka:9092 FVC_REDIS_URL=redis://redis:6379/0 fvc worker --config cfg.json
  curl -X POST localhost:6066/reload
"""


log = logging.getLogger(__name__)


def add_service_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``worker`` and ``run`` that override ``FVC_*`` settings."""
    parser.add_argument("--config", required=False, help="clustering config (JSON); FVC_CONFIG")
    parser.add_argument("--bootstrap", dest="kafka_bootstrap", help="Kafka bootstrap servers")
    parser.add_argument("--redis", dest="redis_url", help="Redis URL (redis:// or rediss://)")
    parser.add_argument("--namespace", help="Redis key prefix separating deployments")
    parser.add_argument("--app-id", dest="app_id", help="consumer group / app id")
    parser.add_argument("--output-topic", dest="output_topic", help="downstream event topic")
    parser.add_argument("--index", dest="index_type", choices=("exact", "ivf", "ivfpq", "hnsw"))
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), help="FAISS device")
    parser.add_argument("--batch-size", dest="batch_size", type=int, help="records per batch")


def settings_from(args: argparse.Namespace):  # noqa: ANN201 - Settings, imported lazily
    """Settings from the environment with the flags given on top."""
    from app.settings import Settings

    names = ("kafka_bootstrap", "redis_url", "namespace", "app_id", "output_topic",
             "index_type", "device", "batch_size", "web_port")
    overrides = {name: getattr(args, name, None) for name in names}
    settings = Settings.from_env(**overrides)
    config = args.config or settings.config_path
    if not config:
        message = "no config: pass --config FILE or set FVC_CONFIG"
        raise FvcError(message)
    return settings, config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc worker``."""
    parser = subparsers.add_parser(
        "worker", help="run a stream-processor worker (Faust) with a config file",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_service_flags(parser)
    parser.add_argument("--web-port", dest="web_port", type=int, help="HTTP port (FVC_WEB_PORT)")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Prepare topics and state, then hand the loop to Faust's worker."""
    import faust

    from agents import watchdog
    from agents.app import create_app, wait_for_subscriptions
    from app.index.faiss_lib import faiss
    from app.logs import configure
    from app.worker.runtime import Runtime

    settings, config_path = settings_from(args)
    configure(settings.log_level, settings.log_format)
    log.info("starting worker with %r", settings)
    runtime = Runtime(settings, config_path)
    runtime.create_topics()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(runtime.start(recover=True))  # all cores build the index
    # Then FVC_SEARCH_THREADS (1 by default): OpenMP threads spin while they wait, which
    # starves the broker, Redis and the event loop on a shared machine.
    faiss.omp_set_num_threads(settings.search_threads)
    wait_for_subscriptions(runtime)  # before Faust or bulk ingest subscribes
    app = create_app(runtime)
    worker = faust.Worker(app, loglevel=settings.log_level, loop=loop, override_logging=False)
    watchdog.watch(app)
    worker.execute_from_commandline()
    return 0
