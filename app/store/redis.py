"""Cluster state in Redis, the workers' shared source of truth.

Every key of a deployment carries the hash tag ``{namespace}`` so a Redis Cluster keeps them in
one slot, which the commit script needs: it checks versions and partition offsets, writes the
clusters, appends the change stream and the outbox and stores the offsets as one atomic step,
in one round trip whatever the batch size.

Keys: ``{ns}:clusters`` (hash: key -> cluster blob), ``{ns}:versions`` (hash: key -> version),
``{ns}:changes`` (stream: one entry per upsert or deletion, with its writer, trimmed to about
``changes_maxlen``),
``{ns}:outbox`` (stream of encoded events), ``{ns}:offsets`` (hash: "topic:partition" -> offset).

Every command below names only these keys, so all of a namespace's traffic goes to the one
master that owns its slot: against a Redis Cluster (``redis+cluster://`` / ``rediss+cluster://``
URLs, or ``cluster=True``) redis-py's cluster client routes each command, EVALSHA included (by
its first key), to that master and follows MOVED/ASK redirects itself; a multi-key command
whose keys spanned slots would fail loudly in the client rather than be split. See
docs/redis-cluster.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import cache
from importlib.resources import files
from urllib.parse import urlsplit, urlunsplit

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import key_slot
from redis.exceptions import SlotNotCoveredError

from app.engine.clock import PartitionTime
from app.engine.types import Cluster
from app.errors import (
    AlreadyApplied,
    ClockMoved,
    ConfigChanged,
    StoreLost,
    StoreUnavailable,
    VersionConflict,
)
from app.store.base import (
    ChangeBatch,
    ClockState,
    Commit,
    OutboxEntry,
    OutboxRecord,
    StoredConfig,
)
from app.store.codec import decode_cluster, decode_many, encode_cluster
from app.store.guard import guard, safe_url

log = logging.getLogger(__name__)

DEFAULT_CHANGES_MAXLEN = 1_000_000
_ACK_CHUNK = 10_000
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"
_APPLIED, _CONFLICT, _REPLAY, _LOST, _CLOCK_MOVED, _CONFIG_CHANGED = 0, 1, 2, 3, 4, 5
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

Client = aioredis.Redis | RedisCluster


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def as_cluster_url(url: str) -> str:
    """``redis://``/``rediss://`` turned into the cluster form; a cluster URL unchanged."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() in CLUSTER_SCHEMES:
        return url
    if scheme.lower() not in CLUSTER_SCHEMES.values():
        message = f"a Redis Cluster needs a redis:// or rediss:// address, not {scheme}://"
        raise ValueError(message)
    return f"{scheme}+cluster{sep}{rest}"


def split_cluster_url(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster URL as redis-py's plain URL of the first seed node, plus every seed's address.

    ``redis+cluster://user:pw@h1:p1,h2:p2/0?opt=v`` -> ``redis://user:pw@h1:p1/0?opt=v`` and
    ``[(h1, p1), (h2, p2)]``. Listing several seeds lets a worker start while one node is down;
    the client learns the whole topology from whichever seed answers first.
    """
    parts = urlsplit(url)
    plain = CLUSTER_SCHEMES[parts.scheme.lower()]
    userinfo, at, hosts = parts.netloc.rpartition("@")
    seeds = [_host_port(host) for host in hosts.split(",") if host]
    if not seeds:
        message = "a redis+cluster:// URL needs at least one host:port"
        raise ValueError(message)
    first = urlunsplit(parts._replace(scheme=plain, netloc=userinfo + at + hosts.split(",")[0]))
    if int(parse_url(first).get("db") or 0) != 0:
        message = "Redis Cluster has only database 0; drop the /db part of the URL"
        raise ValueError(message)
    return first, seeds


def _host_port(address: str) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) as a pair, port 6379 by default."""
    parts = urlsplit(f"//{address}")
    return parts.hostname or "", parts.port or 6379


@cache
def _lua(name: str) -> str:
    """Text of a script shipped in ``app/store/lua``."""
    return (files("app.store") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _text(value: bytes | str) -> str:
    """A CONFIG GET name or value as text (redis-py gives bytes without decode_responses)."""
    return value.decode() if isinstance(value, bytes) else value


def _commit_args(commit: Commit, maxlen: int) -> list[object]:
    """Flatten a commit into the argument layout ``commit.lua`` documents."""
    args: list[object] = [
        maxlen,
        commit.writer,
        commit.generation,
        len(commit.expected),
        len(commit.offsets),
        len(commit.upserts),
        len(commit.deletions),
        len(commit.outbox),
        len(commit.event_times),
        commit.active_ms,
        *_clock_args(commit.merge_clock),
        "" if commit.config_version is None else commit.config_version,
        commit.new_config,
    ]
    for key, version in commit.expected.items():
        args += (key, version)
    for partition, first, last in commit.offset_ranges():
        args += (partition, first, last)
    for cluster in commit.upserts:
        args += (cluster.key, cluster.version, encode_cluster(cluster))
    args += commit.deletions
    for record in commit.outbox:
        headers = msgpack.packb([list(h) for h in record.headers]) if record.headers else b""
        args += (record.event_id, record.key, record.value, record.timestamp, record.topic, headers)
    for partition, event_time in commit.event_times.items():
        args += (partition, event_time)
    return args


def _clock_args(move: tuple[int | None, int] | None) -> tuple[str, str, str]:
    """The merge clock move as ``commit.lua`` reads it: flag, expected boundary, new one."""
    if move is None:
        return ("0", "", "")
    expected, new = move
    return ("1", "" if expected is None else str(expected), str(new))


def _partition_time(value: bytes) -> PartitionTime:
    """``b"<event time>:<active wall ms>"`` as stored by ``commit.lua``."""
    event_time, _, active_ms = value.decode().partition(":")
    return PartitionTime(int(event_time), int(active_ms or 0))


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
        cluster: bool | None = None,
    ) -> None:
        """Configure; nothing connects before ``start()``.

        Args:
            url: ``redis://`` or ``rediss://`` (TLS), optionally with user, password and db;
                ``redis+cluster://`` or ``rediss+cluster://`` for a Redis Cluster, with one or
                more comma-separated seed nodes (``host:port,host:port``).
            namespace: separates deployments sharing one Redis (the keys' hash tag, and so the
                one cluster slot all of them live in).
            password: used when the URL carries none (e.g. from a mounted secret).
            changes_maxlen: approximate length the change stream is trimmed to.
            socket_timeout: seconds to wait for a connection or a reply.
            retries: redis-py's own retries of a command whose connection dropped or timed
                out while it was in flight, before ``StoreUnavailable`` (which names the
                reconnect). A commit that was applied before its reply was lost cannot apply
                twice: the retry fails its offset check (``AlreadyApplied``, checked first) or
                its version check. A pooled connection the server closed while idle is not such
                a failure: redis-py 8 replaces it before sending, whatever this says. Against a
                cluster they are also the cluster client's retries after a connection error or
                CLUSTERDOWN, each after re-reading the topology.
            cluster: True to treat a ``redis://``/``rediss://`` URL as a cluster seed; by
                default the URL's scheme decides.
        """
        if not namespace or "{" in namespace or "}" in namespace:
            message = f"namespace {namespace!r} must be non-empty and free of braces"
            raise ValueError(message)
        if cluster is None:
            cluster = is_cluster_url(url)
        if cluster:
            url = as_cluster_url(url)
            self._seed_url, self._seeds = split_cluster_url(url)
        elif is_cluster_url(url):
            message = f"{safe_url(url)} names a Redis Cluster but cluster=False was asked"
            raise ValueError(message)
        self.namespace = namespace
        self.cluster = cluster
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
        self._generation = f"{tag}:generation"
        self._times, self._clock = f"{tag}:times", f"{tag}:clock"
        self._frontiers = f"{tag}:frontiers"
        self._config = f"{tag}:config"
        self.slot = key_slot(tag.encode())
        self._client: Client | None = None

    @property
    def _keys(self) -> list[str]:
        """Every key of the namespace, all tagged ``{namespace}``: one slot in a cluster."""
        return [
            self._clusters, self._versions, self._changes, self._outbox, self._offsets,
            self._generation, self._times, self._clock, self._config, self._frontiers,
        ]

    @property
    def _redis(self) -> Client:
        """The client, or a clear error when ``start()`` was not awaited."""
        if self._client is None:
            message = f"store at {self._where} used before start()"
            raise StoreUnavailable(message)
        return self._client

    def _connect(self) -> Client:
        """A pooled client; nothing is dialled until the first command.

        A cluster client learns the slot map from the first seed that answers and then keeps
        one pool per node; the single-node client keeps one pool.
        """
        options = {
            "password": self._password,
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "retry": Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), self._retries),
        }
        if not self.cluster:
            return aioredis.from_url(self._url, **options)
        others = [ClusterNode(host, port) for host, port in self._seeds[1:]]
        return RedisCluster.from_url(self._seed_url, startup_nodes=others or None, **options)

    async def start(self) -> None:
        """Connect, ping, and load the scripts so the first commit is one round trip.

        In a cluster SCRIPT LOAD goes to every master, so the script is cached wherever the
        namespace's slot lives now or moves later; a node that lost it (restart, failover)
        answers NOSCRIPT, and redis-py loads it again and retries the EVALSHA.
        """
        if self._client is None:
            self._client = self._connect()
            self._commit_script = self._client.register_script(_lua("commit"))
            self._changes_script = self._client.register_script(_lua("changes"))
        async with guard(self._redis, self._where, "start"):
            await self._redis.ping()
            for name in ("commit", "changes"):
                await self._redis.script_load(_lua(name))
        log.info("state store connected: %s%s", self._where, self._placement())

    def _placement(self) -> str:
        """Where the namespace lives in a cluster, for the start-up log line."""
        if not isinstance(self._client, RedisCluster):
            return ""
        where = self._owner() or "no node"
        return f" (namespace {self.namespace!r}: slot {self.slot} on {where})"

    async def close(self) -> None:
        """Close every pooled connection."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def commit(self, commit: Commit) -> None:
        """Apply ``commit`` atomically; a replay raises ``AlreadyApplied`` before any conflict."""
        args = _commit_args(commit, self._maxlen)
        async with guard(self._redis, self._where, "commit"):
            reply = await self._commit_script(keys=self._keys, args=args, client=self._redis)
        status = reply[0]
        if status == _LOST:
            held = reply[1].decode() or "none"
            message = f"redis at {self._where}: generation {commit.generation} is gone ({held})"
            raise StoreLost(message)
        if status == _CONFLICT:
            raise VersionConflict([key.decode() for key in reply[1:]])
        if status == _REPLAY:
            partition, stored = reply[1].decode(), reply[2].decode()
            first = commit.first_offsets.get(partition, commit.offsets[partition])
            message = f"{partition}@{first} is not past stored offset {stored}"
            raise AlreadyApplied(message)
        if status == _CLOCK_MOVED:
            raise ClockMoved(int(reply[1]) if reply[1] else None)
        if status == _CONFIG_CHANGED:
            raise ConfigChanged(int(reply[1]))

    async def config(self) -> StoredConfig | None:
        """The stored config, read in one HMGET."""
        async with guard(self._redis, self._where, "config"):
            version, body = await self._redis.hmget(self._config, ["version", "body"])
        return None if version is None else StoredConfig(int(version), bytes(body))

    async def clock(self) -> ClockState:
        """Every partition's event time and the last merge boundary, in one round trip."""
        async with guard(self._redis, self._where, "clock"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(self._times)
            pipe.get(self._clock)
            pipe.hgetall(self._frontiers)
            stored, merge_last, frontiers = await pipe.execute()
        return ClockState(
            {p.decode(): _partition_time(v) for p, v in stored.items()},
            None if merge_last is None else int(merge_last),
            {p.decode(): _partition_time(v) for p, v in frontiers.items()},
        )

    async def publish_frontiers(self, frontiers: Mapping[str, int], now_ms: int) -> None:
        """HSET each frontier as ``<event time>:<wall ms>``, the form of the partition times."""
        if not frontiers:
            return
        mapping = {p: f"{t}:{now_ms}" for p, t in frontiers.items()}
        async with guard(self._redis, self._where, "frontiers"):
            await self._redis.hset(self._frontiers, mapping=mapping)

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
        remembered and skipped. An HSCAN cursor only means something to the node that issued
        it, so in a cluster a scan during which the namespace's slot moved to another master
        may have missed fields: it ends in ``StoreUnavailable`` (load again) instead.
        """
        owner = self._owner()
        seen: set[bytes] = set()
        async for page in self._scan_pages(chunk):
            fresh = [blob for field, blob in page.items() if field not in seen]
            seen.update(page)
            for start in range(0, len(fresh), chunk):
                yield decode_many(fresh[start : start + chunk])
        if self._owner() != owner:
            message = f"redis at {self._where}: slot {self.slot} moved during load_all; load again"
            raise StoreUnavailable(message)

    def _owner(self) -> str:
        """The node the client sends the namespace's commands to now ("" for one server)."""
        if not isinstance(self._client, RedisCluster):
            return ""
        try:
            return self._client.get_node_from_key(self._clusters).name
        except SlotNotCoveredError:  # no slot map yet: the next command will fetch one
            return ""

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

    async def generation(self) -> str | None:
        """The generation marker (GET), None when Redis lost it or never had it."""
        async with guard(self._redis, self._where, "generation"):
            marker = await self._redis.get(self._generation)
        return None if marker is None else marker.decode()

    async def claim_generation(self, generation: str, ttl_s: float | None = None) -> str:
        """SET NX the marker (PX for a lapsing claim), then read the one in force."""
        lapse = None if ttl_s is None else int(ttl_s * 1000)
        async with guard(self._redis, self._where, "generation"):
            await self._redis.set(self._generation, generation, nx=True, px=lapse)
            marker = await self._redis.get(self._generation)
        return generation if marker is None else marker.decode()

    async def set_generation(self, generation: str) -> None:
        """SET the marker, with no expiry."""
        async with guard(self._redis, self._where, "generation"):
            await self._redis.set(self._generation, generation)

    async def release_generation(self, generation: str) -> None:
        """DEL the marker if it is still ``generation``, in one atomic script."""
        async with guard(self._redis, self._where, "generation"):
            await self._redis.eval(_RELEASE, 1, self._generation, generation)

    async def persistence_problems(self) -> list[str]:
        """What the server's settings risk, against AOF (``everysec`` or better) and noeviction.

        A server that refuses CONFIG (a managed Redis) cannot be checked: that is said instead.
        """
        try:
            async with guard(self._redis, self._where, "config"):
                found = await self._redis.config_get("appendonly", "appendfsync",
                                                     "maxmemory-policy")
        except (aioredis.ResponseError, StoreUnavailable) as exc:
            return [f"could not read the server's settings ({exc}); make sure it keeps an "
                    "append-only file (appendfsync everysec) and evicts nothing (noeviction)"]
        settings = {_text(k): _text(v) for k, v in found.items()}
        problems = []
        if settings.get("appendonly") != "yes":
            problems.append("appendonly is not yes: a Redis restart loses every cluster and "
                            "offset (the workers then rebuild from scratch)")
        elif settings.get("appendfsync") == "no":
            problems.append("appendfsync is no: a crash can lose the last commits; use everysec")
        if settings.get("maxmemory-policy", "noeviction") != "noeviction":
            problems.append(f"maxmemory-policy is {settings['maxmemory-policy']}: Redis may "
                            "evict clusters or offsets under memory pressure; use noeviction")
        return problems

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

    async def changes(
        self, cursor: str, limit: int = 10_000, *, skip_writer: str = ""
    ) -> ChangeBatch:
        """Changes after ``cursor`` but ``skip_writer``'s, with the clusters' current state.

        In one round trip; the skipped ones cost no cluster reads.
        """
        keys = [self._changes, self._clusters]
        args = [cursor, limit, skip_writer]
        async with guard(self._redis, self._where, "changes"):
            reply = await self._changes_script(keys=keys, args=args, client=self._redis)
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
        """Delete every key of this namespace with one DEL.

        A plain DEL, not redis-py's ``delete()``: the cluster client's ``delete()`` splits keys
        by slot into separate, non-atomic commands, where DEL itself is one atomic command and
        the client refuses it outright should the keys ever span slots.
        """
        async with guard(self._redis, self._where, "clear"):
            await self._redis.execute_command("DEL", *self._keys)
