"""In-process stand-ins for Redis and Kafka, so the worker core is tested without either.

``FlakyStore`` wraps the reference ``MemoryStore`` and fails on command the ways Redis fails
under a worker; ``RecordingProducer`` stands in for confluent-kafka's ``Producer``. Both are
deterministic: a failure happens on exactly the call it was ordered for.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import KafkaError

from app.codec.encode import encode_observation
from app.config import ClusteringConfig, default_topic, parse_config
from app.engine import Cluster
from app.errors import StoreUnavailable, VersionConflict
from app.settings import Settings
from app.store import ChangeBatch, Commit, MemoryStore, OutboxEntry
from app.store.base import ClockState, StoredConfig
from app.worker.pipeline import RawRecord
from app.worker.runtime import Runtime

STREAM = "cam"
TOPIC = default_topic(STREAM)
DIM = 8

MakeRuntime = Callable[..., Awaitable[Runtime]]  # the ``make_runtime`` fixture: store -> Runtime


def make_settings(**env: str) -> Settings:
    """Worker settings for in-process tests: memory store, CPU index, ``FVC_*`` overrides.

    The one place tests build ``Settings``: adapt it here if their construction changes.
    Commits are confirmed before ``handle`` returns, so a test sees a batch's effect at once;
    tests of overlapped commits (test_overlapped_commits.py) ask for them.
    """
    base = {"FVC_REDIS_URL": "memory://", "FVC_DEVICE": "cpu", "FVC_INDEX": "exact",
            "FVC_OVERLAP_COMMITS": "false"}
    return Settings.from_env({**base, **env})


def make_config(threshold: float = 0.5) -> ClusteringConfig:
    """One stream; a cluster is realized (a REG event) at its second observation."""
    stream = {
        "stream_id": STREAM,
        "fv_field_selector": {"feature_vector_path": "features"},
        "reg_stream_config": {"reg_threshold": threshold},
    }
    clustering = {"method": "SIMPLE_AVERAGE", "cluster_realization": {"num_samples": 2}}
    return parse_config({"clustering_config": clustering, "input_stream_configs": [stream]})


def write_config(directory: Path, config: ClusteringConfig) -> str:
    """``config`` as a file in ``directory``, for ``Runtime``, which loads its config by path."""
    path = directory / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    return str(path)


def identities(seed: int, count: int) -> np.ndarray:
    """``count`` random unit vectors far apart from each other in ``DIM`` dimensions."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    return q[:count].astype(np.float32)


def sightings(centres: np.ndarray, labels: Sequence[int], seed: int) -> list[np.ndarray]:
    """A slightly noisy vector of identity ``labels[i]`` per sighting (cosine > 0.98)."""
    rng = np.random.default_rng(seed)
    return [centres[i] + 0.02 * rng.normal(size=DIM).astype(np.float32) for i in labels]


def records(
    vectors: Sequence[np.ndarray], *, partition: int = 0, first: int = 0
) -> list[RawRecord]:
    """One JSON input record per vector at consecutive offsets of one partition."""
    out = []
    for i, vector in enumerate(vectors):
        offset = first + i
        value = encode_observation(vector, model_id="m", type="PERSON_FACE")
        key = f"p{partition}o{offset}".encode()
        out.append(RawRecord(TOPIC, partition, offset, key, value, 1_000 + offset))
    return out


def garbage(offset: int, partition: int = 0) -> RawRecord:
    """A record that is not JSON: a dead letter."""
    return RawRecord(TOPIC, partition, offset, b"bad", b"\xffnot json", 1_000 + offset)


async def clusters_of(store: MemoryStore) -> dict[str, Cluster]:
    """Every stored cluster by key."""
    return {c.key: c async for chunk in store.load_all() for c in chunk}


async def observations_in(store: MemoryStore) -> int:
    """The observations the stored clusters account for: must equal the ones sent."""
    return sum(c.num_observations for c in (await clusters_of(store)).values())


async def snapshot(store: MemoryStore) -> dict[str, tuple[int, int, bool, tuple[float, ...]]]:
    """Stored clusters as comparable values: observations, version, realized, rounded state."""
    return {
        key: (c.num_observations, c.version, c.realized, tuple(np.round(c.state, 4).tolist()))
        for key, c in sorted((await clusters_of(store)).items())
    }


def failing_rounds(
    store: FlakyStore, centres: np.ndarray, rounds: int = 16
) -> Iterator[tuple[list[RawRecord], int, dict[str, int]]]:
    """Seeded batches with the store ordered to fail around them, as Redis can.

    Each round is 6 sightings and a dead letter on one of two partitions; rounds 1, 2 and 3 of
    every 4 get conflicts, outages, or a lost reply followed by an outage. Yields each batch
    (its failures already ordered) with the observations sent up to it and the offsets that
    must be stored once it is.
    """
    rng = np.random.default_rng(2024)
    next_offset, sent = {0: 0, 1: 0}, 0
    for round_no in range(rounds):
        partition = round_no % 2
        first = next_offset[partition]
        labels = rng.integers(0, len(centres), 6).tolist()
        batch = records(sightings(centres, labels, seed=round_no), partition=partition, first=first)
        batch.append(garbage(first + 6, partition))
        next_offset[partition] = first + 7
        failure = round_no % 4
        if failure == 1:
            store.conflict(times=int(rng.integers(1, 3)))
        elif failure == 2:
            store.go_down("commit", times=int(rng.integers(1, 3)))
        elif failure == 3:
            store.lose_reply()
            store.go_down("offsets")
        sent += 6
        yield batch, sent, {f"{TOPIC}:{p}": o - 1 for p, o in next_offset.items() if o}


class FlakyStore:
    """A ``StateStore`` over a ``MemoryStore`` that fails on command, as Redis can.

    ``inner`` holds the truth, including what a commit whose reply was "lost" wrote; ``applied``
    lists every commit that reached it, so a test can count them.
    """

    def __init__(self, inner: MemoryStore | None = None) -> None:
        self.inner = inner or MemoryStore()
        self.applied: list[Commit] = []
        self.calls: Counter[str] = Counter()
        self._down: Counter[str] = Counter()
        self._conflicts = 0
        self._lost_replies = 0
        self._before_commit: list[Callable[[], Awaitable[object]]] = []

    # -- orders -----------------------------------------------------------------------------

    def go_down(self, method: str, times: int = 1) -> None:
        """Raise ``StoreUnavailable`` on the next ``times`` calls of ``method``; nothing runs."""
        self._down[method] += times

    def conflict(self, times: int = 1) -> None:
        """Refuse the next ``times`` commits with ``VersionConflict`` on their keys."""
        self._conflicts += times

    def lose_reply(self, times: int = 1) -> None:
        """Apply the next ``times`` commits, then raise ``StoreUnavailable`` (reply lost)."""
        self._lost_replies += times

    def before_next_commit(self, action: Callable[[], Awaitable[object]]) -> None:
        """Run ``action`` (another worker's write) just before the next commit is checked."""
        self._before_commit.append(action)

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self._down[method]:
            self._down[method] -= 1
            message = f"fake store: {method} failed (connection refused)"
            raise StoreUnavailable(message)

    # -- the StateStore contract --------------------------------------------------------------

    async def start(self) -> None:
        """Connect."""
        self._enter("start")

    async def close(self) -> None:
        """Release."""
        self._enter("close")

    async def commit(self, commit: Commit) -> None:
        """The inner commit, unless a failure was ordered for this one."""
        self._enter("commit")
        actions, self._before_commit = self._before_commit, []
        for action in actions:
            await action()
        if self._conflicts:
            self._conflicts -= 1
            raise VersionConflict(list(commit.expected))
        await self.inner.commit(commit)
        self.applied.append(commit)
        if self._lost_replies:
            self._lost_replies -= 1
            message = "fake store: commit applied, then the connection dropped"
            raise StoreUnavailable(message)

    async def generation(self) -> str | None:
        """The generation marker."""
        self._enter("generation")
        return await self.inner.generation()

    async def claim_generation(self, generation: str, ttl_s: float | None = None) -> str:
        """Set the marker unless one is set."""
        self._enter("claim_generation")
        return await self.inner.claim_generation(generation, ttl_s)

    async def set_generation(self, generation: str) -> None:
        """Replace the marker."""
        self._enter("set_generation")
        await self.inner.set_generation(generation)

    async def release_generation(self, generation: str) -> None:
        """Drop the marker if it is still ``generation``."""
        self._enter("release_generation")
        await self.inner.release_generation(generation)

    async def persistence_problems(self) -> list[str]:
        """The inner store's (none)."""
        return await self.inner.persistence_problems()

    async def get(self, keys: Sequence[str]) -> dict[str, Cluster]:
        """Current clusters for ``keys``."""
        self._enter("get")
        return await self.inner.get(keys)

    async def load_all(self, chunk: int = 10_000) -> AsyncIterator[list[Cluster]]:
        """Every cluster, in chunks."""
        self._enter("load_all")
        async for part in self.inner.load_all(chunk):
            yield part

    async def count(self) -> int:
        """Number of clusters."""
        self._enter("count")
        return await self.inner.count()

    async def offsets(self) -> dict[str, int]:
        """Stored partition offsets."""
        self._enter("offsets")
        return await self.inner.offsets()

    async def config(self) -> StoredConfig | None:
        """The stored config."""
        self._enter("config")
        return await self.inner.config()

    async def clock(self) -> ClockState:
        """The stored event clock."""
        self._enter("clock")
        return await self.inner.clock()

    async def publish_frontiers(self, frontiers: Mapping[str, int], now_ms: int) -> None:
        """Where a bulk worker's partitions stand."""
        self._enter("publish_frontiers")
        await self.inner.publish_frontiers(frontiers, now_ms)

    async def change_cursor(self) -> str:
        """A cursor at the end of the change stream."""
        self._enter("change_cursor")
        return await self.inner.change_cursor()

    async def changes(
        self, cursor: str, limit: int = 10_000, *, skip_writer: str = ""
    ) -> ChangeBatch:
        """Changes after ``cursor``."""
        self._enter("changes")
        return await self.inner.changes(cursor, limit, skip_writer=skip_writer)

    async def outbox_pending(self, limit: int = 1_000) -> list[OutboxEntry]:
        """Unpublished outbox entries, oldest first."""
        self._enter("outbox_pending")
        return await self.inner.outbox_pending(limit)

    async def outbox_ack(self, entries: Sequence[OutboxEntry]) -> None:
        """Forget published entries."""
        self._enter("outbox_ack")
        await self.inner.outbox_ack(entries)

    async def clear(self) -> None:
        """Forget everything."""
        self._enter("clear")
        await self.inner.clear()


@dataclass(frozen=True, slots=True)
class Sent:
    """One record as handed to ``Producer.produce``."""

    topic: str
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple[tuple[str, bytes], ...]


class RecordingProducer:
    """A confluent-kafka ``Producer`` stand-in: keeps what "Kafka" took, fails on command.

    Records wait in ``queued`` until ``flush``; those ordered to fail get a delivery error
    through their ``on_delivery`` callback (as librdkafka reports with
    ``delivery.report.only.error``), the rest land in ``delivered``.
    """

    def __init__(self) -> None:
        self.queued: list[tuple[Sent, Callable[[object, object], None] | None]] = []
        self.delivered: list[Sent] = []
        self._refuse_delivery = 0
        self._full_in: int | None = None

    def refuse_deliveries(self, times: int = 1) -> None:
        """The broker refuses the next ``times`` records produced."""
        self._refuse_delivery += times

    def queue_full_after(self, records: int) -> None:
        """``produce`` raises ``BufferError`` (local queue full) once, after ``records`` more."""
        self._full_in = records

    def produce(
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        timestamp: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: Callable[[object, object], None] | None = None,
    ) -> None:
        """Queue one record."""
        if self._full_in is not None:
            self._full_in -= 1
            if self._full_in < 0:
                self._full_in = None
                message = "Local: Queue full"
                raise BufferError(message)
        sent = Sent(topic, key, value, timestamp, tuple(headers or ()))
        self.queued.append((sent, on_delivery))

    def poll(self, _timeout: float = 0) -> int:
        """Serve callbacks: deliveries are decided at ``flush`` here, so none are due."""
        return 0

    def flush(self, _timeout: float | None = None) -> int:
        """Deliver every queued record (or report its refusal); returns how many are left."""
        queued, self.queued = self.queued, []
        for sent, on_delivery in queued:
            if self._refuse_delivery:
                self._refuse_delivery -= 1
                if on_delivery is not None:
                    on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
            else:
                self.delivered.append(sent)
        return 0
