"""FAISS indexes against the numpy brute-force oracle, with stated tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from app.config import ClusteringConfig
from app.engine import Engine, Observation
from app.index.faiss_index import FaissIndex, resolve_device
from app.index.numpy_index import NumpyIndex, top_k
from app.index.table import RepresentativeTable
from app.index.timed import TimedIndex
from app.offline.synth import make_scene
from app.worker.metrics import stage_histogram


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, d: int, centres: int) -> np.ndarray:
    mu = unit_rows(rng, centres, d)
    x = mu[rng.integers(0, centres, n)] + 0.05 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def keys_of(index, slots: np.ndarray) -> list[str]:
    return [index.key_at(int(s)) for s in slots]


def test_table_swap_remove_keeps_rows_contiguous() -> None:
    table = RepresentativeTable()
    table.upsert(["a", "b", "c"], np.eye(3, dtype=np.float32))
    moved = table.remove(["a"])
    assert moved == [("c", 2, 0)]
    assert table.keys() == ["c", "b"]
    np.testing.assert_array_equal(table.vectors, np.eye(3, dtype=np.float32)[[2, 1]])
    with pytest.raises(ValueError, match="dimension"):
        table.upsert(["d"], np.ones((1, 4), dtype=np.float32))


def test_updates_take_no_room_in_a_table_sized_for_its_clusters() -> None:
    table = RepresentativeTable()
    table.reserve(1_000)
    keys = [f"k{i}" for i in range(1_000)]
    table.upsert(keys, np.ones((1_000, 8), dtype=np.float32))
    rows = table._mat.shape[0]
    table.upsert(keys[-100:], np.zeros((100, 8), dtype=np.float32))  # a batch of updates
    assert table._mat.shape[0] == rows  # not doubled: at 1M clusters that is 2 GB more
    table.upsert([*keys[:100], "new"], np.ones((101, 8), dtype=np.float32))  # one new key
    assert table._mat.shape[0] == rows and table.slot_of("new") == 1_000


def test_top_k_orders_and_pads() -> None:
    sims = np.array([[0.2, 0.9, 0.5]], dtype=np.float32)
    d, i = top_k(sims, 5)
    assert i.tolist() == [[1, 2, 0, -1, -1]]
    assert np.isneginf(d[0, 3:]).all()


def test_exact_faiss_equals_numpy_after_updates_and_removals() -> None:
    rng = np.random.default_rng(0)
    x = unit_rows(rng, 3000, 32)
    keys = [f"c{i}" for i in range(3000)]
    faiss_index, oracle = FaissIndex("exact", "cpu"), NumpyIndex()
    changed = unit_rows(rng, 100, 32)
    for index in (faiss_index, oracle):
        index.upsert(keys, x)
        index.upsert(keys[:100], changed)
        index.remove(keys[500:700])
    q = unit_rows(rng, 200, 32)
    fd, fi = faiss_index.search(q, 5)
    nd, ni = oracle.search(q, 5)
    assert len(faiss_index) == len(oracle) == 2800
    np.testing.assert_allclose(fd, nd, atol=1e-5)
    assert [keys_of(faiss_index, r) for r in fi] == [keys_of(oracle, r) for r in ni]


def test_half_precision_copies_give_exactly_the_float32_search() -> None:
    rng = np.random.default_rng(3)
    keys = [f"c{i}" for i in range(2000)]
    exact, half = FaissIndex("exact", "cpu"), FaissIndex("exact", "cpu", fp16=True)
    centres = unit_rows(rng, 40, 32)  # crowded: many representatives tie within fp16 rounding
    x = unit_rows(rng, 2000, 32) * 0.3 + centres[rng.integers(0, 40, 2000)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for index in (exact, half):
        index.upsert(keys, x)
    for step in range(20):  # updates (a hot cluster many times over) and removals
        hot = [keys[step % 3]] * 1 + [keys[i] for i in rng.choice(2000, 50, replace=False)]
        moved = unit_rows(rng, len(hot), 32)
        for index in (exact, half):
            index.upsert(hot, moved)
            index.remove(hot[-2:])
            index.upsert(hot[-2:], moved[-2:])
        q = unit_rows(rng, 100, 32) * 0.3 + centres[rng.integers(0, 40, 100)]
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        es, ei = exact.search(q, 8)
        hs, hi = half.search(q, 8)
        assert [keys_of(exact, r) for r in ei] == [keys_of(half, r) for r in hi]
        np.testing.assert_allclose(es, hs, atol=1e-6)  # float32 sums in another order
    assert half.memory_bytes() > exact.memory_bytes()  # the copies are extra here, on the CPU


def test_an_engine_on_half_precision_copies_decides_as_on_float32() -> None:
    scene = make_scene(3_000, seed=5, dim=64)
    streams = [str(s) for s in scene.s.tolist()]
    config = ClusteringConfig.for_threshold(0.5, sorted(set(streams)))
    decisions = []
    for fp16 in (False, True):
        engine = Engine(config, FaissIndex("exact", "cpu", fp16=fp16))
        observations = [
            Observation(scene.X[i], streams[i], f"k{i}", int(scene.t[i]))
            for i in range(scene.n)
        ]
        decisions.append([d for b in range(0, scene.n, 256)
                          for d in engine.step(observations[b : b + 256]).decisions])
    assert [(d.cluster_key, d.created) for d in decisions[0]] == [
        (d.cluster_key, d.created) for d in decisions[1]
    ]


def test_a_query_the_half_precision_scan_leaves_in_doubt_is_searched_again_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    half = FaissIndex("exact", "cpu", fp16=True, candidates=4)
    keys = [f"c{i}" for i in range(100)]
    x = np.tile(unit_rows(np.random.default_rng(4), 1, 16), (100, 1))  # all alike: all in doubt
    x[:, 0] += np.linspace(0.0, 0.1, 100, dtype=np.float32)  # exact order: c99 first
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    half.upsert(keys, x)
    again = []
    exact = half._exact
    monkeypatch.setattr(half, "_exact", lambda q, k: again.append(len(q)) or exact(q, k))
    _, slots = half.search(x[-2:], 4)
    assert again == [2]
    assert keys_of(half, slots[1]) == ["c99", "c98", "c97", "c96"]


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_approximate_indexes_rerank_exactly_and_mostly_agree(kind: str) -> None:
    rng = np.random.default_rng(1)
    x = clustered(rng, 6000, 32, 300)
    keys = [f"c{i}" for i in range(6000)]
    approx = FaissIndex(kind, "cpu", train_min=2000)
    oracle = NumpyIndex()
    for start in range(0, 6000, 1000):
        approx.upsert(keys[start : start + 1000], x[start : start + 1000])
    oracle.upsert(keys, x)
    approx.remove(keys[:50])
    oracle.remove(keys[:50])
    q = clustered(np.random.default_rng(1), 400, 32, 300)
    ad, ai = approx.search(q, 1)
    nd, ni = oracle.search(q, 1)
    pairs = zip(keys_of(approx, ai[:, 0]), keys_of(oracle, ni[:, 0]), strict=True)
    agree = np.mean([a == b for a, b in pairs])
    assert agree >= 0.95
    exact_of_hit = np.einsum("bd,bd->b", q, approx.vectors[ai[:, 0]])
    np.testing.assert_allclose(ad[:, 0], exact_of_hit, atol=1e-5)
    assert all(k not in keys[:50] for k in keys_of(approx, ai[:, 0]))


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_drifted_representatives_are_found_at_their_new_place(kind: str) -> None:
    rng = np.random.default_rng(2)
    x = unit_rows(rng, 3000, 16)
    keys = [f"c{i}" for i in range(3000)]
    index = FaissIndex(kind, "cpu", train_min=1000)
    index.upsert(keys, x)
    moved = unit_rows(rng, 10, 16)
    index.upsert(keys[:10], moved)
    _, slots = index.search(moved, 1)
    assert keys_of(index, slots[:, 0]) == keys[:10]


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_probing_wider_finds_at_least_as_much_without_a_rebuild(kind: str) -> None:
    rng = np.random.default_rng(11)
    x = clustered(rng, 3000, 32, 60)
    queries = x[rng.integers(0, 3000, 200)] + 0.05 * unit_rows(rng, 200, 32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = NumpyIndex()
    exact.upsert([f"k{i}" for i in range(3000)], x)
    index = FaissIndex(kind, "cpu", train_min=1000, nprobe=1, candidates=8)
    index.upsert([f"k{i}" for i in range(3000)], x)
    built = index._ann

    def found() -> int:
        truth = keys_of(exact, exact.search(queries, 1)[1][:, 0])
        got = keys_of(index, index.search(queries, 1)[1][:, 0])
        return sum(g == t for g, t in zip(got, truth, strict=True))

    narrow = found()
    index.probe(nprobe=64, candidates=64)
    assert (index.nprobe, index.candidates) == (64, 64)
    assert index._ann is built  # the same index, searched more widely
    assert found() >= narrow and found() == len(queries)


def test_device_choice() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "gpu")
    with pytest.raises(ValueError, match="kind"):
        FaissIndex("lsh")


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_approximate_indexes_take_updates_of_existing_keys(kind: str) -> None:
    rng = np.random.default_rng(4)
    x = unit_rows(rng, 2000, 16)
    keys = [f"c{i}" for i in range(2000)]
    index = FaissIndex(kind, "cpu", train_min=1000)
    index.upsert(keys, x)
    moved = unit_rows(rng, 5, 16)
    index.upsert(keys[:5], moved)
    index.upsert(keys[:5], moved * 0.999 + 0.001)  # small drift: no re-insertion needed
    _, slots = index.search(moved, 1)
    assert keys_of(index, slots[:, 0]) == keys[:5]


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_ivf_loaded_in_chunks_is_rebuilt_for_its_grown_size(kind: str) -> None:
    rng = np.random.default_rng(5)
    x = clustered(rng, 5000, 16, 50)
    keys = [f"k{i}" for i in range(len(x))]
    # ~100 near-duplicates per centre: enough candidates that each query's own row is among them
    index = FaissIndex(kind, "cpu", train_min=1000, candidates=128)
    index.upsert(keys[:1000], x[:1000])  # built over the first chunk: few lists
    first = index.nlist
    for lo in range(1000, 5000, 1000):  # the rest in chunks, as a bootstrap loads them
        index.upsert(keys[lo : lo + 1000], x[lo : lo + 1000])
    assert index.nlist > first and index._ann.ntotal == 5000
    _, slots = index.search(x[:50], 1)
    assert keys_of(index, slots[:, 0]) == keys[:50]


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_a_bootstrap_builds_the_approximate_index_once_over_everything(kind: str) -> None:
    rng = np.random.default_rng(6)
    x = clustered(rng, 5000, 16, 50)
    keys = [f"k{i}" for i in range(len(x))]
    index = FaissIndex(kind, "cpu", train_min=1000, candidates=128)
    with index.loading():
        for lo in range(0, 5000, 1000):
            index.upsert(keys[lo : lo + 1000], x[lo : lo + 1000])
            assert index._ann is None  # nothing built while loading
    assert index._ann.ntotal == 5000 and index._built_for == 5000
    _, slots = index.search(x[:50], 1)
    assert keys_of(index, slots[:, 0]) == keys[:50]


def test_loading_makes_room_for_the_expected_keys_at_once() -> None:
    index = FaissIndex("exact", "cpu")
    with index.loading(5000):
        index.upsert(["a"], np.ones((1, 8), dtype=np.float32))
        room = index.table._mat.shape[0]
        index.upsert([f"k{i}" for i in range(4000)], np.ones((4000, 8), dtype=np.float32))
        assert index.table._mat.shape[0] == room >= 5000  # never grown, never copied
    assert len(index) == 4001


def test_a_bootstrap_too_small_to_train_on_searches_exactly() -> None:
    rng = np.random.default_rng(7)
    x = unit_rows(rng, 300, 16)
    index = FaissIndex("ivf", "cpu", train_min=1000)
    with index.loading():
        index.upsert([f"k{i}" for i in range(300)], x)
    assert index._ann is None
    _, slots = index.search(x[:5], 1)
    assert slots[:, 0].tolist() == [index.slot_of(f"k{i}") for i in range(5)]


def rotate(v: np.ndarray, towards: np.ndarray, radians: float) -> np.ndarray:
    """``v`` turned by ``radians`` in its plane with ``towards`` (both unit rows)."""
    ortho = towards - np.einsum("nd,nd->n", v, towards)[:, None] * v
    ortho /= np.linalg.norm(ortho, axis=1, keepdims=True)
    return (np.cos(radians) * v + np.sin(radians) * ortho).astype(np.float32)


def test_ivfpq_reinserts_once_small_updates_add_up_to_drift() -> None:
    rng = np.random.default_rng(6)
    x = unit_rows(rng, 2000, 32)
    keys = [f"c{i}" for i in range(2000)]
    index = FaissIndex("ivfpq", "cpu", train_min=1000, reinsert_below=0.995)
    index.upsert(keys, x)
    step = 0.4 * np.arccos(0.995)  # three steps of this exceed the drift allowed
    v, target = x[:3], unit_rows(rng, 3, 32)
    for expected in (2000, 2000, 2003):
        v = rotate(v, target, step)
        index.upsert(keys[:3], v)
        assert index._ann.ntotal == expected
    _, slots = index.search(v, 1)
    assert keys_of(index, slots[:, 0]) == keys[:3]


def test_ivfpq_rebuilds_once_superseded_copies_outnumber_live_ones() -> None:
    rng = np.random.default_rng(7)
    x = unit_rows(rng, 2000, 16)
    keys = [f"c{i}" for i in range(2000)]
    index = FaissIndex("ivfpq", "cpu", train_min=1000)
    index.upsert(keys, x)
    index.upsert(keys, unit_rows(rng, 2000, 16))  # every copy moves far: re-inserted
    assert index._ann.ntotal == 4000  # as many superseded copies as live ones
    index.upsert(keys[:1], unit_rows(rng, 1, 16))
    assert index._ann.ntotal == 2000  # one more: rebuilt from the table
    index.remove(keys[:10])
    _, slots = index.search(index.vectors[:50], 1)
    assert slots[:, 0].tolist() == list(range(50))


def test_ivfpq_defaults_and_memory() -> None:
    rng = np.random.default_rng(8)
    x = unit_rows(rng, 2000, 64)
    keys = [f"c{i}" for i in range(2000)]
    pq, flat = FaissIndex("ivfpq", "cpu", train_min=1000), FaissIndex("ivf", "cpu", train_min=1000)
    assert (pq.nprobe, pq.candidates, flat.nprobe, flat.candidates) == (32, 64, 16, 32)
    for index in (pq, flat):
        index.upsert(keys, x)
    table = x.nbytes
    per_entry_pq = (pq.memory_bytes() - table) / len(x)
    per_entry_flat = (flat.memory_bytes() - table) / len(x)
    assert 8 + 64 // 16 <= per_entry_pq < per_entry_flat / 4


@pytest.mark.parametrize(
    "make",
    [
        NumpyIndex,
        lambda: FaissIndex("exact", "cpu"),
        lambda: TimedIndex(FaissIndex("ivf", "cpu"), stage_histogram()),
    ],
    ids=["numpy", "faiss", "timed"],
)
def test_every_index_the_runtime_may_hold_takes_a_bootstrap_block(make) -> None:  # noqa: ANN001
    index = make()
    x = unit_rows(np.random.default_rng(8), 50, 8)
    with index.loading(50):
        index.upsert([f"k{i}" for i in range(50)], x)
    _, slots = index.search(x[:3], 1)
    assert [index.key_at(int(s)) for s in slots[:, 0]] == ["k0", "k1", "k2"]
