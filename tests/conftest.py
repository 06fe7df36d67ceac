"""Shared fixtures: the real local services, a unique namespace for each test, UVAP's messages.

Integration tests use the Kafka broker and Redis server that ``fvc local up`` starts (or that
``FVC_KAFKA_BOOTSTRAP`` / ``FVC_REDIS_URL`` point at). Locally they skip when a service is down;
with ``FVC_REQUIRE_SERVICES=1`` (as in CI) a missing service fails the test instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

from tests.support.gate import require
from tests.support.uvap_proto import UvapMessages, compile_messages

KAFKA = os.environ.get("FVC_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS = os.environ.get("FVC_REDIS_URL", "redis://127.0.0.1:6379/0")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _need(name: str, host: str, port: int) -> None:
    message = f"{name} is not reachable at {host}:{port} (run `fvc local up`)"
    require(_answers(host, port), message)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of the real Kafka broker."""
    host, _, port = KAFKA.split(",")[0].rpartition(":")
    _need("Kafka", host or "127.0.0.1", int(port))
    return KAFKA


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis server."""
    parsed = urlparse(REDIS)
    _need("Redis", parsed.hostname or "127.0.0.1", parsed.port or 6379)
    return REDIS


@pytest.fixture
def unique() -> str:
    """A short unique name for this test's topics, groups and namespaces."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def uvap(tmp_path_factory: pytest.TempPathFactory) -> UvapMessages:
    """UVAP's FVC messages, compiled from tests/proto/uvap_fvc.proto for this session."""
    return compile_messages(tmp_path_factory.mktemp("uvap-proto"))
