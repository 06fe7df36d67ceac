"""A local Redis: the machine's ``redis-server``, loopback only, by default nothing persisted.

The cluster state the workers keep in Redis is rebuilt by the tests and demos that need it, so
the local server saves nothing to disk by default (``save ""``, ``appendonly no``); with
``persist`` it keeps an append-only file synced every second (``appendonly yes``,
``appendfsync everysec``), what fvc's guarantees assume of a production Redis. Its working
directory and log live in the state folder. When ``redis-server`` is missing and we are root on
Debian, ``up`` installs Debian's package rather than asking the developer to.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import redis

from app.dev.local.service import HOST, LocalService, Report
from app.errors import LocalStackError

log = logging.getLogger(__name__)

_CONFIG = """\
# Written by `fvc local up` on every start; edit app/dev/local/redis.py instead.
bind {host}
port {port}
protected-mode yes
daemonize no
dir {home}
logfile ""
maxmemory-policy noeviction
{persistence}
"""
_VOLATILE = 'save ""\nappendonly no'
_PERSISTENT = 'save ""\nappendonly yes\nappendfsync everysec'



def redis_answers(url: str, timeout: float) -> bool:
    """Whether the Redis at ``url`` answers PING."""
    try:
        with redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        ) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def find_redis_server(report: Report = log.info) -> str:
    """``redis-server`` from PATH; installed with apt-get first when missing and we are root."""
    found = shutil.which("redis-server")
    if found is None and _can_apt_install():
        report("redis: redis-server is missing; installing Debian's redis-server package")
        _apt_install("redis-server")
        found = shutil.which("redis-server")
    if found is None:
        message = (
            "redis-server not found on PATH; install it "
            "(Debian/Ubuntu: apt-get install redis-server, macOS: brew install redis)"
        )
        raise LocalStackError(message)
    return found


def _can_apt_install() -> bool:
    """Root on a machine with apt-get: installing a package will not need a password."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install(package: str) -> None:
    """``apt-get update`` then ``apt-get install -y package``, quietly; one line on failure."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
        done = subprocess.run(  # noqa: S603 - fixed argv
            argv, capture_output=True, text=True, env=env, check=False
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            message = f"`{' '.join(argv)}` failed: {lines[-1]}"
            raise LocalStackError(message)


class RedisService(LocalService):
    """The local Redis under ``home`` (config, working dir, log, pid file)."""

    name = "redis"
    keyword = "redis-server"
    port_keys = ("redis_port",)

    def __init__(self, home: Path, port: int, persist: bool = False) -> None:
        """A server kept under ``home``, listening on ``port``; AOF with ``persist``."""
        super().__init__(home)
        self.port = port
        self.persist = persist
        self._binary = ""

    @property
    def address(self) -> str:
        """A redis-py URL (database 0)."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def ports(self) -> tuple[int, ...]:
        """The one client port."""
        return (self.port,)

    @property
    def config_path(self) -> Path:
        """The server's config, rewritten on each start."""
        return self.home / "redis.conf"

    @property
    def log_path(self) -> Path:
        """Redis logs to stdout, which goes to this file."""
        return self.home / "redis.log"

    def prepare(self, report: Report) -> None:
        """Find (or install) redis-server and write its config."""
        self._binary = find_redis_server(report)
        self.home.mkdir(parents=True, exist_ok=True)
        persistence = _PERSISTENT if self.persist else _VOLATILE
        self.config_path.write_text(
            _CONFIG.format(host=HOST, port=self.port, home=self.home, persistence=persistence)
        )

    def command(self) -> list[str]:
        """``redis-server <state>/redis/redis.conf`` in the foreground."""
        return [self._binary, str(self.config_path)]

    def probe(self, timeout: float) -> bool:
        """PING."""
        return redis_answers(self.address, timeout)
