"""``benchmarks/sweep.py`` re-probes one loaded index and scores each setting against exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sweep.py"


def test_sweep_smoke_run() -> None:
    command = [sys.executable, str(SCRIPT), "--clusters", "25000", "--nprobe", "2,32",
               "--candidates", "64", "--observations", "512", "--batch", "256", "--json"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    report = json.loads(out.stdout)
    rows = report["rows"]
    assert [(r["nprobe"], r["candidates"]) for r in rows] == [(2, 64), (2, 64), (32, 64), (32, 64)]
    assert all(r["vectors_per_second"] > 0 for r in rows)
    narrow, wide = rows[0]["agreement"], rows[2]["agreement"]
    assert rows[1]["agreement"] == narrow  # the FAISS thread count does not change decisions
    assert wide >= narrow and wide >= 0.95
