"""Cluster state: the ``StateStore`` contract and its two implementations.

``MemoryStore`` is imported eagerly; ``RedisStore`` only on first use, so offline runs and unit
tests never load the Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.store.base import ChangeBatch, Commit, OutboxEntry, OutboxRecord, StateStore
from app.store.memory import MemoryStore

if TYPE_CHECKING:
    from app.settings import Settings
    from app.store.redis import RedisStore

__all__ = [
    "ChangeBatch",
    "Commit",
    "MemoryStore",
    "OutboxEntry",
    "OutboxRecord",
    "RedisStore",
    "StateStore",
    "create_store",
    "store_for",
]


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
_TLS = {"redis://": "rediss://", "redis+cluster://": "rediss+cluster://"}


def store_for(settings: Settings) -> StateStore:
    """The store a deployment's settings name: URL, namespace, password, TLS switch."""
    url = settings.redis_url
    for plain, tls in _TLS.items():
        if settings.redis_tls and url.startswith(plain):
            url = tls + url.removeprefix(plain)
    password = settings.redis_password.get_secret_value() or None
    return create_store(url, settings.namespace, password=password)


def create_store(url: str, namespace: str = "fvc", **options: Any) -> StateStore:
    """A store for ``url``: ``memory://`` for in-process state, Redis for the rest.

    Redis URLs: ``redis://``/``rediss://`` (TLS) or ``unix://`` for one server;
    ``redis+cluster://``/``rediss+cluster://`` with ``host:port[,host:port...]`` seeds for a
    Redis Cluster (or a plain URL with ``cluster=True``).
    """
    if url.startswith("memory:"):
        return MemoryStore(**options)
    if url.startswith(_REDIS_SCHEMES):
        from app.store.redis import RedisStore

        return RedisStore(url, namespace, **options)
    scheme = url.partition(":")[0]
    message = (
        f"unsupported store URL scheme {scheme!r} "
        "(use memory://, redis://, rediss://, redis+cluster:// or rediss+cluster://)"
    )
    raise ValueError(message)


def __getattr__(name: str) -> Any:
    """Load ``RedisStore`` lazily."""
    if name == "RedisStore":
        from app.store.redis import RedisStore

        return RedisStore
    message = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(message)
