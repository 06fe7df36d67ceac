"""The state store contract, run over MemoryStore and RedisStore: both must behave the same.

Each Redis test works in its own namespace and clears it afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import msgpack
import numpy as np
import pytest
import redis.asyncio as aioredis

from app.engine.clock import NOT_HOLDING, UNKNOWN, PartitionTime
from app.engine.types import Cluster, ClusterId
from app.errors import (
    AlreadyApplied,
    ClockMoved,
    ConfigChanged,
    StoreLost,
    StoreUnavailable,
    VersionConflict,
)
from app.store import Commit, MemoryStore, OutboxRecord, StateStore, create_store
from app.store.base import ClockState, StoredConfig
from app.store.codec import LAYOUT, decode_cluster, encode_cluster
from app.store.guard import classify, safe_url
from app.store.redis import RedisStore
from tests.support.cutting_proxy import CuttingProxy

MakeStore = Callable[..., Awaitable[StateStore]]


def cluster(key: str, version: int = 1, n: int = 1, d: int = 4, **changes: Any) -> Cluster:
    """A cluster whose vector and counters depend on ``version`` and ``n``."""
    base = Cluster.from_state(
        id=ClusterId(1_700_000_000_000, key, "cam"),
        state=(np.arange(d, dtype=np.float32) + version) / 7,
        num_observations=n,
        realized=True,
        first_time=1_700_000_000_000,
        last_time=1_700_000_000_000 + version,
        streams=("cam", "door"),
        retention_ms=60_000,
        version=version,
        pending=0,
        pending_since=0,
    )
    return dataclasses.replace(base, **changes)


def assert_same(got: Cluster, want: Cluster) -> None:
    """Field-by-field equality, the vector compared by value and dtype."""
    assert got.unit.dtype == np.float32
    np.testing.assert_array_equal(got.unit, want.unit)
    for f in dataclasses.fields(Cluster):
        if f.name != "unit":
            assert getattr(got, f.name) == getattr(want, f.name), f.name


def record(n: int) -> OutboxRecord:
    """An outbox record numbered ``n``."""
    headers = (("reason", b"not_json"), ("offset", str(n).encode())) if n % 2 else ()
    return OutboxRecord(
        event_id=f"e{n}",
        key=f"k{n}".encode(),
        value=bytes([n % 256]) * 3,
        timestamp=1000 + n,
        topic=f"topic-{n % 3}" if n % 3 else "",
        headers=headers,
    )


async def put(store: StateStore, *clusters: Cluster, **offsets: int) -> None:
    """Create clusters at their versions (expected = version - 1)."""
    expected = {c.key: c.version - 1 for c in clusters}
    await store.commit(Commit(expected=expected, upserts=clusters, offsets=offsets))


async def snapshot(store: StateStore) -> tuple[object, ...]:
    """Everything observable, to prove a refused commit wrote nothing."""
    clusters = [c for chunk in [x async for x in store.load_all()] for c in chunk]
    described = sorted((c.key, c.version, c.state.tobytes()) for c in clusters)
    return (
        described,
        await store.offsets(),
        await store.change_cursor(),
        await store.outbox_pending(),
        await store.count(),
    )


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[MakeStore]:
    """Open stores of the parametrized backend; Redis ones get this test's namespace."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else "memory://"
    async for make in store_opener(url, unique):
        yield make


async def store_opener(url: str, unique: str) -> AsyncIterator[MakeStore]:
    """Yields a ``make_store`` for ``url`` in ``unique``'s namespaces; clears and closes after."""
    opened: list[StateStore] = []

    async def make(namespace: str = "", **options: Any) -> StateStore:
        store = create_store(url, f"{unique}{namespace}", **options)
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.clear()
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> StateStore:
    """One fresh store."""
    return await make_store()


class TestStateStore:
    """Behaviour every backend shares."""

    async def test_create_update_delete_with_versions(self, store: StateStore) -> None:
        a1 = cluster("a", version=1, streams=(), model_id="m", type="face", emitted=True)
        await store.commit(Commit(expected={"cam:a": 0}, upserts=[a1]))
        assert_same((await store.get(["cam:a"]))["cam:a"], a1)
        a2 = cluster("a", version=2, n=5, realized=False, last_emit_time=9, pending=3)
        await store.commit(Commit(expected={"cam:a": 1}, upserts=[a2]))
        assert_same((await store.get(["cam:a"]))["cam:a"], a2)
        await store.commit(Commit(expected={"cam:a": 2}, deletions=["cam:a"]))
        assert await store.get(["cam:a"]) == {}
        assert await store.count() == 0
        await store.commit(Commit(expected={"cam:a": 0}, upserts=[a1]))
        assert await store.count() == 1

    async def test_round_trip_keeps_every_field(self, store: StateStore) -> None:
        odd = cluster(
            "ünï:çødé",
            d=512,
            n=2,
            streams=("a", "b", "c"),
            retention_ms=3,
            first_time=-5,
            last_time=2**62,
            pending=6,
            pending_since=7,
            last_emit_time=8,
            emitted=True,
            model_id="ĳ",
            type="body",
            track="door/ü7",
            track_time=9,
        )
        empty = cluster("empty", d=0)
        await put(store, odd, empty)
        got = await store.get([odd.key, empty.key])
        assert_same(got[odd.key], odd)
        assert_same(got[empty.key], empty)

    async def test_conflict_names_keys_and_writes_nothing(self, store: StateStore) -> None:
        await put(store, cluster("a"), **{"t:0": 1})
        before = await snapshot(store)
        commit = Commit(
            expected={"cam:a": 1, "cam:b": 3, "cam:c": 0},
            upserts=[cluster("a", 2), cluster("b", 4), cluster("c", 1)],
            deletions=["cam:a"],
            outbox=[record(1)],
            offsets={"t:0": 2},
        )
        with pytest.raises(VersionConflict) as err:
            await store.commit(commit)
        assert err.value.keys == ["cam:b"]
        assert await snapshot(store) == before
        with pytest.raises(VersionConflict) as err:
            await store.commit(Commit(expected={"cam:a": 0}, upserts=[cluster("a")]))
        assert err.value.keys == ["cam:a"]
        assert await snapshot(store) == before

    async def test_replay_raises_already_applied_and_writes_nothing(
        self, store: StateStore
    ) -> None:
        batch = Commit(
            expected={"cam:a": 0},
            upserts=[cluster("a")],
            outbox=[record(1)],
            offsets={"t:0": 10, "t:1": 4},
        )
        await store.commit(batch)
        before = await snapshot(store)
        for replay in (
            batch,
            Commit(offsets={"t:0": 9}),
            Commit(upserts=[cluster("b")], offsets={"t:0": 11, "t:1": 4}),
            Commit(expected={"cam:a": 1}, deletions=["cam:a"], offsets={"t:1": 3}),
        ):
            with pytest.raises(AlreadyApplied, match="is not past stored offset"):
                await store.commit(replay)
            assert await snapshot(store) == before
        await store.commit(Commit(offsets={"t:0": 11, "t:2": 0}))
        assert await store.offsets() == {"t:0": 11, "t:1": 4, "t:2": 0}

    async def test_generation_is_claimed_once_and_lost_with_the_data(
        self, store: StateStore
    ) -> None:
        assert await store.generation() is None
        assert await store.claim_generation("g1") == "g1"
        assert await store.claim_generation("g2") == "g1"  # the first claim stays in force
        await store.commit(Commit(upserts=[cluster("a")], offsets={"t:0": 1}, generation="g1"))
        await store.clear()  # what a Redis restarted empty looks like
        assert await store.generation() is None
        empty = await snapshot(store)
        with pytest.raises(StoreLost, match="g1"):
            await store.commit(Commit(upserts=[cluster("b")], offsets={"t:0": 2}, generation="g1"))
        assert await snapshot(store) == empty
        assert await store.claim_generation("g2") == "g2"
        with pytest.raises(StoreLost):
            await store.commit(Commit(offsets={"t:0": 2}, generation="g1"))
        await store.commit(Commit(offsets={"t:0": 2}, generation="g2"))
        await store.commit(Commit(offsets={"t:0": 3}))  # no generation named: not checked

    async def test_partial_replay_is_refused_by_its_first_offset(self, store: StateStore) -> None:
        await store.commit(Commit(offsets={"t:0": 10}, first_offsets={"t:0": 0}))
        before = await snapshot(store)
        # Offsets 8..12: its last is past the stored 10, but 8..10 were applied already.
        overlapping = Commit(
            expected={"cam:a": 0},
            upserts=[cluster("a")],
            offsets={"t:0": 12, "t:1": 3},
            first_offsets={"t:0": 8, "t:1": 0},
        )
        with pytest.raises(AlreadyApplied, match=r"t:0@8 is not past stored offset 10"):
            await store.commit(overlapping)
        assert await snapshot(store) == before
        resumed = dataclasses.replace(overlapping, first_offsets={"t:0": 11, "t:1": 0})
        await store.commit(resumed)
        assert await store.offsets() == {"t:0": 12, "t:1": 3}

    async def test_get_leaves_absent_keys_out(self, store: StateStore) -> None:
        assert await store.get([]) == {}
        assert await store.get(["cam:nope"]) == {}
        await put(store, cluster("a"))
        assert list(await store.get(["cam:nope", "cam:a", "cam:zip"])) == ["cam:a"]

    async def test_load_all_returns_exactly_what_was_written(self, store: StateStore) -> None:
        assert [chunk async for chunk in store.load_all()] in ([], [[]])
        written = {}
        for start in range(0, 2500, 500):
            batch = [cluster(f"c{i}", version=1 + i % 3, d=8) for i in range(start, start + 500)]
            await store.commit(Commit(upserts=batch))
            written.update((c.key, c) for c in batch)
        chunks = [chunk async for chunk in store.load_all(chunk=700)]
        assert len(chunks) >= 4
        assert all(0 < len(chunk) <= 700 for chunk in chunks)
        loaded = [c for chunk in chunks for c in chunk]
        assert sorted(c.key for c in loaded) == sorted(written)
        for c in loaded:
            assert_same(c, written[c.key])
        assert await store.count() == 2500

    async def test_load_all_can_stop_early(self, store: StateStore) -> None:
        await store.commit(Commit(upserts=[cluster(f"c{i}") for i in range(300)]))
        async for chunk in store.load_all(chunk=50):
            assert len(chunk) <= 50
            break
        assert await store.count() == 300
        assert len(await store.get(["cam:c0", "cam:c299"])) == 2

    async def test_changes_follow_upserts_and_deletions(self, store: StateStore) -> None:
        start = await store.change_cursor()
        assert start == "0-0"
        empty = await store.changes(start)
        assert (empty.cursor, list(empty.upserts), list(empty.deletions)) == (start, [], [])
        await put(store, cluster("a"), cluster("b"))
        batch = await store.changes(start)
        assert not batch.reset
        assert sorted(c.key for c in batch.upserts) == ["cam:a", "cam:b"]
        assert batch.cursor == await store.change_cursor() != start
        await store.commit(Commit(expected={"cam:a": 1}, deletions=["cam:a"]))
        await put(store, cluster("b", 2), cluster("c"))
        await put(store, cluster("b", 3))
        later = await store.changes(batch.cursor)
        assert list(later.deletions) == ["cam:a"]
        assert sorted((c.key, c.version) for c in later.upserts) == [("cam:b", 3), ("cam:c", 1)]
        assert_same(next(c for c in later.upserts if c.key == "cam:b"), cluster("b", 3))
        end = await store.changes(later.cursor)
        assert (end.cursor, list(end.upserts), list(end.deletions)) == (later.cursor, [], [])

    async def test_a_follower_skips_its_own_writes(self, store: StateStore) -> None:
        start = await store.change_cursor()
        await store.commit(Commit(upserts=[cluster("mine"), cluster("both")], writer="w1"))
        await store.commit(Commit(expected={"cam:both": 1}, upserts=[cluster("both", 2)],
                                  writer="w2"))
        await store.commit(Commit(upserts=[cluster("anon")]))
        await store.commit(Commit(expected={"cam:mine": 1}, deletions=["cam:mine"], writer="w1"))
        batch = await store.changes(start, skip_writer="w1")
        # w2's and the anonymous change; w1's upsert and deletion are left out
        assert sorted((c.key, c.version) for c in batch.upserts) == [("cam:anon", 1),
                                                                     ("cam:both", 2)]
        assert list(batch.deletions) == []
        assert batch.cursor == await store.change_cursor()
        everything = await store.changes(start)
        assert sorted(c.key for c in everything.upserts) == ["cam:anon", "cam:both"]
        assert list(everything.deletions) == ["cam:mine"]
        await store.commit(Commit(upserts=[cluster("late")], writer="w1"))
        tail = await store.changes(batch.cursor, skip_writer="w1")
        assert (list(tail.upserts), tail.cursor) == ([], await store.change_cursor())

    async def test_changes_page_by_limit(self, store: StateStore) -> None:
        cursor = await store.change_cursor()
        for i in range(7):
            await put(store, cluster(f"p{i}"))
        seen: list[str] = []
        for _ in range(4):
            page = await store.changes(cursor, limit=2)
            assert len(page.upserts) <= 2
            seen += [c.key for c in page.upserts]
            cursor = page.cursor
        assert seen == [f"cam:p{i}" for i in range(7)]

    async def test_trimmed_cursor_asks_for_reset(self, make_store: MakeStore) -> None:
        store = await make_store(changes_maxlen=10)
        old = await store.change_cursor()
        await put(store, cluster("first"))
        after_first = (await store.changes(old)).cursor
        for i in range(600):
            await put(store, cluster(f"x{i}"))
        assert (await store.changes(old)).reset
        assert (await store.changes(after_first)).reset
        recent = await store.change_cursor()
        await put(store, cluster("last"))
        fresh = await store.changes(recent)
        assert not fresh.reset
        assert [c.key for c in fresh.upserts] == ["cam:last"]

    async def test_clear_forgets_everything_and_old_cursors(self, store: StateStore) -> None:
        await store.commit(Commit(upserts=[cluster("a")], outbox=[record(1)], offsets={"t:0": 1}))
        seen = await store.change_cursor()
        await store.clear()
        assert await store.count() == 0
        assert await store.get(["cam:a"]) == {}
        assert await store.offsets() == {}
        assert await store.outbox_pending() == []
        assert await store.change_cursor() == "0-0"
        assert (await store.changes(seen)).reset
        assert not (await store.changes("0-0")).reset
        await put(store, cluster("b"))
        assert (await store.changes(seen)).reset
        assert [c.key for c in (await store.changes("0-0")).upserts] == ["cam:b"]
        if isinstance(store, RedisStore):
            await store.clear()
            assert await store._redis.keys(f"{{{store.namespace}}}*") == []

    async def test_outbox_keeps_commit_order_until_acked(self, store: StateStore) -> None:
        await store.commit(Commit(outbox=[record(1), record(2)]))
        await store.commit(Commit(upserts=[cluster("a")], outbox=[record(3)]))
        await store.commit(Commit(outbox=[record(4), record(5)]))
        pending = await store.outbox_pending()
        assert [e.record for e in pending] == [record(n) for n in range(1, 6)]
        assert len({e.entry_id for e in pending}) == 5
        assert [e.record for e in await store.outbox_pending(limit=2)] == [record(1), record(2)]
        await store.outbox_ack(pending[:3])
        await store.outbox_ack(pending[:1])
        assert [e.record for e in await store.outbox_pending()] == [record(4), record(5)]
        await store.outbox_ack(await store.outbox_pending())
        assert await store.outbox_pending() == []

    async def test_offsets_are_stored_with_the_commit(self, store: StateStore) -> None:
        assert await store.offsets() == {}
        await put(store, cluster("a"), **{"cam-a:0": 5, "cam-b:3": 0})
        await store.commit(Commit(offsets={"cam-a:0": 2**40}))
        assert await store.offsets() == {"cam-a:0": 2**40, "cam-b:3": 0}

    async def test_event_times_only_grow_and_remember_when_they_moved(
        self, store: StateStore
    ) -> None:
        assert await store.clock() == ClockState()
        times = {"cam-a:0": 5_000, "cam-b:0": -3}
        await store.commit(Commit(offsets={"cam-a:0": 1}, event_times=times, active_ms=10))
        await store.commit(Commit(offsets={"cam-a:0": 2}, event_times={"cam-a:0": 4_000},
                                  active_ms=20))
        state = await store.clock()
        assert state.partitions == {
            "cam-a:0": PartitionTime(5_000, 20), "cam-b:0": PartitionTime(-3, 10)
        }

    async def test_frontiers_are_the_latest_published_with_when(self, store: StateStore) -> None:
        await store.publish_frontiers({"cam-a:0": 7_000, "cam-a:1": NOT_HOLDING}, 10)
        await store.publish_frontiers({"cam-a:0": 7_200, "cam-b:0": UNKNOWN}, 20)
        await store.publish_frontiers({}, 30)
        assert (await store.clock()).frontiers == {
            "cam-a:0": PartitionTime(7_200, 20), "cam-a:1": PartitionTime(NOT_HOLDING, 10),
            "cam-b:0": PartitionTime(UNKNOWN, 20),
        }
        await store.clear()
        assert await store.clock() == ClockState()

    async def test_the_merge_clock_moves_once_per_boundary(self, store: StateStore) -> None:
        await store.commit(Commit(merge_clock=(None, 1_000)))
        with pytest.raises(ClockMoved) as moved:
            await store.commit(Commit(merge_clock=(None, 1_000), offsets={"t:0": 1}))
        assert moved.value.held == 1_000
        assert await store.offsets() == {}  # nothing of a refused commit lands
        await store.commit(Commit(merge_clock=(1_000, 2_000)))
        with pytest.raises(ClockMoved):
            await store.commit(Commit(merge_clock=(1_000, 2_000)))
        assert (await store.clock()).merge_last == 2_000

    async def test_a_failed_rebuild_releases_only_its_own_claim(self, store: StateStore) -> None:
        assert await store.claim_generation("rebuilding:a", ttl_s=60) == "rebuilding:a"
        await store.release_generation("rebuilding:b")
        assert await store.generation() == "rebuilding:a"
        await store.release_generation("rebuilding:a")
        assert await store.generation() is None

    async def test_a_config_is_stored_in_versions_and_a_stale_writer_is_refused(
        self, store: StateStore
    ) -> None:
        assert await store.config() is None
        await store.commit(Commit(config_version=0, new_config=b'{"a": 1}'))
        assert await store.config() == StoredConfig(1, b'{"a": 1}')
        with pytest.raises(ConfigChanged) as changed:
            await store.commit(Commit(upserts=[cluster("a")], config_version=0))
        assert changed.value.held == 1
        assert await store.count() == 0
        await store.commit(Commit(upserts=[cluster("a")], config_version=1))
        await store.commit(Commit(upserts=[cluster("b")]))  # unchecked
        assert await store.count() == 2

    async def test_namespaces_are_isolated(self, make_store: MakeStore) -> None:
        one, two = await make_store("-one"), await make_store("-two")
        await one.commit(Commit(upserts=[cluster("a")], outbox=[record(1)], offsets={"t:0": 1}))
        assert await two.count() == 0
        assert await two.get(["cam:a"]) == {}
        assert await two.offsets() == {}
        assert await two.outbox_pending() == []
        await two.commit(Commit(upserts=[cluster("b")], offsets={"t:0": 1}))
        await one.clear()
        assert list(await two.get(["cam:b"])) == ["cam:b"]
        assert await one.count() == 0


def test_codec_layout_follows_cluster_fields() -> None:
    """Blobs pass fields positionally: a new or moved field must change the codec's FORMAT."""
    names = tuple(f.name for f in dataclasses.fields(Cluster))
    assert names[1:] == LAYOUT


def test_blobs_written_before_track_linking_still_decode() -> None:
    """Blobs stored before the track fields existed read as untracked clusters."""
    plain = cluster("a", n=3, version=2)
    earlier = msgpack.unpackb(encode_cluster(plain))[:-2]
    back = decode_cluster(msgpack.packb(earlier, use_bin_type=True))
    assert_same(back, plain)
    assert (back.track, back.track_time) == ("", -1)


def test_blobs_of_the_accumulator_format_still_decode() -> None:
    """A store written when blobs held the accumulator itself reads as its unit and norm."""
    plain = cluster("a", n=3, version=2)
    fields = msgpack.unpackb(encode_cluster(plain))
    state = (plain.unit.astype(np.float64) * plain.norm).astype("<f4")
    older = [1, *fields[1:4], state.tobytes(), *fields[6:]]
    back = decode_cluster(msgpack.packb(older, use_bin_type=True))
    np.testing.assert_allclose(back.unit, plain.unit, rtol=0, atol=1e-7)
    assert back.norm == pytest.approx(plain.norm, rel=1e-7)
    assert dataclasses.replace(back, unit=None, norm=0) == dataclasses.replace(
        plain, unit=None, norm=0
    )


def test_codec_takes_numpy_scalars() -> None:
    plain = cluster("a", n=3, version=2)
    numpyish = dataclasses.replace(plain, num_observations=np.int64(3), realized=np.bool_(True))
    assert_same(decode_cluster(encode_cluster(numpyish)), plain)


def test_safe_url_hides_passwords() -> None:
    assert safe_url("redis://:s3cret@host:6380/2") == "redis://host:6380/2"
    assert safe_url("rediss://me:s3cret@[::1]:6380/0?password=x") == "rediss://me@[::1]:6380/0"


def test_errors_are_sorted() -> None:
    from redis import exceptions as rx

    assert classify(rx.AuthenticationError("no")) == "fatal"
    assert classify(rx.BusyLoadingError("loading")) == "retry"
    assert classify(rx.TimeoutError("slow")) == "retry"
    assert classify(rx.ConnectionError("gone")) == "reconnect"
    assert classify(rx.ReadOnlyError("replica")) == "reconnect"
    assert classify(rx.ResponseError("WRONGTYPE")) == "fatal"


async def test_unreachable_redis_is_store_unavailable_without_password() -> None:
    store = RedisStore("redis://:s3cret@127.0.0.1:1/0", retries=0, socket_timeout=1.0)
    with pytest.raises(StoreUnavailable) as err:
        await store.start()
    assert "127.0.0.1:1" in str(err.value)
    assert "s3cret" not in str(err.value)
    await store.close()


@pytest.fixture
async def cutting_proxy(redis_url: str) -> AsyncIterator[tuple[CuttingProxy, str]]:
    """A proxy in front of the real Redis, and the URL that goes through it."""
    parsed = urlparse(redis_url)
    proxy = CuttingProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379)
    address = await proxy.start()
    try:
        yield proxy, parsed._replace(netloc=address).geturl()
    finally:
        await proxy.close()


async def test_reply_lost_in_flight_is_retried_per_policy(
    cutting_proxy: tuple[CuttingProxy, str], unique: str
) -> None:
    """retries=2 re-sends on a new connection; retries=0 names the reconnect, then recovers."""
    proxy, url = cutting_proxy
    patient, impatient = RedisStore(url, unique), RedisStore(url, unique, retries=0)
    try:
        for store in (patient, impatient):
            await store.start()
        proxy.cut_next_reply()
        assert await patient.count() == 0
        assert proxy.cuts == 1
        proxy.cut_next_reply()
        with pytest.raises(StoreUnavailable, match=r"count failed \(reconnect\)"):
            await impatient.count()
        assert proxy.cuts == 2
        assert await impatient.count() == 0
    finally:
        await patient.clear()
        await patient.close()
        await impatient.close()


async def test_commit_applied_but_reply_lost_is_not_applied_twice(
    cutting_proxy: tuple[CuttingProxy, str], unique: str
) -> None:
    """redis-py's retry of a commit whose reply was lost fails its offset check."""
    proxy, url = cutting_proxy
    store = RedisStore(url, unique)
    await store.start()
    try:
        proxy.cut_next_reply()
        with pytest.raises(AlreadyApplied, match="is not past stored offset"):
            await put(store, cluster("a"), **{"t:0": 5})
        assert proxy.cuts == 1
        assert await store.offsets() == {"t:0": 5}
        assert (await store.get(["cam:a"]))["cam:a"].version == 1
    finally:
        await store.clear()
        await store.close()


async def test_the_servers_persistence_settings_are_checked(redis_url: str, unique: str) -> None:
    """The local Redis keeps nothing on disk: a worker must be told what that risks."""
    store = RedisStore(redis_url, unique)
    await store.start()
    try:
        problems = await store.persistence_problems()
    finally:
        await store.close()
    assert any("appendonly is not yes" in p for p in problems)
    assert await MemoryStore().persistence_problems() == []


async def test_connection_closed_while_idle_is_replaced(redis_url: str, unique: str) -> None:
    """A pooled connection the server closed while idle: the next call still gets through.

    Nothing was in flight, so this is safe to heal whatever the policy: redis-py 8 replaces the
    connection before sending; older versions fail the send and, with retries, re-send.
    """
    store = RedisStore(redis_url, unique)
    killer = aioredis.from_url(redis_url)
    try:
        await store.start()
        await killer.client_kill_filter(_id=await store._redis.client_id())
        assert await store.count() == 0
    finally:
        await killer.aclose()
        await store.close()


def test_namespace_cannot_break_the_hash_tag() -> None:
    with pytest.raises(ValueError, match="braces"):
        RedisStore("redis://localhost", "a}b")


async def test_wrong_type_is_fatal(redis_url: str, unique: str) -> None:
    store = RedisStore(redis_url, unique)
    await store.start()
    try:
        await store._redis.set(f"{{{unique}}}:clusters", b"not a hash")
        with pytest.raises(aioredis.ResponseError):
            await store.count()
    finally:
        await store.clear()
        await store.close()


def test_memory_store_is_the_default_for_memory_urls() -> None:
    assert isinstance(create_store("memory://"), MemoryStore)
    with pytest.raises(ValueError, match="unsupported"):
        create_store("http://x")
