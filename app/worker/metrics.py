"""Prometheus metrics of a worker, served on ``/metrics``.

One registry per process (not the global default), so tests can start several workers in one
interpreter without duplicate-metric errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from app.engine import Engine


class WorkerMetrics:
    """Counters, gauges and histograms the DESIGN's operations section names."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_in = Counter(
            "fvc_records_in", "Input records processed, by stream", ["stream"], registry=r
        )
        self.dead_letters = Counter(
            "fvc_dead_letters", "Bad input records sent to the dead-letter topic", ["reason"],
            registry=r,
        )
        self.events_out = Counter(
            "fvc_events_out", "Cluster events published downstream, by type", ["type"], registry=r
        )
        self.version_conflicts = Counter(
            "fvc_version_conflicts", "Store writes retried after another worker's change",
            registry=r,
        )
        self.replayed = Counter(
            "fvc_replayed_records", "Input records skipped as already applied", registry=r
        )
        self.clusters = Gauge("fvc_clusters", "Clusters held", registry=r)
        self.realized = Gauge("fvc_clusters_realized", "Realized clusters held", registry=r)
        self.index_size = Gauge("fvc_index_size", "Representatives in the index", registry=r)
        self.lag = Gauge(
            "fvc_consumer_lag", "Records behind the end of each input partition", ["partition"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "fvc_batch_seconds", "Time to process one input batch",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.stage_seconds = Counter(
            "fvc_stage_seconds", "Time spent per processing stage (search is part of engine)",
            ["stage"], registry=r,
        )
        self.outbox_pending = Gauge(
            "fvc_outbox_pending", "Events stored but not yet published", registry=r
        )

    def watch(self, engine: Engine) -> None:
        """Read the cluster gauges from ``engine`` when scraped, not after every batch.

        Counting realized clusters walks every cluster, which at a million clusters costs more
        than a batch; a scrape every few seconds can afford it.
        """
        self.clusters.set_function(lambda: len(engine.clusters))
        self.realized.set_function(lambda: sum(1 for c in engine.clusters.values() if c.realized))
        self.index_size.set_function(lambda: len(engine.index))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
