"""The event-time clock: watermark over partitions, idleness, and where merge passes fall."""

from __future__ import annotations

from app.engine.clock import EventClock, PartitionTime, watermark


def parts(**times: tuple[int, int]) -> dict[str, PartitionTime]:
    return {name: PartitionTime(*value) for name, value in times.items()}


def test_the_slowest_partition_holds_the_watermark_back() -> None:
    assert watermark(parts(a=(5_000, 0), b=(9_000, 0)), now_ms=0, lateness_ms=0, idle_ms=0) == 5_000


def test_an_idle_partition_stops_holding_it_back() -> None:
    times = parts(a=(5_000, 0), b=(9_000, 50_000))
    assert watermark(times, now_ms=59_999, lateness_ms=0, idle_ms=60_000) == 5_000
    assert watermark(times, now_ms=60_000, lateness_ms=0, idle_ms=60_000) == 9_000


def test_when_every_partition_is_idle_the_wall_clock_moves_it_on() -> None:
    times = parts(a=(5_000, 0), b=(9_000, 10_000))
    assert watermark(times, now_ms=70_000, lateness_ms=0, idle_ms=60_000) == 9_000
    assert watermark(times, now_ms=75_000, lateness_ms=0, idle_ms=60_000) == 14_000


def test_the_watermark_never_goes_back() -> None:
    clock = EventClock(None, idle_ms=1_000)
    clock.adopt(clock.scan(["a", "b"], [5_000, 9_000], now_ms=0))
    assert clock.watermark == 5_000
    clock.adopt(clock.scan(["b"], [9_500], now_ms=2_000))  # a idle: b alone counts
    assert clock.watermark == 9_500
    clock.adopt(clock.scan(["a"], [6_000], now_ms=2_000))  # a back, far behind: late
    assert clock.watermark == 9_500


def test_a_record_behind_the_watermark_is_counted_late() -> None:
    clock = EventClock(None)
    scan = clock.scan(["a", "a", "a"], [1_000, 3_000, 2_000], now_ms=0)
    assert scan.late == 1


def test_the_first_watermark_starts_the_merge_schedule_and_boundaries_cut_batches() -> None:
    clock = EventClock(1_000)
    scan = clock.scan(["a"] * 5, [1_500, 1_900, 2_000, 2_100, 3_200], now_ms=0)
    assert (scan.merge_start, scan.cut, scan.merge_at) == (1_000, 2, 2_000)
    clock.adopt(scan)
    clock.merged(2_000)
    rest = clock.scan(["a"] * 3, [2_000, 2_100, 3_200], now_ms=0)
    assert (rest.cut, rest.merge_at) == (2, 3_200)


def test_an_interval_of_zero_merges_at_every_new_watermark() -> None:
    clock = EventClock(0)
    clock.adopt(clock.scan(["a"], [10], now_ms=0))
    scan = clock.scan(["a", "a"], [10, 11], now_ms=0)
    assert (scan.cut, scan.merge_at) == (1, 11)


def test_input_read_in_time_order_is_one_partition() -> None:
    clock = EventClock(None, ordered=True)
    clock.adopt(clock.scan(["a", "b"], [5_000, 9_000], now_ms=0))
    assert clock.watermark == 9_000
