"""Live ordering: whatever chunks a consumer hands over, records come out in event-time order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.clock import NOT_HOLDING, UNKNOWN
from app.worker.live_order import LiveOrder
from app.worker.pipeline import RawRecord


def partition_logs(times: list[list[int]]) -> dict[tuple[str, int], list[RawRecord]]:
    """One partition per list, its records at those (sorted) event times."""
    return {
        ("cam", p): [RawRecord("cam", p, o, None, b"", t) for o, t in enumerate(sorted(ts))]
        for p, ts in enumerate(times)
    }


@settings(max_examples=80, deadline=None)
@given(
    times=st.lists(st.lists(st.integers(0, 1_000), max_size=30), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_any_chunking_releases_the_event_time_order(times: list[list[int]], seed: int) -> None:
    logs = partition_logs(times)
    highwater = {p: len(log) for p, log in logs.items()}
    order = LiveOrder(stream_of=lambda topic: topic, wait_s=60.0)
    order.assign(dict.fromkeys(logs, 0), now=0.0)
    rng, cursor, out = random.Random(seed), dict.fromkeys(logs, 0), []
    while any(cursor[p] < len(log) for p, log in logs.items()):
        p = rng.choice([p for p, log in logs.items() if cursor[p] < len(log)])
        take = rng.randint(1, 10)
        order.add(logs[p][cursor[p] : cursor[p] + take], now=0.0)
        cursor[p] += take
        out += order.release(highwater, None, now=0.0)
    out += order.release(highwater, None, now=0.0)
    expected = sorted((r for log in logs.values() for r in log),
                      key=lambda r: (r.timestamp, r.partition, r.offset))
    assert out == expected
    assert len(order) == 0


def test_nothing_at_or_past_the_bound_is_released() -> None:
    logs = partition_logs([[10, 20, 20, 30]])
    order = LiveOrder(stream_of=lambda topic: topic, wait_s=60.0)
    order.assign({("cam", 0): 0}, now=0.0)
    order.add(logs[("cam", 0)], now=0.0)
    # another worker's partition 1 of the same stream, next record at 20: ties go to partition 0
    bound = (20, "cam", "cam", 1)
    assert [r.timestamp for r in order.release({("cam", 0): 4}, bound, now=0.0)] == [10, 20, 20]
    assert order.frontiers({("cam", 0): 4}, now=0.0) == {("cam", 0): 30}
    assert [r.timestamp for r in order.release({("cam", 0): 4}, bound=None, now=0.0)] == [30]


def test_a_quiet_partition_stops_holding_the_other_workers_back() -> None:
    order = LiveOrder(stream_of=lambda topic: topic, wait_s=1.0)
    order.assign({("cam", 0): 0}, now=0.0)
    assert order.frontiers({}, now=0.5) == {("cam", 0): UNKNOWN}  # nothing read yet: hold all
    order.add([RawRecord("cam", 0, 0, None, b"", 10)], now=0.5)
    order.release({("cam", 0): 1}, None, now=0.7)
    caught_up = {("cam", 0): 1}
    assert order.frontiers(caught_up, now=1.5) == {("cam", 0): 10}  # a record may come any moment
    assert order.frontiers({("cam", 0): 2}, now=9.0) == {("cam", 0): 10}  # one is on its way
    assert order.frontiers(caught_up, now=1.7) == {("cam", 0): NOT_HOLDING}


def test_a_quiet_partition_holds_the_others_back_only_for_a_while() -> None:
    order = LiveOrder(stream_of=lambda topic: topic, wait_s=1.0)
    order.assign({("cam", 0): 0, ("cam", 1): 5}, now=0.0)
    order.add([RawRecord("cam", 0, 0, None, b"", 10)], now=0.0)
    highwater = {("cam", 0): 1, ("cam", 1): 9}  # partition 1 has records not read yet
    assert order.release(highwater, None, now=0.5) == []
    assert len(order.release(highwater, None, now=1.0)) == 1
    caught_up = {("cam", 0): 1, ("cam", 1): 5}  # nothing more to read: no wait at all
    order.add([RawRecord("cam", 0, 1, None, b"", 11)], now=1.0)
    assert len(order.release(caught_up, None, now=1.0)) == 1


def test_a_revoked_partition_is_dropped_for_its_next_owner_to_read() -> None:
    order = LiveOrder(stream_of=lambda topic: topic, wait_s=1.0)
    order.assign({("cam", 0): 0, ("cam", 1): 0}, now=0.0)
    order.add([RawRecord("cam", 1, 0, None, b"", 10)], now=0.0)
    order.assign({("cam", 0): 0}, now=0.0)
    assert len(order) == 0
