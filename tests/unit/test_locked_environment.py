"""The environment the tests run in holds exactly what uv.lock pins, nothing more or less.

``make venv`` installs from the lock and writes the lock's pins for this environment (uv's
export, with markers) next to it; a package installed by hand, or a lock refreshed without
``make venv``, shows up here as a difference.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PINS = Path(sys.prefix) / "locked-requirements.txt"


def _locked() -> dict[str, str]:
    """Name -> version of every pin whose markers hold here."""
    pins = {}
    for line in PINS.read_text().splitlines():
        if not line or line.startswith(("#", " ")):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            (spec,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def _installed() -> dict[str, str]:
    """Name -> version of every distribution in this environment but fvc itself."""
    found = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    found.pop("fvc", None)
    return found


@pytest.mark.skipif(not PINS.exists(), reason=f"not a `make venv` environment ({PINS} absent)")
def test_environment_equals_the_lock() -> None:
    locked, installed = _locked(), _installed()
    assert {n: v for n, v in installed.items() if locked.get(n) != v} == {}, "not as locked"
    assert sorted(set(locked) - set(installed)) == [], "locked but not installed"
    assert "redis" in locked and "numpy" in locked
