"""Sorting redis-py's errors into what a worker can do about them.

- **retry**: the server is there but cannot answer now (timeout, still loading its data set, a
  cluster slot moving, out of memory): ``StoreUnavailable``; the worker backs off and retries.
- **reconnect**: the connection or the server's role is gone (dropped socket, a failover left us
  on a read-only replica): the pooled connections are closed so the next call dials afresh,
  then ``StoreUnavailable``.
- **fatal**: retrying cannot help (bad password, missing ACL permission, a script or type
  error): the redis-py error propagates with the store's address attached, so the worker exits
  and is restarted with fixed settings instead of retrying forever.

Messages name the server without its password.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rx

from app.errors import StoreUnavailable

log = logging.getLogger(__name__)

FATAL = (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError)
RETRY = (
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.OutOfMemoryError,
    TimeoutError,
)
RECONNECT = (rx.ConnectionError, rx.ReadOnlyError, OSError)


def safe_url(url: str) -> str:
    """The URL with its password and query (which may carry one) left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def classify(exc: BaseException) -> str:
    """``"fatal"``, ``"retry"`` or ``"reconnect"`` for an error raised by redis-py."""
    if isinstance(exc, FATAL):
        return "fatal"
    if isinstance(exc, RETRY):
        return "retry"
    if isinstance(exc, RECONNECT):
        return "reconnect"
    return "fatal"


@asynccontextmanager
async def guard(client: aioredis.Redis, where: str, operation: str) -> AsyncIterator[None]:
    """Turn redis-py errors raised inside the block into the store's contract."""
    try:
        yield
    except (rx.RedisError, OSError) as exc:
        kind = classify(exc)
        message = f"redis at {where}: {operation} failed ({kind}): {type(exc).__name__}: {exc}"
        if kind == "fatal":
            log.error("%s", message)
            exc.add_note(message)
            raise
        log.warning("%s", message)
        if kind == "reconnect":
            await client.connection_pool.disconnect()
        raise StoreUnavailable(message) from exc
