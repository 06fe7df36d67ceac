"""A worker whose Faust app has crashed exits, so that Kubernetes restarts it within seconds.

Faust marks a crashed app (``app.crashed``) and stops its services, but the process can stay
up with ``/health`` answering 503 until a liveness probe kills it, a minute or more later. The
watch runs in a thread of its own, so a stuck event loop cannot keep it from looking.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from mode import ServiceT

log = logging.getLogger(__name__)

EXIT_CRASHED = 71
INTERVAL_S = 0.5


def watch(
    app: ServiceT, interval_s: float = INTERVAL_S, exit_process: Callable[[int], object] = os._exit
) -> threading.Thread:
    """Start a daemon thread that calls ``exit_process(EXIT_CRASHED)`` once ``app`` crashed."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval_s):
            if app.crashed:
                log.critical("the Faust app crashed (%r); exiting", app.crash_reason)
                logging.shutdown()
                exit_process(EXIT_CRASHED)
                return

    thread = threading.Thread(target=run, name="fvc-crash-watch", daemon=True)
    thread.start()
    return thread
