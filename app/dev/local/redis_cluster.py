"""A throwaway multi-node Redis Cluster on loopback ports, for tests and trying cluster mode.

``fvc local up`` runs one plain Redis; Redis Cluster behaves differently enough (MOVED
redirects, one slot per key, scripts checked against slots, CLUSTERDOWN) that the store is
tested against a real one. This starts ``masters`` x (1 + ``replicas``) ``redis-server``
processes with ``cluster-enabled yes`` in a folder of their own, joins them with
``redis-cli --cluster create``, waits until every node reports ``cluster_state:ok`` and
agrees on who serves all 16384 slots, and stops them again. Nothing is persisted.

Each node also listens on its cluster bus port (client port + 10000), so both must be free.
Used from Python (``with LocalRedisCluster(home) as cluster: cluster.url``) or from a shell::

    python -m app.dev.local.redis_cluster /tmp/fvc-cluster --port 17000   # Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import subprocess
from pathlib import Path

import redis

from app.dev.local.procs import port_free, wait_until
from app.dev.local.service import HOST
from app.errors import LocalStackError

log = logging.getLogger(__name__)

BUS_OFFSET = 10_000  # Redis Cluster's node-to-node bus listens on the client port + 10000
SLOTS = 16_384
DEFAULT_PORT = 17_000


def find_binaries() -> tuple[str, str]:
    """``redis-server`` and ``redis-cli`` from PATH, or a LocalStackError naming what is missing."""
    found = {name: shutil.which(name) for name in ("redis-server", "redis-cli")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        message = (
            f"{' and '.join(missing)} not found on PATH; a local Redis Cluster needs both "
            "(Debian/Ubuntu: apt-get install redis-server redis-tools, macOS: brew install redis)"
        )
        raise LocalStackError(message)
    return found["redis-server"] or "", found["redis-cli"] or ""


def free_ports(count: int, start: int = DEFAULT_PORT, host: str = HOST) -> list[int]:
    """The first ``count`` ports from ``start`` whose port and bus port are both free.

    Scanning instead of insisting on fixed ports lets two test sessions, or a cluster left
    behind by a crashed one, live beside each other.
    """
    ports: list[int] = []
    for port in range(start, 65_536 - BUS_OFFSET):
        if port_free(host, port) and port_free(host, port + BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    message = f"no {count} free port pairs (port, port+{BUS_OFFSET}) from {start} on {host}"
    raise LocalStackError(message)


def _node_argv(server: str, port: int, home: Path, node_timeout_ms: int) -> list[str]:
    """``redis-server`` in cluster mode, loopback only, nothing saved, all files under ``home``."""
    return [
        server,
        "--port", str(port),
        "--bind", HOST,
        "--protected-mode", "yes",
        "--daemonize", "no",
        "--dir", str(home),
        "--cluster-enabled", "yes",
        "--cluster-config-file", f"nodes-{port}.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip


class LocalRedisCluster:
    """``masters`` x (1 + ``replicas``) local cluster nodes kept under ``home``."""

    def __init__(
        self,
        home: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        ports: list[int] | None = None,
        first_port: int = DEFAULT_PORT,
        node_timeout_ms: int = 1_000,
        ready_timeout: float = 30.0,
    ) -> None:
        """Configure; nothing starts before ``start()``.

        Args:
            home: folder for the nodes' config files and logs (created if missing).
            masters: at least 3, as ``redis-cli --cluster create`` requires.
            replicas: replicas per master.
            ports: the client ports to use; by default the first free ones from ``first_port``.
            first_port: where the search for free ports starts when ``ports`` is not given.
            node_timeout_ms: how soon a silent node counts as failed. Short here, so a test
                that stops a node sees the cluster go down (and come back) within seconds.
            ready_timeout: seconds to wait for the cluster to report ok.
        """
        if masters < 3:
            message = f"a Redis Cluster needs at least 3 masters, not {masters}"
            raise ValueError(message)
        self.home = home
        self.masters, self.replicas = masters, replicas
        self._wanted_ports = ports
        self._first_port = first_port
        self._node_timeout_ms = node_timeout_ms
        self._ready_timeout = ready_timeout
        self.ports: list[int] = []
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._server = ""

    @property
    def size(self) -> int:
        """Number of nodes."""
        return self.masters * (1 + self.replicas)

    @property
    def url(self) -> str:
        """The store URL naming every node as a seed: ``redis+cluster://h:p1,h:p2,...``."""
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    def start(self) -> LocalRedisCluster:
        """Start the nodes, create the cluster and wait until it serves every slot."""
        self._server, cli = find_binaries()
        self.home.mkdir(parents=True, exist_ok=True)
        self.ports = self._wanted_ports or free_ports(self.size, self._first_port)
        self._check_ports()
        for port in self.ports:  # a node with an old cluster config would refuse to join
            (self.home / f"nodes-{port}.conf").unlink(missing_ok=True)
        try:
            for port in self.ports:
                self.start_node(port)
            self._create(cli)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("local redis cluster ready: %s", self.url)
        return self

    def _check_ports(self) -> None:
        """One clear line when a client or bus port is taken, before anything starts."""
        for port in self.ports:
            for taken in (port, port + BUS_OFFSET):
                if not port_free(HOST, taken):
                    message = f"port {HOST}:{taken} is in use; pick other cluster ports"
                    raise LocalStackError(message)

    def start_node(self, port: int) -> None:
        """Start (or restart, with its saved cluster config) the node on ``port``."""
        if port in self._procs and self._procs[port].poll() is None:
            return
        argv = _node_argv(self._server, port, self.home, self._node_timeout_ms)
        with (self.home / f"node-{port}.log").open("ab") as out:
            self._procs[port] = subprocess.Popen(  # noqa: S603 - argv built here
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        if not wait_until(lambda: self._answers(port), 15.0, every=0.05):
            message = f"redis-server on {HOST}:{port} did not answer; see {self._log(port)}"
            raise LocalStackError(message)

    def stop_node(self, port: int, grace: float = 10.0) -> None:
        """SIGTERM the node on ``port`` (SIGKILL after ``grace`` seconds) and reap it."""
        proc = self._procs.pop(port, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop every node this object started."""
        for port in list(self._procs):
            self.stop_node(port)

    def _create(self, cli: str) -> None:
        """``redis-cli --cluster create``: assign the slots, and replicas, and join the nodes."""
        argv = [cli, "--cluster", "create", *(f"{HOST}:{port}" for port in self.ports)]
        argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(  # noqa: S603 - argv built here
            argv, capture_output=True, text=True, timeout=60, check=False
        )
        (self.home / "create.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            message = f"redis-cli --cluster create failed: {lines[-1]}"
            raise LocalStackError(message)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every running node says ``cluster_state:ok`` and knows all the others.

        ``--cluster create`` returns once the slots are assigned, before gossip has told every
        node about every other; a client that asked a node too early would see a partial map.
        """
        limit = self._ready_timeout if timeout is None else timeout
        if not wait_until(self.ready, limit, every=0.1):
            states = {port: self.cluster_info(port).get("cluster_state") for port in self._procs}
            message = f"redis cluster not ready after {limit:.0f}s: {states}"
            raise LocalStackError(message)

    def ready(self) -> bool:
        """Whether every running node serves all slots and knows every node."""
        for port in self._procs:
            info = self.cluster_info(port)
            if info.get("cluster_state") != "ok":
                return False
            if info.get("cluster_slots_ok") != str(SLOTS):
                return False
            if info.get("cluster_known_nodes") != str(self.size):
                return False
        return True

    def cluster_info(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` of one node as a dict; empty when it does not answer."""
        try:
            with self._client(port) as client:
                info = client.execute_command("CLUSTER INFO")  # parsed by redis-py
        except (redis.RedisError, OSError):
            return {}
        return {str(key): str(value) for key, value in dict(info).items()}

    def port_for_slot(self, slot: int) -> int:
        """The client port of the master serving ``slot``, as the running nodes report it."""
        for port in self._procs:
            try:
                with self._client(port) as client:
                    ranges = client.execute_command("CLUSTER SLOTS")
            except (redis.RedisError, OSError):
                continue
            for start, end, master, *_ in ranges:
                if int(start) <= slot <= int(end):
                    return int(master[1])
        message = f"no running node reports an owner for slot {slot}"
        raise LocalStackError(message)

    def begin_slot_move(self, slot: int, to_port: int) -> None:
        """Mark ``slot`` as migrating to the master on ``to_port`` (keys still where they were).

        The first half of what ``redis-cli --cluster reshard`` does; between this and
        ``finish_slot_move`` clients see ASK redirects (and TRYAGAIN for multi-key commands
        whose keys are split), which is what a test of redirect handling needs.
        """
        from_port = self.port_for_slot(slot)
        self._node_command(to_port, "CLUSTER SETSLOT", slot, "IMPORTING", self._node_id(from_port))
        self._node_command(from_port, "CLUSTER SETSLOT", slot, "MIGRATING", self._node_id(to_port))

    def migrate_keys(self, slot: int, to_port: int, keys: list[str] | None = None) -> None:
        """Move ``keys`` (default: every key left in ``slot``) to the master on ``to_port``."""
        from_port = self.port_for_slot(slot)
        if keys is None:
            keys = self._node_command(from_port, "CLUSTER GETKEYSINSLOT", slot, 100_000)
        if keys:
            self._node_command(from_port, "MIGRATE", HOST, to_port, "", 0, 10_000, "KEYS", *keys)

    def finish_slot_move(self, slot: int, to_port: int) -> None:
        """Move the remaining keys and give ``slot`` to ``to_port``, telling every master."""
        self.migrate_keys(slot, to_port)
        owner = self._node_id(to_port)
        for port in [to_port, *(p for p in self._procs if p != to_port)]:
            self._node_command(port, "CLUSTER SETSLOT", slot, "NODE", owner)

    def _node_id(self, port: int) -> str:
        node_id = self._node_command(port, "CLUSTER MYID")
        return node_id.decode() if isinstance(node_id, bytes) else str(node_id)

    def _node_command(self, port: int, *args: object) -> object:
        """One command on one node, unrouted."""
        with self._client(port) as client:
            return client.execute_command(*args)

    def _answers(self, port: int) -> bool:
        """Whether the node on ``port`` answers PING (and its process is still alive)."""
        proc = self._procs.get(port)
        if proc is not None and proc.poll() is not None:
            message = f"redis-server on {HOST}:{port} exited; see {self._log(port)}"
            raise LocalStackError(message)
        try:
            with self._client(port) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def _client(self, port: int) -> redis.Redis:
        """A short-lived plain client for one node."""
        return redis.Redis(HOST, port, socket_timeout=2.0, socket_connect_timeout=2.0)

    def _log(self, port: int) -> Path:
        return self.home / f"node-{port}.log"

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Run a local cluster in the foreground until Ctrl-C, printing its store URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path, help="folder for the nodes' files")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="first port to try")
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0)
    args = parser.parse_args(argv)
    cluster = LocalRedisCluster(
        args.home, masters=args.masters, replicas=args.replicas, first_port=args.port
    )
    signal.signal(signal.SIGTERM, _interrupt)
    with cluster, contextlib.suppress(KeyboardInterrupt):
        print(f"FVC_REDIS_URL={cluster.url}", flush=True)
        signal.pause()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends ``main`` like Ctrl-C does, so the nodes are stopped on the way out."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
