"""A daemon thread with a stop flag: the Kafka readers that run beside an event loop."""

from __future__ import annotations

import threading


class Background:
    """Runs ``self._run`` in a daemon thread; ``_stop`` tells it to finish."""

    stop_timeout = 10.0

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Begin working."""
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to finish and wait for it (``stop_timeout`` by default)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.stop_timeout if timeout is None else timeout)

    def _run(self) -> None:
        raise NotImplementedError
