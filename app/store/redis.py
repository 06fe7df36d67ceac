"""Cluster state in Redis, the workers' shared source of truth.

Every key of a deployment carries the hash tag ``{namespace}`` so a Redis Cluster keeps them in
one slot, which the commit script needs: it checks versions and partition offsets, writes the
clusters, appends the change stream and the outbox and stores the offsets as one atomic step,
in one round trip whatever the batch size.

Keys: ``{ns}:clusters`` (hash: key -> cluster blob), ``{ns}:versions`` (hash: key -> version),
``{ns}:changes`` (stream: one entry per upsert or deletion, trimmed to about ``changes_maxlen``),
``{ns}:outbox`` (stream of encoded events), ``{ns}:offsets`` (hash: "topic:partition" -> offset).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from functools import cache
from importlib.resources import files

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from app.engine.types import Cluster
from app.errors import AlreadyApplied, StoreUnavailable, VersionConflict
from app.store.base import ChangeBatch, Commit, OutboxEntry, OutboxRecord
from app.store.codec import decode_cluster, decode_many, encode_cluster
from app.store.guard import guard, safe_url

log = logging.getLogger(__name__)

DEFAULT_CHANGES_MAXLEN = 1_000_000
_ACK_CHUNK = 10_000
_APPLIED, _CONFLICT, _REPLAY = 0, 1, 2


@cache
def _lua(name: str) -> str:
    """Text of a script shipped in ``app/store/lua``."""
    return (files("app.store") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _commit_args(commit: Commit, maxlen: int) -> list[object]:
    """Flatten a commit into the argument layout ``commit.lua`` documents."""
    args: list[object] = [
        maxlen,
        len(commit.expected),
        len(commit.offsets),
        len(commit.upserts),
        len(commit.deletions),
        len(commit.outbox),
    ]
    for key, version in commit.expected.items():
        args += (key, version)
    for partition, offset in commit.offsets.items():
        args += (partition, offset)
    for cluster in commit.upserts:
        args += (cluster.key, cluster.version, encode_cluster(cluster))
    args += commit.deletions
    for record in commit.outbox:
        headers = msgpack.packb([list(h) for h in record.headers]) if record.headers else b""
        args += (record.event_id, record.key, record.value, record.timestamp, record.topic, headers)
    return args


def _outbox_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> OutboxEntry:
    """An outbox stream entry as the contract's value."""
    record = OutboxRecord(
        event_id=fields[b"event_id"].decode(),
        key=fields[b"key"],
        value=fields[b"value"],
        timestamp=int(fields[b"timestamp"]),
        topic=fields.get(b"topic", b"").decode(),
        headers=_headers(fields.get(b"headers", b"")),
    )
    return OutboxEntry(entry_id=entry_id.decode(), record=record)


def _headers(blob: bytes) -> tuple[tuple[str, bytes], ...]:
    if not blob:
        return ()
    return tuple((str(name), bytes(value)) for name, value in msgpack.unpackb(blob))


class RedisStore:
    """The ``StateStore`` over one Redis deployment, separated from others by ``namespace``."""

    def __init__(
        self,
        url: str,
        namespace: str = "fvc",
        *,
        password: str | None = None,
        changes_maxlen: int = DEFAULT_CHANGES_MAXLEN,
        socket_timeout: float = 10.0,
        retries: int = 2,
    ) -> None:
        """Configure; nothing connects before ``start()``.

        Args:
            url: ``redis://`` or ``rediss://`` (TLS), optionally with user, password and db.
            namespace: separates deployments sharing one Redis (the keys' hash tag).
            password: used when the URL carries none (e.g. from a mounted secret).
            changes_maxlen: approximate length the change stream is trimmed to.
            socket_timeout: seconds to wait for a connection or a reply.
            retries: redis-py's own retries of a command after a dropped connection or
                timeout, before ``StoreUnavailable``. A commit that was applied before its reply
                was lost cannot apply twice: the retry fails its offset check (``AlreadyApplied``,
                checked first) or its version check.
        """
        if not namespace or "{" in namespace or "}" in namespace:
            message = f"namespace {namespace!r} must be non-empty and free of braces"
            raise ValueError(message)
        self.namespace = namespace
        self._url = url
        self._password = password
        self._where = safe_url(url)
        self._maxlen = changes_maxlen
        self._timeout = socket_timeout
        self._retries = retries
        tag = f"{{{namespace}}}"
        self._clusters, self._versions = f"{tag}:clusters", f"{tag}:versions"
        self._changes, self._outbox = f"{tag}:changes", f"{tag}:outbox"
        self._offsets = f"{tag}:offsets"
        self._client: aioredis.Redis | None = None

    @property
    def _redis(self) -> aioredis.Redis:
        """The client, or a clear error when ``start()`` was not awaited."""
        if self._client is None:
            message = f"store at {self._where} used before start()"
            raise StoreUnavailable(message)
        return self._client

    async def start(self) -> None:
        """Connect, ping, and load the scripts so the first commit is one round trip."""
        if self._client is None:
            self._client = aioredis.from_url(
                self._url,
                password=self._password,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), self._retries),
            )
            self._commit_script = self._client.register_script(_lua("commit"))
            self._changes_script = self._client.register_script(_lua("changes"))
        async with guard(self._redis, self._where, "start"):
            await self._redis.ping()
            for name in ("commit", "changes"):
                await self._redis.script_load(_lua(name))
        log.info("state store connected: %s", self._where)

    async def close(self) -> None:
        """Close every pooled connection."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def commit(self, commit: Commit) -> None:
        """Apply ``commit`` atomically; a replay raises ``AlreadyApplied`` before any conflict."""
        keys = [self._clusters, self._versions, self._changes, self._outbox, self._offsets]
        args = _commit_args(commit, self._maxlen)
        async with guard(self._redis, self._where, "commit"):
            reply = await self._commit_script(keys=keys, args=args, client=self._redis)
        status = reply[0]
        if status == _CONFLICT:
            raise VersionConflict([key.decode() for key in reply[1:]])
        if status == _REPLAY:
            partition, stored = reply[1].decode(), reply[2].decode()
            offset = commit.offsets[partition]
            message = f"{partition}@{offset} is not past stored offset {stored}"
            raise AlreadyApplied(message)

    async def get(self, keys: Sequence[str]) -> dict[str, Cluster]:
        """Current clusters for ``keys`` with one HMGET."""
        if not keys:
            return {}
        async with guard(self._redis, self._where, "get"):
            blobs = await self._redis.hmget(self._clusters, list(keys))
        found = zip(keys, blobs, strict=True)
        return {key: decode_cluster(blob) for key, blob in found if blob is not None}

    async def load_all(self, chunk: int = 10_000) -> AsyncIterator[list[Cluster]]:
        """Every cluster via HSCAN, in lists of at most ``chunk``.

        HSCAN may return a field twice while the hash resizes, so fields already yielded are
        remembered and skipped.
        """
        seen: set[bytes] = set()
        async for page in self._scan_pages(chunk):
            fresh = [blob for field, blob in page.items() if field not in seen]
            seen.update(page)
            for start in range(0, len(fresh), chunk):
                yield decode_many(fresh[start : start + chunk])

    async def _scan_pages(self, count: int) -> AsyncIterator[dict[bytes, bytes]]:
        """HSCAN pages of the clusters hash, asking for the next page before yielding one.

        Redis then prepares and sends the next page while the caller decodes this one.
        """
        ahead = asyncio.ensure_future(self._scan_page(0, count))
        try:
            while True:
                cursor, page = await ahead
                if cursor != 0:
                    ahead = asyncio.ensure_future(self._scan_page(cursor, count))
                    await asyncio.sleep(0)
                yield page
                if cursor == 0:
                    return
        finally:
            ahead.cancel()

    async def _scan_page(self, cursor: int, count: int) -> tuple[int, dict[bytes, bytes]]:
        """One HSCAN call."""
        async with guard(self._redis, self._where, "load_all"):
            return await self._redis.hscan(self._clusters, cursor, count=count)

    async def count(self) -> int:
        """Number of clusters (HLEN)."""
        async with guard(self._redis, self._where, "count"):
            return int(await self._redis.hlen(self._clusters))

    async def offsets(self) -> dict[str, int]:
        """Last applied offset of every partition seen."""
        async with guard(self._redis, self._where, "offsets"):
            stored = await self._redis.hgetall(self._offsets)
        return {partition.decode(): int(offset) for partition, offset in stored.items()}

    async def change_cursor(self) -> str:
        """Id of the newest change-stream entry (``"0-0"`` when there is none)."""
        async with guard(self._redis, self._where, "change_cursor"):
            newest = await self._redis.xrevrange(self._changes, count=1)
        return newest[0][0].decode() if newest else "0-0"

    async def changes(self, cursor: str, limit: int = 10_000) -> ChangeBatch:
        """Changes after ``cursor`` with the clusters' current state, in one round trip."""
        keys = [self._changes, self._clusters]
        async with guard(self._redis, self._where, "changes"):
            reply = await self._changes_script(keys=keys, args=[cursor, limit], client=self._redis)
        new_cursor = reply[1].decode()
        if reply[0] != _APPLIED:
            return ChangeBatch(cursor=new_cursor, reset=True)
        upserts, deletions = [], []
        for key, blob in zip(reply[2], reply[3], strict=True):
            if blob is None:
                deletions.append(key.decode())
            else:
                upserts.append(decode_cluster(blob))
        return ChangeBatch(cursor=new_cursor, upserts=upserts, deletions=deletions)

    async def outbox_pending(self, limit: int = 1_000) -> list[OutboxEntry]:
        """Oldest unacknowledged events first."""
        async with guard(self._redis, self._where, "outbox_pending"):
            entries = await self._redis.xrange(self._outbox, count=limit)
        return [_outbox_entry(entry_id, fields) for entry_id, fields in entries]

    async def outbox_ack(self, entries: Sequence[OutboxEntry]) -> None:
        """Delete published events from the outbox stream."""
        ids = [entry.entry_id for entry in entries]
        async with guard(self._redis, self._where, "outbox_ack"):
            for start in range(0, len(ids), _ACK_CHUNK):
                await self._redis.xdel(self._outbox, *ids[start : start + _ACK_CHUNK])

    async def clear(self) -> None:
        """Delete every key of this namespace."""
        keys = [self._clusters, self._versions, self._changes, self._outbox, self._offsets]
        async with guard(self._redis, self._where, "clear"):
            await self._redis.delete(*keys)
