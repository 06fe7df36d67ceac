"""The local development stack as a whole: Kafka and Redis brought up, down and reported together.

``up`` is safe to repeat: what already runs (ours, or an external service named by
``FVC_KAFKA_BOOTSTRAP`` / ``FVC_REDIS_URL`` that answers) is left alone, and every port is
checked before anything starts, so a clash fails fast with one line. The ports ``up`` used are
recorded in the state folder so that ``status`` and ``down`` find the stack without flags.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from app.dev.local.kafka import KafkaService, kafka_answers
from app.dev.local.redis import RedisService, redis_answers
from app.dev.local.service import LocalService, Report
from app.errors import LocalStackError

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"kafka_port": 9092, "controller_port": 9093, "redis_port": 6379}
PORTS_FILE = "ports.json"


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and listens; ``external_*`` are addresses to prefer."""

    state_dir: Path
    kafka_port: int = DEFAULT_PORTS["kafka_port"]
    controller_port: int = DEFAULT_PORTS["controller_port"]
    redis_port: int = DEFAULT_PORTS["redis_port"]
    timeout: float = 90.0
    redis_persist: bool = False
    external_kafka: str | None = None
    external_redis: str | None = None


@dataclass(frozen=True)
class ServiceStatus:
    """One line of ``fvc local status``."""

    name: str
    state: str  # running | starting | stopped | external
    address: str
    pid: int | None = None
    log: str | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def saved_ports(state_dir: Path) -> dict[str, int]:
    """The ports the last ``up`` in ``state_dir`` used (empty when it never ran)."""
    try:
        saved = json.loads((state_dir / PORTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {key: int(saved[key]) for key in DEFAULT_PORTS if key in saved}


def services(config: StackConfig) -> list[LocalService]:
    """The stack's services, each with its own folder under the state folder."""
    root = config.state_dir.resolve()
    return [
        KafkaService(root / "kafka", config.kafka_port, config.controller_port),
        RedisService(root / "redis", config.redis_port, config.redis_persist),
    ]


def up(config: StackConfig, report: Report = log.info) -> list[ServiceStatus]:
    """Start what is not already running, then wait until every service answers."""
    with _locked(config.state_dir):
        return _up(config, report)


def _up(config: StackConfig, report: Report) -> list[ServiceStatus]:
    """``up`` under the state folder's lock."""
    started = time.monotonic()
    to_start, to_wait = _plan(config, report)
    _check_distinct([port for service in to_start for port in service.ports])
    for service in to_start:
        service.check_ports()
    for service in to_start:
        service.prepare(report)
    if to_start:
        _save_ports(config)
    try:
        for service in to_start:
            pid = service.launch()
            report(f"{service.name}: started (pid {pid}), log {service.log_path}")
        for service in to_wait + to_start:
            _wait(service, config.timeout, report)
    except LocalStackError:
        _roll_back(to_start, report)
        raise
    report(f"stack ready in {time.monotonic() - started:.1f}s")
    return status(config)


def _roll_back(launched: list[LocalService], report: Report) -> None:
    """A failed ``up`` stops what it started itself, so it leaves things as it found them."""
    for service in launched:
        pid = service.stop()
        if pid is not None:
            report(f"{service.name}: stopped again (pid {pid}), as the stack did not come up")


def down(config: StackConfig, report: Report = log.info, grace: float | None = None) -> list[str]:
    """Stop what ``up`` started from this state folder (pid files); names of those stopped.

    ``grace`` is the time between SIGTERM and SIGKILL (None: each service's own default).
    """
    with _locked(config.state_dir):
        return _down(config, report, grace)


def _down(config: StackConfig, report: Report, grace: float | None) -> list[str]:
    """``down`` under the state folder's lock."""
    stopped = []
    for service in services(config):
        pid = service.pid()
        if pid is None:
            service.pid_path.unlink(missing_ok=True)  # a stale pid file from a crash
            report(f"{service.name}: not running")
            continue
        report(f"{service.name}: stopping pid {pid}")
        service.stop(grace)
        stopped.append(service.name)
        report(f"{service.name}: stopped")
    return stopped


def status(config: StackConfig) -> list[ServiceStatus]:
    """What runs where: ours (running/starting), someone else's (external), or nothing."""
    return [_status_of(service, config) for service in services(config)]


def _status_of(service: LocalService, config: StackConfig) -> ServiceStatus:
    """One service's status; an external address counts only when it answers."""
    pid = service.pid()
    log_path = str(service.log_path) if service.log_path.exists() else None
    if pid is not None:
        state = "running" if service.probe(2.0) else "starting"
        return ServiceStatus(service.name, state, service.address, pid, log_path)
    external = _external(service, config)
    if external and _answers(service, external, 2.0):
        return ServiceStatus(service.name, "external", external)
    return ServiceStatus(service.name, "stopped", service.address, None, log_path)


def _plan(config: StackConfig, report: Report) -> tuple[list[LocalService], list[LocalService]]:
    """Split the services into those to start and ours already running (to wait for)."""
    to_start, to_wait = [], []
    recorded = saved_ports(config.state_dir)
    for service in services(config):
        pid = service.pid()
        external = _external(service, config)
        if pid is not None:
            _refuse_port_change(service, recorded)
            report(f"{service.name}: already running on {service.address} (pid {pid})")
            to_wait.append(service)
        elif external and _answers(service, external, 5.0):
            report(f"{service.name}: using external {external}")
        else:
            if external:
                report(f"{service.name}: {external} does not answer; starting our own")
            to_start.append(service)
    return to_start, to_wait


def _refuse_port_change(service: LocalService, recorded: dict[str, int]) -> None:
    """A running service keeps its ports: moving it needs ``down`` first."""
    for key, port in zip(service.port_keys, service.ports, strict=True):
        if key in recorded and recorded[key] != port:
            message = (
                f"{service.name} already runs on port {recorded[key]} from this state folder; "
                f"run `fvc local down` first to move it to port {port}"
            )
            raise LocalStackError(message)


def _check_distinct(ports: list[int]) -> None:
    """Two of our servers cannot share a port; the port check alone would not notice."""
    clashes = sorted({port for port in ports if ports.count(port) > 1})
    if clashes:
        message = f"port {clashes[0]} is given to two services; give each its own port"
        raise LocalStackError(message)


def _wait(service: LocalService, timeout: float, report: Report) -> None:
    """Wait for one service to answer, with a line before and after."""
    report(f"{service.name}: waiting for {service.address} to answer (up to {timeout:.0f}s)")
    began = time.monotonic()
    service.wait_ready(timeout)
    report(f"{service.name}: ready after {time.monotonic() - began:.1f}s")


def _external(service: LocalService, config: StackConfig) -> str | None:
    """The external address configured for this service, if any."""
    return config.external_kafka if service.name == "kafka" else config.external_redis


def _answers(service: LocalService, address: str, timeout: float) -> bool:
    """Whether the external ``address`` answers the service's real request."""
    if service.name == "kafka":
        return kafka_answers(address, timeout)
    return redis_answers(address, timeout)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Hold the state folder's lock: two ``up`` at once would race for the same ports."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save_ports(config: StackConfig) -> None:
    """Record the ports for ``status`` and ``down`` run without flags."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    ports = {key: getattr(config, key) for key in DEFAULT_PORTS}
    (config.state_dir / PORTS_FILE).write_text(json.dumps(ports, indent=2) + "\n")
