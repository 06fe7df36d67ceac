"""PNG charts of ``fvc bench`` runs: latency distribution and throughput against clusters.

matplotlib is an optional extra (``pip install 'fvc[plot]'``), imported only when charts are
asked for, so workers and the rest of the CLI never load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.errors import FvcError

MISSING = "--plot needs matplotlib: pip install 'fvc[plot]' (or the dev extra)"


def pyplot():  # noqa: ANN201 - matplotlib's module is only known once it is imported
    """The pyplot of matplotlib on the file-only backend; a clear error when it is missing."""
    try:
        import matplotlib
    except ImportError as exc:
        raise FvcError(MISSING) from exc
    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


def write_charts(
    directory: Path, runs: Sequence[dict], latencies: Sequence[np.ndarray]
) -> list[Path]:
    """``latency.png`` always, ``throughput.png`` when more than one cluster count was run."""
    plt = pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    written = [_latency_chart(plt, directory / "latency.png", runs, latencies)]
    if len(runs) > 1:
        written.append(_throughput_chart(plt, directory / "throughput.png", runs))
    return written


def _latency_chart(
    plt, path: Path, runs: Sequence[dict], latencies: Sequence[np.ndarray]  # noqa: ANN001
) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4))
    for run, values in zip(runs, latencies, strict=True):
        if len(values):
            label = f"{run['clusters_asked']:,} clusters: p50 {run['latency_ms_p50']} ms," \
                    f" p99 {run['latency_ms_p99']} ms"
            axes.hist(values, bins=50, alpha=0.6, label=label)
    axes.set_xlabel("produce-to-event latency (ms)")
    axes.set_ylabel("events")
    axes.set_title("fvc bench: latency at half the maximum rate")
    if axes.has_data():
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _throughput_chart(plt, path: Path, runs: Sequence[dict]) -> Path:  # noqa: ANN001
    ordered = sorted(runs, key=lambda r: r["clusters_asked"])
    clusters = [r["clusters_asked"] for r in ordered]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(clusters, [r["vectors_per_second"] for r in ordered], "o-", label="end to end")
    axes.plot(clusters, [r["engine_vectors_per_second"] for r in ordered], "s--",
              label="engine alone")
    axes.set_xscale("log")
    axes.set_xlabel("clusters")
    axes.set_ylabel("vectors/s")
    axes.set_title("fvc bench: throughput against clusters")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
