"""Builders shared by the engine tests: configs from plain dicts, observations from lists."""

from __future__ import annotations

import numpy as np

from app.config import ClusteringConfig, parse_config
from app.engine.types import Observation


def make_config(
    threshold: float = 0.9,
    *,
    method: str = "SIMPLE_AVERAGE",
    streams: tuple[str, ...] = ("cam",),
    retention_ms: int = 0,
    track_linking: dict | None = None,
    **clustering: object,
) -> ClusteringConfig:
    """A validated config with one threshold for all streams and extra clustering fields."""
    stream_configs = [
        {
            "stream_id": s,
            "fv_field_selector": {"feature_vector_path": "features"},
            "reg_stream_config": {
                "reg_threshold": threshold,
                "cluster_retention_period_ms": retention_ms,
            },
        }
        | ({} if track_linking is None else {"track_linking": track_linking})
        for s in streams
    ]
    data = {
        "clustering_config": {"method": method, **clustering},
        "input_stream_configs": stream_configs,
    }
    return parse_config(data)


def scene(seed: int, n: int, centres: int, noise: float, dim: int = 8) -> list[Observation]:
    """Noisy observations of ``centres`` people on two streams, some counting several times."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(centres, dim))
    labels = rng.integers(0, centres, n)
    x = mu[labels] + noise * rng.normal(size=(n, dim))
    counts = rng.choice([1, 1, 1, 2, 5], n)
    streams = rng.choice(["a", "b"], n)
    return [
        Observation(x[i].astype(np.float32), str(streams[i]), f"k{i}", i, int(counts[i]))
        for i in range(n)
    ]


def obs(
    vector: list[float],
    time: int,
    stream: str = "cam",
    key: str | None = None,
    count: int = 1,
    track: str = "",
) -> Observation:
    """An observation with a readable default key."""
    return Observation(
        np.asarray(vector, dtype=np.float32),
        stream,
        key or f"{time}_0",
        time,
        count=count,
        model_id="m",
        type="PERSON_FACE",
        track=track,
    )


E1 = [1.0, 0.0, 0.0, 0.0]
E2 = [0.0, 1.0, 0.0, 0.0]
E3 = [0.0, 0.0, 1.0, 0.0]
NEAR_E1 = [0.99, 0.141, 0.0, 0.0]  # cosine 0.99 to E1
