"""Prometheus metrics of a worker, served on ``/metrics``.

One registry per process (not the global default), so tests can start several workers in one
interpreter without duplicate-metric errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from app.engine import Engine

# /stats lists the stages in this order; search is part of engine, index_update part of apply.
STAGES = ("decode", "engine", "encode", "store", "apply", "search", "index_update", "publish")
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0, 2.5, 5.0)


def stage_histogram(registry: CollectorRegistry | None = None) -> Histogram:
    """Seconds per processing stage; every stage's series exists (at zero) from the start."""
    histogram = Histogram(
        "fvc_stage_seconds", "Time spent per processing stage (search is part of engine)",
        ["stage"], buckets=STAGE_BUCKETS, registry=registry or CollectorRegistry(),
    )
    for stage in STAGES:
        histogram.labels(stage)
    return histogram


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
        self.skipped_records = Counter(
            "fvc_skipped_records",
            "Input records skipped as UVAP skips them (no selected field), by reason",
            ["reason"], registry=r,
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
        self.stage_seconds = stage_histogram(r)
        self.store_available = Gauge(
            "fvc_store_available", "1 while the state store answers, 0 during an outage",
            registry=r,
        )
        self.broker_available = Gauge(
            "fvc_broker_available", "1 while a Kafka broker answers, 0 during an outage",
            registry=r,
        )
        self.timer_errors = Counter(
            "fvc_timer_errors", "Timer ticks that failed (logged; the timer runs on)", ["timer"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "fvc_outbox_pending", "Events stored but not yet published", registry=r
        )
        self.late_records = Counter(
            "fvc_late_records", "Observations older than the watermark when they came (applied)",
            registry=r,
        )
        self.merge_passes = Counter(
            "fvc_merge_passes", "Merge passes this worker stored as event time crossed a boundary",
            registry=r,
        )
        self.watermark = Gauge(
            "fvc_watermark_ms", "Event time the timers have reached (epoch ms)", registry=r
        )

    def watch(self, engine: Engine) -> None:
        """Read the cluster gauges from ``engine`` when scraped, not after every batch.

        Counting realized clusters sums a column of every cluster's row (a few ms at a million
        clusters): worth doing per scrape, not per batch.
        """
        self.clusters.set_function(lambda: len(engine.clusters))
        self.realized.set_function(engine.clusters.realized_count)
        self.index_size.set_function(lambda: len(engine.index))

    def record_lag(self, position: str, highwater: int, applied: int | None) -> None:
        """Records of one input partition after the offset ``applied`` (None: none yet).

        ``highwater`` is the offset the next record will get, so a partition applied to its
        last record is 0 behind.
        """
        behind = highwater - (-1 if applied is None else applied) - 1
        self.lag.labels(position).set(max(behind, 0))

    def stage_totals(self) -> dict[str, float]:
        """Seconds spent so far per stage: the sums of ``stage_seconds``, for ``/stats``."""
        return {
            sample.labels["stage"]: sample.value
            for metric in self.stage_seconds.collect()
            for sample in metric.samples
            if sample.name.endswith("_sum")
        }

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
