"""One isolated run of a worker on this machine: its own topics, group and Redis namespace.

Shared by ``fvc demo`` and ``fvc bench``: both need the local stack, a config whose topics no
one else uses, and a worker process started and stopped around their work.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from app.config import ClusteringConfig, parse_config
from app.settings import Settings

FVC = str(Path(sys.executable).with_name("fvc"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(text: str) -> None:
    """Progress for the person watching."""
    print(f"==> {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def local_stack() -> Iterator[None]:
    """The local Kafka and Redis for the duration; only what this started is stopped after."""
    # Fixed argv throughout: fvc's own entry point beside this python, and its subcommands.
    status = subprocess.run([FVC, "local", "status"], capture_output=True)  # noqa: S603
    running = status.returncode == 0
    if not running:
        say("starting local Kafka and Redis (the first time, Maven fetches Kafka)")
        subprocess.run([FVC, "local", "up"], check=True, stdout=sys.stderr)  # noqa: S603
    try:
        yield
    finally:
        if not running:
            say("stopping local Kafka and Redis")
            subprocess.run([FVC, "local", "down"], check=False, stdout=sys.stderr)  # noqa: S603


class LocalRun:
    """A config and environment private to one run, and the worker processes it starts."""

    def __init__(
        self, kind: str, workdir: Path, config: dict, *, assignments: bool = False, **env: str
    ) -> None:
        self.run_id = f"{kind}-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir / self.run_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stream in config["input_stream_configs"]:
            stream["topic"] = f"{self.run_id}.{stream['stream_id']}"
        self.config_path = self.workdir / "config.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.config: ClusteringConfig = parse_config(config)
        self.env = {
            **os.environ,
            "FVC_APP_ID": self.run_id,
            "FVC_NAMESPACE": self.run_id,
            "FVC_OUTPUT_TOPIC": f"{self.run_id}.FVClusterUpdateRecord.json",
            "FVC_DEAD_LETTER_TOPIC": f"{self.run_id}.dead-letter",
            "FVC_DATA_DIR": str(self.workdir / "data"),
            "FVC_ASSIGNMENTS_TOPIC": f"{self.run_id}.assignments" if assignments else "",
            "FVC_LOG_LEVEL": "WARNING",
            **env,
        }
        self.settings = Settings.from_env(self.env)
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen] = []  # the running workers, in start order

    @contextlib.contextmanager
    def workers(self, count: int = 1, ready_timeout: float = 120.0) -> Iterator[None]:
        """``count`` workers for the duration of the block, all ready when it starts."""
        with contextlib.ExitStack() as stack:
            for _ in range(count):
                stack.enter_context(self._worker(ready_timeout))
            yield

    @contextlib.contextmanager
    def _worker(self, ready_timeout: float) -> Iterator[None]:
        index, port = len(self.ports), _free_port()
        say(f"starting worker {index + 1}")
        log_path = self.workdir / f"worker-{index}.log"
        log = log_path.open("wb")
        worker = subprocess.Popen([FVC, "worker", "--config", str(self.config_path)],  # noqa: S603 - argv built here
                                  env={**self.env, "FVC_WEB_PORT": str(port)},
                                  stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.ports.append(port)
        self.processes.append(worker)
        try:
            self._wait_ready(worker, port, log_path, ready_timeout)
            yield
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            self.ports.remove(port)
            self.processes.remove(worker)

    def get_json(self, path: str, port: int | None = None) -> dict:
        """A JSON page of a worker's web port (the first worker's by default)."""
        url = f"http://127.0.0.1:{port or self.ports[0]}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return json.loads(response.read())

    def each_json(self, path: str) -> list[dict]:
        """The page from every running worker."""
        return [self.get_json(path, port) for port in self.ports]

    def _wait_ready(
        self, worker: subprocess.Popen, port: int, log: Path, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                message = f"the worker exited; see {log}"
                raise RuntimeError(message)
            with contextlib.suppress(OSError, ValueError):
                if self.get_json("/ready", port).get("ready"):
                    return
            time.sleep(0.3)
        message = f"the worker was not ready in {timeout:.0f}s; see {log}"
        raise RuntimeError(message)
