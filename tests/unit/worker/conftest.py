"""Fixtures for the worker core in process: fake store and producer, settings, no real sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import (
    FlakyStore,
    MakeRuntime,
    RecordingProducer,
    make_config,
    make_settings,
    write_config,
)

from app.config import ClusteringConfig
from app.settings import Settings
from app.store import MemoryStore
from app.worker.runtime import Runtime


@pytest.fixture
def settings() -> Settings:
    """Settings that reach neither Kafka nor Redis."""
    return make_settings()


@pytest.fixture
def config() -> ClusteringConfig:
    """One stream, threshold 0.5, realized at the second sighting."""
    return make_config()


@pytest.fixture
def store() -> FlakyStore:
    """A store that works until a test orders it to fail."""
    return FlakyStore()


@pytest.fixture
def producer() -> RecordingProducer:
    """A Kafka producer that records what it was sent."""
    return RecordingProducer()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Back-off delays the code asks for, recorded and not slept, so retries cost no time."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: object = None) -> object:
        asked.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return asked


@pytest.fixture
async def make_runtime(
    tmp_path: Path, settings: Settings, config: ClusteringConfig
) -> AsyncIterator[MakeRuntime]:
    """Started runtimes over a given store (a fresh ``FlakyStore`` by default), stopped after."""
    started: list[Runtime] = []
    path = write_config(tmp_path, config)

    async def make(store: MemoryStore | FlakyStore | None = None) -> Runtime:
        runtime = Runtime(settings, path, store=store or FlakyStore())
        await runtime.start()
        if isinstance(runtime.store, FlakyStore):  # tests count what comes after the start
            runtime.store.calls.clear()
            runtime.store.applied.clear()
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        await runtime.stop()
