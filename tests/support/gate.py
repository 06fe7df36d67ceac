"""The gate in front of tests that need a real service or tool (Kafka, Redis, helm, java...).

Locally a missing one skips the test with the reason; with ``FVC_REQUIRE_SERVICES=1`` (as in CI)
it fails the test instead, so a green CI always means the real thing was used.
"""

from __future__ import annotations

import os

import pytest


def require(condition: bool, message: str) -> None:
    """Go on when ``condition`` holds; otherwise skip (locally) or fail (CI) with ``message``."""
    if condition:
        return
    if os.environ.get("FVC_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
