"""Doctests: the ``>>>`` examples in the package sources run as tests.

Every module of ``app``, ``agents`` and ``schemas`` that a run reaches is collected for its
examples: the ones [tool.pytest.ini_options] testpaths names on a bare ``pytest``, or all of a
package given on the command line (``pytest tests/unit app``). Importing any of them must stay
free of side effects and work without Kafka or Redis.

This is ``--doctest-modules`` limited to those packages: the flag itself would also make every
``.py`` under tests/ a doctest module, and tests/ holds several ``conftest.py`` that share a
module name (no ``__init__.py``), which pytest then refuses to import twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule  # pytest's own collector; it has no public name

ROOT = Path(__file__).resolve().parent
PACKAGES = frozenset({"app", "agents", "schemas"})


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> DoctestModule | None:
    """A doctest collector for a package module (not for tests/ or benchmarks/)."""
    if file_path.suffix != ".py" or file_path.name == "__main__.py":
        return None
    if parent.config.option.doctestmodules:
        return None  # an explicit --doctest-modules collects them already
    try:
        top = file_path.resolve().relative_to(ROOT).parts[0]
    except ValueError:
        return None
    if top not in PACKAGES:
        return None
    return DoctestModule.from_parent(parent, path=file_path)
