"""``RedisStore`` against a real multi-node Redis Cluster started on loopback ports.

The whole state-store contract runs again over a cluster store (the contract class is reused,
only its store fixture changes), then what is particular to a cluster: each namespace lives in
one slot on one master, two namespaces on different masters both work, two processes racing on
one namespace add up exactly, a cluster that is down reads as ``StoreUnavailable`` and the same
store recovers once it is back, and the costs of commit and load_all beside the single node.

The cluster is ``app.dev.local.redis_cluster.LocalRedisCluster`` (3 masters, no replicas), started
once for the module. Without ``redis-server``/``redis-cli`` the tests skip; with
``FVC_REQUIRE_SERVICES=1`` (as in CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis import exceptions as rx
from store_race import race

from app.dev.local.redis_cluster import LocalRedisCluster, find_binaries
from app.errors import LocalStackError, StoreUnavailable
from app.settings import Settings
from app.store import Commit, StateStore, create_store, store_for
from app.store.guard import safe_url
from app.store.redis import RedisStore, split_cluster_url
from tests.contract import test_store as contract
from tests.support.gate import require

pytestmark = [pytest.mark.integration]



def _need_binaries() -> None:
    """Skip (or fail under FVC_REQUIRE_SERVICES=1) when the Redis binaries are missing."""
    try:
        find_binaries()
    except LocalStackError as exc:
        require(False, str(exc))


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A 3-master local Redis Cluster for this module, stopped afterwards."""
    _need_binaries()
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: LocalRedisCluster) -> str:
    """The cluster's store URL, every node a seed."""
    return redis_cluster.url


@pytest.fixture
async def make_store(cluster_url: str, unique: str) -> AsyncIterator[contract.MakeStore]:
    """The contract's ``make_store``, over the cluster: stores in this test's namespace."""
    async for make in contract.store_opener(cluster_url, unique):
        yield make


@pytest.fixture
async def store(make_store: contract.MakeStore) -> StateStore:
    """One fresh cluster store."""
    return await make_store()


class TestStateStoreOnCluster(contract.TestStateStore):
    """Every behaviour of the contract suite, on the cluster store."""


def _keys_by_node(cluster: LocalRedisCluster, namespace: str) -> dict[int, list[bytes]]:
    """Which node holds which keys of ``namespace``, asking every node directly.

    No client routing in between.
    """
    found = {}
    for port in cluster.ports:
        with redis.Redis("127.0.0.1", port) as node:
            found[port] = sorted(node.keys(f"{{{namespace}}}*"))
    return found


def _namespaces_on_distinct_masters(cluster: LocalRedisCluster, prefix: str) -> list[str]:
    """Two namespaces whose slots are served by two different masters."""
    owners: dict[int, str] = {}
    for i in range(200):
        namespace = f"{prefix}-{i}"
        owners.setdefault(cluster.port_for_slot(RedisStore("redis://x", namespace).slot), namespace)
        if len(owners) == 2:
            return list(owners.values())
    raise AssertionError("no two namespaces on different masters in 200 tries")


async def _workload(store: StateStore, prefix: str) -> None:
    """Every store operation once, so every command it issues reaches the cluster."""
    batch = [contract.cluster(f"{prefix}{i}", d=16) for i in range(50)]
    await contract.put(store, *batch, **{"t:0": 1})
    await store.commit(
        Commit(expected={batch[0].key: 1}, deletions=[batch[0].key], outbox=[contract.record(1)])
    )
    assert len(await store.get([c.key for c in batch])) == 49
    assert sum([len(chunk) async for chunk in store.load_all(chunk=10)]) == 49
    assert len((await store.changes("0-0")).upserts) == 49
    assert await store.change_cursor() != "0-0"
    await store.outbox_ack(await store.outbox_pending())
    assert await store.offsets() == {"t:0": 1}
    assert await store.count() == 49


async def test_namespace_keys_share_one_slot_on_one_node(
    redis_cluster: LocalRedisCluster, make_store: contract.MakeStore, unique: str
) -> None:
    store = await make_store()
    assert isinstance(store, RedisStore) and store.cluster
    await _workload(store, "w")
    holders = {port: keys for port, keys in _keys_by_node(redis_cluster, unique).items() if keys}
    owner = redis_cluster.port_for_slot(store.slot)
    assert list(holders) == [owner]
    kinds = ("changes", "clusters", "offsets", "outbox", "versions")  # an emptied stream stays
    names = [f"{{{unique}}}:{kind}" for kind in kinds]
    assert holders[owner] == [name.encode() for name in names]
    with redis.Redis("127.0.0.1", owner) as node:
        assert node.execute_command("CLUSTER COUNTKEYSINSLOT", store.slot) == len(names)
    await store.clear()
    assert not any(_keys_by_node(redis_cluster, unique).values())


async def test_two_namespaces_on_different_masters_both_work(
    redis_cluster: LocalRedisCluster, make_store: contract.MakeStore, unique: str
) -> None:
    one_ns, two_ns = _namespaces_on_distinct_masters(redis_cluster, unique)
    one = await make_store(one_ns.removeprefix(unique))
    two = await make_store(two_ns.removeprefix(unique))
    assert isinstance(one, RedisStore) and isinstance(two, RedisStore)
    owners = [redis_cluster.port_for_slot(s.slot) for s in (one, two)]
    assert owners[0] != owners[1]
    await asyncio.gather(_workload(one, "a"), _workload(two, "b"))
    for store, prefix, owner in ((one, "a", owners[0]), (two, "b", owners[1])):
        keys = {c.key for c in (await store.changes("0-0")).upserts}
        assert keys == {f"cam:{prefix}{i}" for i in range(1, 50)}
        placed = _keys_by_node(redis_cluster, store.namespace)
        assert [port for port, found in placed.items() if found] == [owner]


async def test_load_all_returns_exactly_what_was_written_at_scale(
    make_store: contract.MakeStore,
) -> None:
    store = await make_store()
    written = {}
    for start in range(0, 20_000, 2_000):
        batch = [
            contract.cluster(f"c{i}", version=1 + i % 5, n=i, d=128)
            for i in range(start, start + 2_000)
        ]
        await store.commit(Commit(upserts=batch))
        written.update((c.key, c) for c in batch)
    chunks = [chunk async for chunk in store.load_all(chunk=3_000)]
    assert all(0 < len(chunk) <= 3_000 for chunk in chunks)
    loaded = [c for chunk in chunks for c in chunk]
    assert len(loaded) == len(written) == await store.count()
    for c in loaded:
        contract.assert_same(c, written[c.key])


async def test_slot_moves_are_followed(
    redis_cluster: LocalRedisCluster, make_store: contract.MakeStore
) -> None:
    """The namespace's slot moves to another master while the store is open.

    Reads follow ASK redirects mid-move, a commit whose keys are split between the nodes is
    StoreUnavailable (TRYAGAIN until the client gives up), and after the move MOVED is followed.
    """
    store = await make_store()
    assert isinstance(store, RedisStore)
    await contract.put(store, contract.cluster("a"), contract.cluster("b"), **{"t:0": 1})
    source = redis_cluster.port_for_slot(store.slot)
    target = next(port for port in redis_cluster.ports if port != source)
    redis_cluster.begin_slot_move(store.slot, target)
    redis_cluster.migrate_keys(store.slot, target, [store._clusters])
    assert sorted(await store.get(["cam:a", "cam:b"])) == ["cam:a", "cam:b"]  # ASK
    assert await store.offsets() == {"t:0": 1}  # not moved yet: served by the source
    with pytest.raises(StoreUnavailable, match="TTL exhausted|TRYAGAIN"):
        await contract.put(store, contract.cluster("c"), **{"t:0": 2})
    redis_cluster.finish_slot_move(store.slot, target)
    assert redis_cluster.port_for_slot(store.slot) == target
    await contract.put(store, contract.cluster("c"), **{"t:0": 2})  # MOVED, then applied
    assert await store.count() == 3
    assert sorted(c.key for c in (await store.changes("0-0")).upserts) == [
        "cam:a",
        "cam:b",
        "cam:c",
    ]


async def test_load_all_across_a_slot_move_asks_to_load_again(
    redis_cluster: LocalRedisCluster, make_store: contract.MakeStore
) -> None:
    """An HSCAN cursor is only valid on the node that issued it.

    A scan the slot moved under may have missed clusters, so it must not end as if it were
    complete.
    """
    store = await make_store()
    assert isinstance(store, RedisStore)
    await store.commit(Commit(upserts=[contract.cluster(f"c{i}") for i in range(3_000)]))
    target = next(p for p in redis_cluster.ports if p != redis_cluster.port_for_slot(store.slot))
    loaded = 0
    with pytest.raises(StoreUnavailable, match="moved during load_all"):
        async for chunk in store.load_all(chunk=100):
            if not loaded:
                redis_cluster.begin_slot_move(store.slot, target)
                redis_cluster.finish_slot_move(store.slot, target)
            loaded += len(chunk)
    assert 0 < loaded
    assert sum([len(chunk) async for chunk in store.load_all(chunk=100)]) == 3_000


@pytest.mark.slow
async def test_racing_processes_lose_no_increment(
    cluster_url: str, make_store: contract.MakeStore, unique: str
) -> None:
    keys, increments = 3, 1500
    reports = await asyncio.to_thread(race, cluster_url, unique, keys, increments)
    store = await make_store()
    clusters = [c for chunk in [x async for x in store.load_all()] for c in chunk]
    assert sum(c.num_observations for c in clusters) == 2 * increments
    for c in clusters:
        commits = sum(int(r["commits"].get(c.key, 0)) for r in reports)
        assert c.version == c.num_observations == commits
        np.testing.assert_array_equal(c.unit, np.full(4, commits, np.float32))
    assert sum(int(r["conflicts"]) for r in reports) > 0
    assert isinstance(store, RedisStore)
    await store._redis.delete(f"{{{unique}}}:test-gate")


async def test_unreachable_cluster_is_store_unavailable_without_password() -> None:
    store = RedisStore("redis+cluster://:s3cret@127.0.0.1:1", retries=0, socket_timeout=1.0)
    with pytest.raises(StoreUnavailable) as err:
        await store.start()
    assert "127.0.0.1:1" in str(err.value)
    assert "s3cret" not in str(err.value)
    await store.close()


async def test_cluster_url_on_a_plain_server_is_fatal(redis_url: str, unique: str) -> None:
    store = RedisStore(redis_url, unique, cluster=True, retries=0)
    with pytest.raises(rx.RedisClusterException, match="Cluster mode is not enabled"):
        await store.start()
    await store.close()


async def test_plain_url_on_a_cluster_node_is_fatal_with_a_hint(
    redis_cluster: LocalRedisCluster, unique: str
) -> None:
    one, _ = _namespaces_on_distinct_masters(redis_cluster, unique)
    owner = redis_cluster.port_for_slot(RedisStore("redis://x", one).slot)
    elsewhere = next(port for port in redis_cluster.ports if port != owner)
    store = RedisStore(f"redis://127.0.0.1:{elsewhere}", one)
    await store.start()
    try:
        with pytest.raises(rx.MovedError) as err:
            await store.count()
        assert any("redis+cluster://" in note for note in err.value.__notes__)
    finally:
        await store.close()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    """A cluster of this test's own, free to be broken."""
    _need_binaries()
    with LocalRedisCluster(tmp_path / "cluster", first_port=17_100) as cluster:
        yield cluster


@pytest.mark.slow
async def test_cluster_down_is_store_unavailable_and_the_store_recovers(
    own_cluster: LocalRedisCluster, unique: str
) -> None:
    """A master stops, and once it is back the same store objects work.

    While it is away its slots are lost, the cluster goes down and every namespace (on the lost
    node or not) reads as StoreUnavailable.
    """
    lost, survivor = own_cluster.ports[0], own_cluster.ports[1]
    on_lost = next(
        s
        for s in (RedisStore(own_cluster.url, f"{unique}-{i}", retries=1) for i in range(200))
        if own_cluster.port_for_slot(s.slot) == lost
    )
    elsewhere = next(
        s
        for s in (RedisStore(own_cluster.url, f"{unique}-{i}", retries=1) for i in range(200))
        if own_cluster.port_for_slot(s.slot) != lost
    )
    for store in (on_lost, elsewhere):
        await store.start()
        await contract.put(store, contract.cluster("a"))
    try:
        own_cluster.stop_node(lost)
        down = await asyncio.to_thread(
            _wait_for, lambda: own_cluster.cluster_info(survivor)["cluster_state"] == "fail"
        )
        assert down, "the survivors never noticed the lost master"
        for store in (on_lost, elsewhere):
            with pytest.raises(StoreUnavailable):
                await store.count()
        own_cluster.start_node(lost)
        await asyncio.to_thread(own_cluster.wait_ready)
        assert await elsewhere.count() == 1
        assert await on_lost.count() == 0  # nothing persisted on the restarted node
        await contract.put(on_lost, contract.cluster("b"))
        assert await on_lost.count() == 1
    finally:
        for store in (on_lost, elsewhere):
            await store.close()


def _wait_for(condition: Any, timeout: float = 30.0) -> bool:
    """Poll ``condition`` every 0.1 s until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_namespace_keys_hash_to_one_slot() -> None:
    from redis.crc import key_slot

    store = RedisStore("redis+cluster://h:1", "ns")
    assert {key_slot(key.encode()) for key in store._keys} == {store.slot}
    assert store.slot != RedisStore("redis+cluster://h:1", "other").slot


def test_cluster_urls() -> None:
    url = "rediss+cluster://me:pw@h1:7000,[::1]:7001,h3/0?ssl_cert_reqs=none"
    first, seeds = split_cluster_url(url)
    assert first == "rediss://me:pw@h1:7000/0?ssl_cert_reqs=none"
    assert seeds == [("h1", 7000), ("::1", 7001), ("h3", 6379)]
    assert safe_url(url) == "rediss+cluster://me@h1:7000,[::1]:7001,h3/0"
    with pytest.raises(ValueError, match="database 0"):
        RedisStore("redis+cluster://h:1/2")
    with pytest.raises(ValueError, match="cluster=False"):
        RedisStore("redis+cluster://h:1", cluster=False)
    assert RedisStore("redis://h:1", cluster=True)._url == "redis+cluster://h:1"
    assert not RedisStore("redis://h:1").cluster


def test_tls_switch_applies_to_cluster_urls() -> None:
    settings = Settings.from_env({"FVC_REDIS_URL": "redis+cluster://h:1", "FVC_REDIS_TLS": "1"})
    store = store_for(settings)
    assert isinstance(store, RedisStore)
    assert store.cluster and store._url == "rediss+cluster://h:1"


# --- costs beside the single node ------------------------------------------------------------

COMMITS = 300
LOADED = 20_000
DIM = 512
ROUNDS = 3


async def _commit_latencies(store: StateStore, batch: int, tag: str) -> list[float]:
    """Seconds per commit of ``batch`` fresh d=512 clusters, ``COMMITS`` times."""
    took = []
    for n in range(COMMITS):
        clusters = [contract.cluster(f"{tag}b{batch}-{n}-{i}", d=DIM) for i in range(batch)]
        started = time.perf_counter()
        await store.commit(Commit(upserts=clusters, offsets={f"{tag}:{batch}": n}))
        took.append(time.perf_counter() - started)
    return sorted(took)


async def _load_all_seconds(store: StateStore) -> float:
    """Seconds to load ``LOADED`` d=512 clusters.

    They are written first, untimed, into a clean namespace.
    """
    await store.clear()
    for start in range(0, LOADED, 1_000):
        batch = [contract.cluster(f"l{i}", d=DIM) for i in range(start, start + 1_000)]
        await store.commit(Commit(upserts=batch))
    started = time.perf_counter()
    count = sum([len(chunk) async for chunk in store.load_all()])
    took = time.perf_counter() - started
    assert count == LOADED
    return took


async def _measure(store: StateStore, tag: str) -> dict[str, float]:
    """Commit latency p50/p99 (ms) at batch 1 and 64, and load_all time (s), one round."""
    figures = {}
    for batch in (1, 64):
        took = await _commit_latencies(store, batch, tag)
        figures[f"commit_b{batch}_ms_p50"] = 1000 * statistics.median(took)
        figures[f"commit_b{batch}_ms_p99"] = 1000 * took[int(0.99 * len(took))]
    figures["load_all_20k_s"] = await _load_all_seconds(store)
    return figures


async def _rounds(stores: dict[str, StateStore]) -> dict[str, dict[str, float]]:
    """The median of each figure over ``ROUNDS`` rounds (a first, unrecorded round warms up).

    The backends take turns within each round, so drift hits both alike.
    """
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
    for round_ in range(ROUNDS + 1):
        for name, store in stores.items():
            figures = await _measure(store, f"r{round_}")
            if round_:
                samples[name].append(figures)
    return {
        name: {key: statistics.median(f[key] for f in runs) for key in runs[0]}
        for name, runs in samples.items()
    }


@pytest.mark.slow
async def test_cluster_costs_about_what_a_single_node_does(
    cluster_url: str, redis_url: str, unique: str
) -> None:
    """Both are one hop to one Redis process, so the medians should be close.

    The figures are printed (and written to $FVC_CLUSTER_FIGURES when set) for
    docs/redis-cluster.md; p99s are reported, not asserted (two cores shared with everything
    else).
    """
    stores = {name: create_store(url, f"{unique}-{name}") for name, url in
              (("single", redis_url), ("cluster", cluster_url))}  # fmt: skip
    try:
        for store in stores.values():
            await store.start()
        figures = await _rounds(stores)
    finally:
        for store in stores.values():
            await store.clear()
            await store.close()
    figures["cluster_to_single"] = {
        key: figures["cluster"][key] / figures["single"][key] for key in figures["single"]
    }
    print(json.dumps(figures, indent=1))
    if out := os.environ.get("FVC_CLUSTER_FIGURES"):
        Path(out).write_text(json.dumps(figures, indent=1))
    for key, ratio in figures["cluster_to_single"].items():
        if "p99" not in key:
            assert ratio < 3, key
