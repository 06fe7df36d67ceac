"""A timer that raises never kills a worker; a worker whose Faust app crashed exits."""

from __future__ import annotations

import logging
import threading

import faust
import pytest

from agents.timers import survives
from agents.watchdog import EXIT_CRASHED, watch
from app.errors import StoreUnavailable
from app.worker.metrics import WorkerMetrics
from app.worker.outage import EXIT_OUTAGE, Outage


def _failures(metrics: WorkerMetrics, timer: str) -> float:
    value = metrics.registry.get_sample_value("fvc_timer_errors_total", {"timer": timer})
    return value or 0.0


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (RuntimeError("boom"), "timer merge failed; it runs again at its next tick"),
        (StoreUnavailable("changes failed (reconnect)"), "timer merge: store unavailable"),
        (TypeError("unsupported operand type(s) for -: 'NoneType' and 'int'"), "timer merge"),
    ],
)
async def test_a_raising_timer_is_logged_counted_and_survives(
    error: Exception, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics, calls = WorkerMetrics(), []
    outage = Outage(300, metrics.store_available)

    @survives("merge", metrics, outage)
    async def tick() -> None:
        calls.append(1)
        raise error

    with caplog.at_level(logging.INFO):
        assert await tick() is None
        assert await tick() is None  # and it runs again at the next tick
    assert len(calls) == 2
    assert _failures(metrics, "merge") == 2
    assert logged in caplog.text


async def test_a_working_timer_counts_nothing() -> None:
    metrics = WorkerMetrics()

    @survives("follow", metrics, Outage(300, metrics.store_available))
    async def tick() -> None:
        return None

    await tick()
    assert _failures(metrics, "follow") == 0


async def test_a_timer_that_never_reads_the_store_does_not_end_a_store_outage() -> None:
    metrics = WorkerMetrics()
    outage = Outage(300, metrics.store_available)
    outage.failed(RuntimeError("redis down"))

    @survives("lag", metrics, None)
    async def tick() -> None:
        return None

    await tick()
    assert metrics.store_available._value.get() == 0  # still down: the lag says nothing of it


async def test_a_crashed_app_exits_the_process_within_a_second() -> None:
    app = faust.App("fvc-test-crash", autodiscover=False)
    exited, codes = threading.Event(), []

    def exit_process(code: int) -> None:
        codes.append(code)
        exited.set()

    watch(app, interval_s=0.02, exit_process=exit_process)
    assert not exited.wait(0.1), "a healthy app must not be exited"
    await app.crash(RuntimeError("a timer raised"))
    assert exited.wait(1.0)
    assert codes == [EXIT_CRASHED]


async def test_a_store_outage_pauses_then_stops_the_worker_past_its_limit() -> None:
    """Failures start the outage (gauge 0), a success ends it, only a long one exits."""
    metrics, now, codes = WorkerMetrics(), [0.0], []
    outage = Outage(60, metrics.store_available, clock=lambda: now[0], exit_process=codes.append)
    gauge = "fvc_store_available"
    failing = [True]

    @survives("follow", metrics, outage)
    async def tick() -> None:
        if failing[0]:
            raise StoreUnavailable("changes failed (reconnect): Connection refused")

    await tick()
    assert not outage.available and metrics.registry.get_sample_value(gauge) == 0
    now[0] = 59.0
    await tick()
    assert codes == []
    failing[0] = False
    await tick()
    assert outage.available and metrics.registry.get_sample_value(gauge) == 1
    failing[0] = True
    now[0] = 100.0
    await tick()
    now[0] = 161.0
    await tick()
    assert codes == [EXIT_OUTAGE]


def test_a_broker_outage_names_its_own_limit(caplog: pytest.LogCaptureFixture) -> None:
    metrics, now, codes = WorkerMetrics(), [0.0], []
    outage = Outage(30, metrics.broker_available, clock=lambda: now[0],
                    exit_process=codes.append, service="broker")
    outage.failed(RuntimeError("all brokers down"))
    assert metrics.registry.get_sample_value("fvc_broker_available") == 0
    now[0] = 31.0
    with caplog.at_level(logging.CRITICAL):
        outage.failed(RuntimeError("all brokers down"))
    assert codes == [EXIT_OUTAGE]
    assert "broker unavailable for 31s (FVC_BROKER_OUTAGE_S=30)" in caplog.text
