"""Prometheus metrics of a re-identification service, served on ``/metrics``.

A private registry per service (not the global default), like the worker's, so tests can run
several services in one interpreter. Names start with ``fvc_reid_`` so one Prometheus can
scrape workers and re-identification side by side without clashes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ReidMetrics:
    """What an operator watches: how current the view is, and how queries are answered."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.events = Counter(
            "fvc_reid_events", "Cluster events read from the downstream topic, by type", ["type"],
            registry=r,
        )
        self.bad_events = Counter(
            "fvc_reid_bad_events", "Downstream records that are not cluster events", registry=r
        )
        self.clusters = Gauge("fvc_reid_clusters", "Realized clusters in the view", registry=r)
        self.ready = Gauge("fvc_reid_ready", "1 once caught up with the topic", registry=r)
        self.lag = Gauge(
            "fvc_reid_lag", "Records of the downstream topic not read yet", registry=r
        )
        self.queries = Counter(
            "fvc_reid_queries", "Vectors identified, by source (http or stream)", ["source"],
            registry=r,
        )
        self.matches = Counter(
            "fvc_reid_matches", "Vectors whose best cluster reached the threshold, by source",
            ["source"], registry=r,
        )
        self.bad_requests = Counter(
            "fvc_reid_bad_requests", "Identify requests refused (400, 413, 415)", registry=r
        )
        self.request_seconds = Histogram(
            "fvc_reid_request_seconds", "Time to answer one identify request",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.stream_records = Counter(
            "fvc_reid_stream_records", "Input records matched in streaming mode, by stream",
            ["stream"], registry=r,
        )
        self.stream_bad_records = Counter(
            "fvc_reid_stream_bad_records",
            "Input records skipped in streaming mode because they cannot be read, by reason",
            ["reason"], registry=r,
        )

    def count_answers(self, source: str, answers: list) -> None:
        """Count identified vectors and the matches among them."""
        self.queries.labels(source).inc(len(answers))
        self.matches.labels(source).inc(sum(1 for a in answers if a.match))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
