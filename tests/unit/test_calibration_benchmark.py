"""``benchmarks/calibration.py`` calibrates each stream on its start and scores it on all of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "calibration.py"


def test_calibration_benchmark_smoke_run() -> None:
    command = [sys.executable, str(SCRIPT), "--people", "10", "--seeds", "1,2",
               "--lfw-orders", "", "--json"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    report = json.loads(out.stdout)
    rows = report["rows"]
    assert [r["stream"] for r in rows] == ["modern-10 seed 1", "modern-10 seed 2"]
    for row in rows:
        assert row["sample"] == 120 and row["vectors"] == 400
        assert 0.0 < row["whole_precision"] <= 1.0 and 0.0 < row["whole_recall"] <= 1.0
        # the chosen setting is one of the candidates, so the best of them is at least as good
        # whenever the chosen one reaches the target
        if row["whole_precision"] >= report["target_precision"]:
            assert row["best_candidate_recall"] >= row["whole_recall"]
        assert row["in_band"] == (0.98 <= row["whole_precision"] <= 0.99)
        low, high = row["expected_precision_range"]
        assert low <= row["expected_precision"] <= high
        assert row["in_range"] == (low <= row["whole_precision"] <= high)
        assert row["sample_mistakes"] >= 0 and row["sample_for_band"] >= row["sample"]
