"""Fixtures of the worker integration tests."""

from __future__ import annotations

import pytest
from worker_support import Deployment


@pytest.fixture
def deployment(tmp_path, unique, kafka_bootstrap, redis_url, request):
    """A deployment with its own topics, group and namespace; options via indirect params."""
    options = getattr(request, "param", {})
    d = Deployment(tmp_path, unique, kafka_bootstrap, redis_url, **options)
    yield d
    d.stop_all()
    d.clear()
