"""The GPU path gives the CPU's answers (runs only where FAISS sees a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from app.index.faiss_index import FaissIndex, gpu_count

pytestmark = pytest.mark.skipif(gpu_count() == 0, reason="FAISS sees no GPU here")


@pytest.mark.parametrize("kind", ["exact", "ivf", "ivfpq"])
def test_gpu_search_equals_cpu(kind: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20_000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    keys = [f"c{i}" for i in range(len(x))]
    cpu, gpu = FaissIndex(kind, "cpu", train_min=5000), FaissIndex(kind, "gpu", train_min=5000)
    cpu.upsert(keys, x)
    gpu.upsert(keys, x)
    q = x[:500] + 0.01 * rng.normal(size=(500, 64)).astype(np.float32)
    cd, ci = cpu.search(q, 1)
    gd, gi = gpu.search(q, 1)
    pairs = zip(ci[:, 0], gi[:, 0], strict=True)
    same = np.mean([cpu.key_at(a) == gpu.key_at(b) for a, b in pairs])
    assert same >= 0.99
    np.testing.assert_allclose(cd[:, 0], gd[:, 0], atol=1e-4)


def test_gpu_half_precision_copies_decide_as_float32() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20_000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    keys = [f"c{i}" for i in range(len(x))]
    cpu, gpu = FaissIndex("exact", "cpu"), FaissIndex("exact", "gpu", fp16=True)
    for index in (cpu, gpu):
        index.upsert(keys, x)
        index.upsert(keys[:1000], x[1000:2000])  # updates leave superseded copies on the GPU
    q = x[:500] + 0.01 * rng.normal(size=(500, 64)).astype(np.float32)
    cd, ci = cpu.search(q, 4)
    gd, gi = gpu.search(q, 4)
    found = [[gpu.key_at(s) for s in row] for row in gi]
    assert [[cpu.key_at(s) for s in row] for row in ci] == found
    np.testing.assert_allclose(cd, gd, atol=1e-6)
