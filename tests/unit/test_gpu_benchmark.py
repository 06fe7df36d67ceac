"""The benchmarks of the engine on a GPU and of its planned batches run here, small, on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_smoke_run_on_cpu() -> None:
    command = [sys.executable, str(SCRIPT), "--clusters", "6000", "--batches", "500", "1000",
               "--sample", "300", "--rounds", "1", "--device", "cpu", "--json"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    report = json.loads(out.stdout)
    rows = report["rows"]
    assert [(r["kind"], r["batch"]) for r in rows] == [
        ("exact", 500), ("exact", 1000), ("ivf", 500), ("ivf", 1000)]
    assert all(r["queries_per_second"] > 0 for r in rows)
    assert all(r["agreement_with_cpu_exact"] == 1.0 for r in rows if r["kind"] == "exact")
    assert all(r["agreement_with_cpu_exact"] >= 0.9 for r in rows)


def test_gpu_engine_benchmark_smoke_run_without_a_device() -> None:
    script = SCRIPT.with_name("gpu_engine.py")
    command = [sys.executable, str(script), "--clusters", "3000", "--observations", "1024",
               "--batches", "256", "512", "--check", "512", "--json"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    report = json.loads(out.stdout)
    assert [r["batch"] for r in report["rows"]] == [256, 512]
    assert all(r["vectors_per_second"] > 0 and 0 < r["search_share"] < 1 for r in report["rows"])
    assert report["decisions_equal_cpu_exact"] == 1.0


def test_plan_benchmark_smoke_run() -> None:
    """Planned, always planned and one at a time choose alike on both scenes (exit 0)."""
    script = SCRIPT.with_name("plan.py")
    command = [sys.executable, str(script), "--clusters", "300", "--observations", "1100",
               "--repeats", "1", "--json"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    rows = json.loads(out.stdout)["rows"]
    assert [(r["scene"], r["mode"]) for r in rows] == [
        (scene, mode)
        for scene in ("re-sightings", "walks")
        for mode in ("planned", "always planned", "one at a time")
    ]
    assert all(r["same_choices"] and r["outside_us_per_vector"] > 0 for r in rows)
    assert [r["planned_batches"] for r in rows if r["mode"] == "one at a time"] == [0.0, 0.0]
