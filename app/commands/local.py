"""``fvc local up | down | status``: a local Kafka (KRaft) and Redis for development, no Docker.

The work is done by :mod:`app.dev.local.stack`; this module parses arguments, reads the ``FVC_*``
environment and prints progress and status.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from app.dev.local.jvm import kafka_version
from app.dev.local.stack import DEFAULT_PORTS, ServiceStatus, StackConfig, saved_ports
from app.dev.local.stack import down as stack_down
from app.dev.local.stack import status as stack_status
from app.dev.local.stack import up as stack_up

DESCRIPTION = """\
Run the services fvc needs on this machine, without Docker: a real single-node
Apache Kafka {version} in KRaft mode (one process is broker and controller) and
a Redis server, both listening on 127.0.0.1 only.

Kafka's jars come from Maven Central through Maven (cached in ~/.m2) and run on
the machine's Java 17+; redis-server comes from PATH (installed with apt-get
when missing and running as root). Config, data, logs and pid files live in
one state folder: --dir, else $FVC_LOCAL_DIR, else .fvc/local here.

When FVC_KAFKA_BOOTSTRAP or FVC_REDIS_URL name a service that answers, that
one is used (status says "external") and ours is not started.
"""

EPILOG = """\
examples:
  fvc local up                      # start both, wait until they answer
  fvc local status                  # one line per service; --json for scripts
  fvc local up --kafka-port 19092 --controller-port 19093 --redis-port 16379 --dir /tmp/s2
  fvc local down                    # stop what `up` started
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc local`` and its actions to the ``fvc`` parser."""
    parser = subparsers.add_parser(
        "local",
        help="start/stop a local Kafka (KRaft) and Redis for development (no Docker)",
        description=DESCRIPTION.format(version=kafka_version()),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add_up(actions)
    _add_down(actions)
    _add_status(actions)


def _add_up(actions: argparse._SubParsersAction) -> None:
    """``fvc local up``."""
    up = actions.add_parser(
        "up",
        help="start Kafka and Redis (what already runs is left alone) and wait until they answer",
        description=(
            "Start Kafka and Redis and wait until both answer (Kafka: a metadata request, "
            "Redis: PING). Safe to repeat. The first run downloads the Kafka jars with Maven "
            "and formats Kafka's storage; later runs start in seconds."
        ),
    )
    _add_dir(up)
    _add_port(up, "--kafka-port", "kafka_port", "Kafka client (PLAINTEXT) port")
    _add_port(up, "--controller-port", "controller_port", "Kafka KRaft controller port")
    _add_port(up, "--redis-port", "redis_port", "Redis port")
    up.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="how long to wait for each service to answer before giving up (default 90)",
    )
    up.add_argument(
        "--redis-persist",
        action="store_true",
        help=(
            "give Redis an append-only file synced every second (appendonly yes, appendfsync "
            "everysec), as production should have; by default it keeps nothing on disk"
        ),
    )
    up.set_defaults(func=run_up)


def _add_down(actions: argparse._SubParsersAction) -> None:
    """``fvc local down``."""
    down = actions.add_parser(
        "down",
        help="stop the Kafka and Redis that `up` started (external services are left alone)",
        description=(
            "Stop the servers that `fvc local up` started from this state folder, found by "
            "their pid files: SIGTERM, then SIGKILL after the grace period. Data and logs stay "
            "in the state folder; delete it to start from scratch."
        ),
    )
    _add_dir(down)
    down.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="grace period after SIGTERM before SIGKILL (default 30 for Kafka, 10 for Redis)",
    )
    down.set_defaults(func=run_down)


def _add_status(actions: argparse._SubParsersAction) -> None:
    """``fvc local status``."""
    status = actions.add_parser(
        "status",
        help="say what runs where: one line per service (running/stopped/external)",
        description=(
            "One line per service: state (running, starting, stopped or external), address, "
            "pid and log file. Exits 0 when every service answers, 3 when one does not."
        ),
    )
    _add_dir(status)
    status.add_argument(
        "--json", action="store_true", help="print a JSON object keyed by service instead"
    )
    status.set_defaults(func=run_status)


def _add_dir(parser: argparse.ArgumentParser) -> None:
    """The state-folder flag every action shares."""
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="state folder (config, data, logs, pid files); "
        "default $FVC_LOCAL_DIR, else .fvc/local in the current directory",
    )


def _add_port(parser: argparse.ArgumentParser, flag: str, dest: str, what: str) -> None:
    """A port flag; unset means the port the last `up` used, else the default."""
    parser.add_argument(
        flag,
        dest=dest,
        type=_port,
        default=None,
        metavar="PORT",
        help=f"{what} (default: as last `up` in this folder, else {DEFAULT_PORTS[dest]})",
    )


def _port(text: str) -> int:
    """Parse a TCP port number for argparse."""
    port = int(text)
    if not 0 < port < 65536:
        message = f"{port} is not a TCP port (1-65535)"
        raise argparse.ArgumentTypeError(message)
    return port


def config_from(args: argparse.Namespace) -> StackConfig:
    """Stack settings from flags, then the ports last used in the folder, then defaults."""
    state_dir = Path(args.dir or os.environ.get("FVC_LOCAL_DIR") or ".fvc/local").resolve()
    ports = {**DEFAULT_PORTS, **saved_ports(state_dir)}
    for key in DEFAULT_PORTS:
        if getattr(args, key, None) is not None:
            ports[key] = getattr(args, key)
    return StackConfig(
        state_dir=state_dir,
        timeout=getattr(args, "timeout", None) or 90.0,
        redis_persist=getattr(args, "redis_persist", False),
        external_kafka=os.environ.get("FVC_KAFKA_BOOTSTRAP") or None,
        external_redis=os.environ.get("FVC_REDIS_URL") or None,
        **ports,
    )


def _progress(line: str) -> None:
    """One progress line, shown at once."""
    print(f"  {line}", flush=True)


def run_up(args: argparse.Namespace) -> int:
    """Handler of ``fvc local up``."""
    config = config_from(args)
    print(f"fvc local up: Kafka {kafka_version()} + Redis, state in {config.state_dir}")
    statuses = stack_up(config, report=_progress)
    _print_table(statuses)
    return 0


def run_down(args: argparse.Namespace) -> int:
    """Handler of ``fvc local down``."""
    config = config_from(args)
    print(f"fvc local down: state in {config.state_dir}")
    stack_down(config, report=_progress, grace=args.timeout)
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Handler of ``fvc local status``; exit 3 when a service does not answer."""
    statuses = stack_status(config_from(args))
    if args.json:
        print(json.dumps({s.name: s.as_dict() for s in statuses}, indent=2))
    else:
        _print_table(statuses)
    return 0 if all(s.state in ("running", "external") for s in statuses) else 3


def _print_table(statuses: list[ServiceStatus]) -> None:
    """One aligned line per service."""
    for s in statuses:
        pid = f"pid {s.pid}" if s.pid else "-"
        log = f"log {s.log}" if s.log else ""
        print(f"{s.name:<6} {s.state:<9} {s.address:<26} {pid:<10} {log}".rstrip())
