"""The window gate: whole windows handed on, offsets never past a held record, nothing lost."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.window import runs
from app.worker.pipeline import RawRecord
from app.worker.window_gate import WindowGate

DEFERRAL_MS = 100
LIMIT = 2048


@st.composite
def released(draw: st.DrawFn) -> list[RawRecord]:
    """Records of up to three partitions, each in offset order, interleaved, mostly in time."""
    count = draw(st.integers(1, 60))
    partitions = draw(st.lists(st.integers(0, 2), min_size=count, max_size=count))
    steps = draw(st.lists(st.integers(-30, 60), min_size=count, max_size=count))
    offsets = {0: 0, 1: 0, 2: 0}
    records, time = [], 0
    for partition, step in zip(partitions, steps, strict=True):
        time = max(0, time + step)  # a negative step: a late record
        records.append(RawRecord("cam", partition, offsets[partition], None, b"", time))
        offsets[partition] += 1
    return records


@settings(max_examples=200, deadline=None)
@given(released(), st.lists(st.integers(1, 10), min_size=1, max_size=30),
       st.sampled_from([1, 3, LIMIT]))
def test_windows_go_on_whole_and_each_partition_only_as_a_prefix(
    records: list[RawRecord], chunks: list[int], limit: int
) -> None:
    gate = WindowGate(DEFERRAL_MS, limit)
    handed: list[list[RawRecord]] = []
    start = 0
    for size in chunks * 10:
        if start >= len(records):
            break
        handed += gate.add(records[start : start + size], now=0.0)
        start += size
        done = [r for batch in handed for r in batch]
        for partition in (0, 1, 2):  # what may be stored: a prefix of each partition
            offsets = [r.offset for r in done if r.partition == partition]
            assert offsets == list(range(len(offsets)))
    handed += gate.add(records[start:], now=0.0)
    handed.append(gate.flush())
    assert [r for batch in handed for r in batch] == records  # each once, in order
    for batch in handed[:-1]:  # each closed batch is one window of the engine's cut
        assert runs([r.timestamp for r in batch], DEFERRAL_MS, limit) == [(0, len(batch))]
    # and the windows are the engine's cut of the whole input, however it was chunked
    cut = runs([r.timestamp for r in records], DEFERRAL_MS, limit)
    assert [len(batch) for batch in handed if batch] == [end - start for start, end in cut]


def test_an_idle_input_closes_the_window_by_the_wall_clock_only_after_the_deferral() -> None:
    gate = WindowGate(DEFERRAL_MS, LIMIT)
    assert gate.add([RawRecord("cam", 0, 0, None, b"", 5)], now=10.0) == []
    assert not gate.due(now=10.05) and gate.due(now=10.2)
    assert [r.offset for r in gate.flush()] == [0] and not gate.due(now=99.0)


def test_revoked_partitions_drop_what_is_held_and_switching_deferral_off_lets_it_go() -> None:
    gate = WindowGate(DEFERRAL_MS, LIMIT)
    gate.add([RawRecord("cam", 0, 0, None, b"", 5)], now=0.0)
    gate.drop()
    assert len(gate) == 0
    gate.add([RawRecord("cam", 0, 0, None, b"", 5)], now=0.0)
    gate.deferral_ms = 0
    batches = gate.add([RawRecord("cam", 0, 1, None, b"", 500)], now=0.0)
    assert [[r.offset for r in b] for b in batches] == [[0], [1]]


def test_batches_pack_whole_windows_and_close_the_open_one_at_the_end_or_when_idle() -> None:
    gate = WindowGate(DEFERRAL_MS, LIMIT)
    times = [0, 10, 110, 120, 130, 250]  # windows 0, 0, 1, 1, 1, 2
    records = [RawRecord("cam", 0, i, None, b"", t) for i, t in enumerate(times)]
    offsets = lambda batches: [[r.offset for r in b] for b in batches]  # noqa: E731
    assert offsets(gate.batches(records, 0.0, size=4)) == [[0, 1], [2, 3, 4]]  # 2 + 3 > 4
    assert gate.batches([], 0.05, size=4) == []  # window 2 still open
    assert offsets(gate.batches([], 0.2, size=4)) == [[5]]  # idle for the deferral: closed
    gate.add([RawRecord("cam", 0, 6, None, b"", 300)], now=1.0)
    assert offsets(gate.batches([], 1.0, size=4, ended=True)) == [[6]]  # input ended


def test_a_reload_changing_the_deferral_judges_the_held_window_by_the_new_one() -> None:
    gate = WindowGate(250, LIMIT)
    gate.add([RawRecord("cam", 0, 0, None, b"", 5_100)], now=0.0)  # window 20 of 250 ms
    gate.deferral_ms = 1_000  # window 5 of 1 s: a record at 6,000 ms is of a later one
    closed = gate.add([RawRecord("cam", 0, 1, None, b"", 5_900),
                       RawRecord("cam", 0, 2, None, b"", 6_000)], now=0.0)
    assert [[r.offset for r in w] for w in closed] == [[0, 1]]
