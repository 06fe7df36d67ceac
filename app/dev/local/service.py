"""What Kafka and Redis have in common as local services: pid file, ports, start, wait, stop.

The stack drives every service through this one shape, so ``up`` can check all ports before
starting anything and ``down`` can stop whatever ``up`` started without knowing what it is.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from app.dev.local import procs
from app.errors import LocalStackError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # local services never listen beyond the loopback interface

Report = Callable[[str], None]  # takes one short progress line


class LocalService(ABC):
    """One server process that ``fvc local`` starts, watches and stops, kept under ``home``."""

    name: str
    keyword: str  # in the server's command line, even after it renames its process
    port_keys: tuple[str, ...]  # the StackConfig fields that hold ``ports``, in order
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL

    def __init__(self, home: Path) -> None:
        """``home`` is the service's own folder: an absolute path, also its working directory."""
        self.home = home

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients connect (bootstrap servers or URL)."""

    @property
    @abstractmethod
    def ports(self) -> tuple[int, ...]:
        """Every port the server listens on; all must be free before it starts."""

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """The server's own log, shown by ``status``."""

    @property
    def output_path(self) -> Path:
        """Where the process's stdout and stderr go (JVM crashes, early errors)."""
        return self.log_path

    @property
    def pid_path(self) -> Path:
        """The pid file ``up`` writes and ``down`` reads."""
        return self.home / f"{self.name}.pid"

    @abstractmethod
    def prepare(self, report: Report) -> None:
        """Everything that can fail before the process starts: binaries, config, storage."""

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground (``prepare`` has run)."""

    @abstractmethod
    def probe(self, timeout: float) -> bool:
        """Whether the server answers a real request (Kafka metadata, Redis PING)."""

    def pid(self) -> int | None:
        """The pid of our running server, or None when it is not running."""
        pid = procs.read_pid(self.pid_path)
        return pid if procs.alive(pid, self.keyword, self.home) else None

    def check_ports(self) -> None:
        """Fail with one clear line when another program holds one of our ports."""
        for port in self.ports:
            if not procs.port_free(HOST, port):
                message = (
                    f"port {port} on {HOST} is taken by another program, so {self.name} cannot "
                    f"start there; stop that program or pick another port (see fvc local up -h)"
                )
                raise LocalStackError(message)

    def launch(self) -> int:
        """Start the server detached and record its pid."""
        self.home.mkdir(parents=True, exist_ok=True)
        pid = procs.spawn(self.command(), self.output_path, cwd=self.home)
        self.pid_path.write_text(f"{pid}\n")
        log.info("%s started, pid %d", self.name, pid)
        return pid

    def wait_ready(self, timeout: float) -> None:
        """Block until the server answers; fail clearly if it exits or time runs out."""
        pid = procs.read_pid(self.pid_path)

        def settled() -> bool:
            return not procs.alive(pid, self.keyword, self.home) or self.probe(min(5.0, timeout))

        answered = procs.wait_until(settled, timeout, every=0.5)
        if not procs.alive(pid, self.keyword, self.home):
            message = f"{self.name} exited while starting: {self._reason()} (log: {self.log_path})"
            raise LocalStackError(message)
        if not answered:
            message = (
                f"{self.name} (pid {pid}) did not answer on {self.address} within {timeout:.0f}s;"
                f" see {self.log_path} or retry with a longer --timeout"
            )
            raise LocalStackError(message)

    def stop(self, grace: float | None = None) -> int | None:
        """Stop our server if it runs and drop the pid file; the pid stopped, if any."""
        pid = self.pid()
        if pid is not None:
            procs.stop(pid, self.keyword, self.home, self.grace if grace is None else grace)
        self.pid_path.unlink(missing_ok=True)
        return pid

    def _reason(self) -> str:
        """The most telling line of what the process wrote before it died."""
        for path in dict.fromkeys((self.output_path, self.log_path)):
            if path.is_file() and path.stat().st_size:
                return procs.last_error_line(path)
        return "it wrote no output"
