"""Store outages are waited out, not crashed on; only one longer than the limit stops a worker.

Every path that talks to Redis reports here: a failure starts (or continues) the outage, a
success ends it. During an outage consumption pauses by itself (the batch in hand is retried),
``/ready`` answers 503 and ``fvc_store_available`` is 0. Past ``FVC_STORE_OUTAGE_S`` the worker
exits with one log line, so Kubernetes restarts it and the outage is visible as restarts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from prometheus_client import Gauge

log = logging.getLogger(__name__)

EXIT_STORE_OUTAGE = 69  # EX_UNAVAILABLE
EXIT_STORE_LOST = 75  # EX_TEMPFAIL: a restart rebuilds the state


class Outage:
    """Since when the store has been failing, and what follows from it."""

    def __init__(
        self,
        limit_s: float,
        gauge: Gauge,
        clock: Callable[[], float] = time.monotonic,
        exit_process: Callable[[int], object] = os._exit,
    ) -> None:
        self.limit_s, self.gauge = limit_s, gauge
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
            log.warning("store unavailable, pausing for up to %.0fs: %s", self.limit_s, error)
        elif now - self.down_since > self.limit_s:
            log.critical(
                "store unavailable for %.0fs (FVC_STORE_OUTAGE_S=%.0f); exiting: %s",
                now - self.down_since, self.limit_s, error,
            )
            logging.shutdown()
            self.exit_process(EXIT_STORE_OUTAGE)

    def recovered(self) -> None:
        """A store call succeeded: the outage, if any, is over."""
        if self.down_since is not None:
            log.warning("store available again after %.1fs", self.clock() - self.down_since)
            self.down_since = None
            self.gauge.set(1)
