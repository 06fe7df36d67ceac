"""Sorting redis-py's errors into what a worker can do about them.

- **retry**: the server is there but cannot answer now (timeout, still loading its data set, a
  cluster slot moving, out of memory, a Redis Cluster that is down or does not cover every slot
  yet): ``StoreUnavailable``; the worker backs off and retries.
- **reconnect**: the connection or the server's role is gone (dropped socket, a failover left us
  on a read-only replica, no cluster node reachable): the pooled connections are closed (a
  cluster client also forgets its slot map) so the next call dials afresh, then
  ``StoreUnavailable``.
- **fatal**: retrying cannot help (bad password, missing ACL permission, a script or type
  error, a cluster URL aimed at a server not in cluster mode, a plain URL aimed at a cluster
  node): the redis-py error propagates with the store's address attached, so the worker exits
  and is restarted with fixed settings instead of retrying forever.

MOVED and ASK redirects never get here from a cluster client: redis-py follows them.

Messages name the server without its password.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster

from app.errors import StoreUnavailable

log = logging.getLogger(__name__)

FATAL = (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError)
RETRY = (
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.ClusterError,  # the cluster client ran out of redirects (a slot moving back and forth)
    rx.SlotNotCoveredError,
    rx.OutOfMemoryError,
    TimeoutError,
)
RECONNECT = (rx.ConnectionError, rx.ReadOnlyError, OSError)
CAUGHT = (rx.RedisError, rx.RedisClusterException, OSError)
_NOT_COVERED = "slots are not covered"  # RedisClusterException while the cluster is not ok
_CLUSTER_HINT = "the server is a Redis Cluster node: use a redis+cluster:// URL"


def safe_url(url: str) -> str:
    """The URL with its password and query (which may carry one) left out.

    Works on the text rather than ``urlsplit``'s host and port, so a cluster URL's
    comma-separated seed list (``h1:p1,h2:p2``) survives.
    """
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{parts.scheme}://{user + '@' if user else ''}{hosts}{parts.path}"


def classify(exc: BaseException) -> str:
    """``"fatal"``, ``"retry"`` or ``"reconnect"`` for an error raised by redis-py."""
    if isinstance(exc, FATAL):
        return "fatal"
    if isinstance(exc, RETRY):
        return "retry"
    if isinstance(exc, RECONNECT):
        return "reconnect"
    if isinstance(exc, rx.RedisClusterException):
        return _classify_cluster(exc)
    return "fatal"


def _classify_cluster(exc: rx.RedisClusterException) -> str:
    """A cluster client's own error: as its cause when it has one, else by what it says.

    "Redis Cluster cannot be connected" wraps the last seed's error (refused: reconnect; not in
    cluster mode: fatal); "All slots are not covered" means the cluster is not ok yet: retry;
    anything else (keys in several slots, bad arguments) is a bug or a setting: fatal.
    """
    if exc.__cause__ is not None:
        return classify(exc.__cause__)
    if _NOT_COVERED in str(exc):
        return "retry"
    return "fatal"


async def reconnect(client: aioredis.Redis | RedisCluster) -> None:
    """Close every pooled connection; a cluster client also re-reads the slot map next time."""
    if isinstance(client, RedisCluster):
        await client.aclose()
    else:
        await client.connection_pool.disconnect()


ROUND_TRIPS: Counter[str] = Counter()  # store calls of this process, by operation


@asynccontextmanager
async def guard(
    client: aioredis.Redis | RedisCluster, where: str, operation: str
) -> AsyncIterator[None]:
    """Turn redis-py errors raised inside the block into the store's contract.

    Every store call (one command, script or pipeline: one round trip) runs in a guard, so it is
    also where ``ROUND_TRIPS`` counts them by operation, for ``/stats`` and ``fvc bench``.
    """
    ROUND_TRIPS[operation] += 1
    try:
        yield
    except CAUGHT as exc:
        kind = classify(exc)
        message = f"redis at {where}: {operation} failed ({kind}): {type(exc).__name__}: {exc}"
        if kind == "fatal":
            if isinstance(exc, rx.MovedError) and not isinstance(client, RedisCluster):
                message += f" ({_CLUSTER_HINT})"
            log.error("%s", message)
            exc.add_note(message)
            raise
        log.warning("%s", message)
        if kind == "reconnect":
            await reconnect(client)
        raise StoreUnavailable(message) from exc
