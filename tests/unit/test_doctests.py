"""The ``>>>`` examples run on a bare ``pytest``, and collecting them changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "agents", "schemas")


def modules_with_examples() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if ">>>" in path.read_text(encoding="utf-8")
    )


def test_testpaths_name_every_module_with_examples() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    covered = [ROOT / p for p in options["ini_options"]["testpaths"]]
    found = modules_with_examples()
    missing = [str(p.relative_to(ROOT)) for p in found
               if not any(p == c or c in p.parents for c in covered)]
    assert found and not missing, f"add to testpaths in pyproject.toml: {missing}"


def test_importing_them_has_no_side_effects() -> None:
    """No output, thread, file or environment variable, and no Kafka or Redis needed."""
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in modules_with_examples()]
    script = (
        "import importlib, json, os, sys, threading\n"
        "import threadpoolctl  # sets KMP_DUPLICATE_LIB_OK when imported; not fvc's doing\n"
        "env, threads, files = dict(os.environ), threading.active_count(), sorted(os.listdir())\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps([dict(os.environ) == env, threading.active_count() - threads,\n"
        "                  sorted(os.listdir()) == files]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=ROOT, timeout=120)
    assert json.loads(done.stdout) == [True, 0, True] and not done.stderr
