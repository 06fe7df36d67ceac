"""Outages of Redis or Kafka are waited out, not crashed on; only one past its limit stops a worker.

Every path that talks to Redis reports to the store's outage, the broker probe to the broker's:
a failure starts (or continues) the outage, a success ends it. During a store outage consumption
pauses by itself (the batch in hand is retried); during either ``/ready`` answers 503 and
``fvc_store_available`` or ``fvc_broker_available`` is 0. Past ``FVC_STORE_OUTAGE_S`` or
``FVC_BROKER_OUTAGE_S`` the worker exits with one log line, so Kubernetes restarts it and the
outage is visible as restarts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from prometheus_client import Gauge

log = logging.getLogger(__name__)

EXIT_OUTAGE = 69  # EX_UNAVAILABLE
EXIT_STORE_LOST = 75  # EX_TEMPFAIL: a restart rebuilds the state


class Outage:
    """Since when a service has been failing, and what follows from it."""

    def __init__(
        self,
        limit_s: float,
        gauge: Gauge,
        clock: Callable[[], float] = time.monotonic,
        exit_process: Callable[[int], object] = os._exit,
        service: str = "store",
    ) -> None:
        self.limit_s, self.gauge, self.service = limit_s, gauge, service
        self.clock, self.exit_process = clock, exit_process
        self.down_since: float | None = None
        gauge.set(1)

    @property
    def available(self) -> bool:
        """False from the first failure until the next success."""
        return self.down_since is None

    def failed(self, error: BaseException) -> None:
        """A store call failed: note the outage; past the limit, stop the worker."""
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
            self.gauge.set(0)
            log.warning(
                "%s unavailable, waiting for up to %.0fs: %s", self.service, self.limit_s, error
            )
        elif now - self.down_since > self.limit_s:
            log.critical(
                "%s unavailable for %.0fs (FVC_%s_OUTAGE_S=%.0f); exiting: %s", self.service,
                now - self.down_since, self.service.upper(), self.limit_s, error,
            )
            logging.shutdown()
            self.exit_process(EXIT_OUTAGE)

    def recovered(self) -> None:
        """A store call succeeded: the outage, if any, is over."""
        if self.down_since is not None:
            log.warning(
                "%s available again after %.1fs", self.service, self.clock() - self.down_since
            )
            self.down_since = None
            self.gauge.set(1)
