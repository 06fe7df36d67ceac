"""The store a deployment's settings name."""

from __future__ import annotations

from app.settings import Settings
from app.store import MemoryStore, create_store, store_for


def test_tls_switch_turns_the_url_into_rediss() -> None:
    store = store_for(Settings.from_env({"FVC_REDIS_TLS": "true", "FVC_NAMESPACE": "ns"}))
    assert store._url.startswith("rediss://")
    assert store.namespace == "ns"


def test_memory_urls_give_a_memory_store() -> None:
    assert isinstance(create_store("memory://"), MemoryStore)
