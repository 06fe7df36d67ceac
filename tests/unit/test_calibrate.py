"""``fvc calibrate``: a threshold chosen on one scene holds on another; bad input is refused."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.commands import calibrate as calibrate_command
from app.config import load_config
from app.errors import FvcError
from app.offline.calibrate import (
    CalibrationError,
    Point,
    Sample,
    Setting,
    _anchor,
    _coarse_scan,
    _families,
    _family_settings,
    calibrate,
    expected_people,
    extrapolate,
    extrapolate_series,
    fit_recall_slope,
    load_sample,
    measure,
    mistakes_range,
    precision_range,
    sample_for_band,
    size_exponent,
)
from app.offline.modern import make_modern_scene
from app.offline.synth import make_scene

SPREAD = (0.55, 0.65)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser()
    calibrate_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["calibrate", *argv])
    assert args.func(args) == 0
    return capsys.readouterr().out


def scene_file(tmp_path, name: str, n: int, seed: int, **kwargs: object):
    path = tmp_path / name
    make_scene(n, seed=seed, dim=32, intra_cosine=SPREAD, **kwargs).save(path)
    return path


def test_threshold_chosen_on_one_scene_holds_on_another(tmp_path, capsys) -> None:
    train = scene_file(tmp_path, "train.npz", 900, seed=1)
    test = scene_file(tmp_path, "test.npz", 2700, seed=2)
    out = tmp_path / "config.json"
    printed = run_cli([str(train), "--target-precision", "0.95", "--expected-size", "2700",
                       "--json", "--out", str(out)], capsys)
    answer = json.loads(printed)
    assert tuple(answer) == calibrate_command.JSON_KEYS
    assert answer["target_precision"] == 0.95 and answer["expected_precision"] >= 0.95
    assert answer["at_sample_size"]["vectors"] == 900
    assert answer["at_expected_size"] == {"vectors": 2700,
                                          "precision": answer["expected_precision"],
                                          "recall": answer["expected_recall"]}
    assert answer["reached"] is True and answer["sample_needed"] < 900
    assert answer["sample_for_band"] >= 900
    assert answer["at_sample_size"]["recall"] >= answer["expected_recall"]
    config = load_config(out)
    assert config.to_dict() == load_config(out).to_dict()
    assert set(config.stream_ids) == {f"camera_{i}" for i in range(4)}
    chosen = config.streams[0].reg_threshold
    assert {s.reg_threshold for s in config.streams} == {chosen}
    family = "improved" if config.improved_mode else "merge" if config.merging else "plain"
    discount = config.improved_mode.size_discount if config.improved_mode else None
    setting = Setting(family, chosen, config.merging.initial_threshold if config.merging else
                      None, discount)
    precision, recall = measure(load_sample(test), setting)
    assert precision >= 0.95
    assert recall > 0.5
    low, high = answer["expected_precision_range"]
    assert low <= answer["expected_precision"] <= high and low <= precision <= high


def test_table_and_plot(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    train = scene_file(tmp_path, "train.npz", 600, seed=4)
    plot = tmp_path / "curve.png"
    text = run_cli([str(train), "--improved", "off", "--plot", str(plot)], capsys)
    assert "<- chosen" in text and "expected size 6000" in text  # default: ten times the sample
    assert "precision at 6000 vectors: " in text and "(90% range)" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unlabelled_estimate_says_how_confident_it_is(tmp_path, capsys) -> None:
    path = tmp_path / "scene.npz"
    scene = make_scene(2000, seed=5, dim=64, intra_cosine=SPREAD)
    np.savez(path, X=scene.X, s=scene.s)  # no labels at all
    answer = json.loads(run_cli([str(path), "--unlabelled", "--json"], capsys))
    estimate = answer["estimate"]
    assert estimate["confidence"] in ("high", "medium", "low")
    lo, hi = estimate["interval"]
    assert lo <= estimate["threshold"] <= hi or hi - lo < 0.02
    assert answer["expected_recall"] is None
    threshold = answer["config"]["input_stream_configs"][0]["reg_stream_config"]["reg_threshold"]
    labelled = tmp_path / "labelled.npz"
    scene.save(labelled)
    precision, _ = measure(load_sample(labelled), Setting.make("plain", threshold))
    assert precision >= 0.95
    text = run_cli([str(path), "--unlabelled"], capsys)
    assert "confidence" in text


def test_a_sample_too_small_to_tell_settings_apart_says_how_many_vectors_it_needs(
    tmp_path, capsys
) -> None:
    small = scene_file(tmp_path, "small.npz", 40, seed=3)
    answer = json.loads(run_cli([str(small), "--expected-size", "4000", "--json"], capsys))
    assert answer["reached"] is False and answer["sample_needed"] > 40
    text = run_cli([str(small), "--expected-size", "4000"], capsys)
    assert "too small to tell" in text and f"at least {answer['sample_needed']} vectors" in text


def test_the_fine_grid_goes_on_upwards_until_the_target_holds_at_the_expected_size() -> None:
    # Deferred decisions on a modern scene: precision rises slowly with the threshold, so where
    # the sample reaches 0.98 the stream's size does not; the grid must go on past it.
    scene = make_modern_scene(4000, seed=1, identities=100)
    units = (scene.X / np.linalg.norm(scene.X, axis=1, keepdims=True)).astype(np.float32)
    sample = Sample(units[:1200], scene.y[:1200], scene.t[:1200], scene.s[:1200].astype(str))
    cal = calibrate(sample, 0.98, 4000, deferral_ms=2500)
    step = cal.coarse[1].setting.threshold - cal.coarse[0].setting.threshold
    first_top = _anchor(cal.coarse, 0.98) + 2 * step
    assert cal.reached and cal.chosen.expected_precision >= 0.98
    assert max(p.setting.threshold for p in cal.points) > first_top + step / 8
    assert cal.chosen.setting.deferral_ms == 2500


def test_a_small_sample_that_reaches_the_target_only_with_no_mistake_says_so(
    tmp_path, capsys
) -> None:
    small = scene_file(tmp_path, "small.npz", 60, seed=3)
    argv = [str(small), "--expected-size", "200", "--target-precision", "0.95"]
    answer = json.loads(run_cli([*argv, "--json"], capsys))
    assert answer["reached"] is True and answer["sample_needed"] > 60
    assert answer["at_sample_size"]["precision"] == 1.0  # only a setting with no mistake
    text = run_cli(argv, capsys)
    assert "the sample is small" in text and f"at least {answer['sample_needed']} vectors" in text


def _write(tmp_path, **arrays: np.ndarray):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.ones((50, 4), np.float32)}, "no labels"),
        ({"X": np.eye(50, 4, dtype=np.float32) + 1, "y": np.zeros(50, np.int64)}, "single class"),
        ({"X": np.where(np.arange(200).reshape(50, 4) == 9, np.nan, 1.0).astype(np.float32),
          "y": np.arange(50) % 3}, r"NaN or Inf \(rows 2\)"),
        ({"X": np.zeros((50, 4), np.float32), "y": np.arange(50) % 3}, "zero vectors"),
        ({"X": np.ones((5, 4), np.float32), "y": np.arange(5)}, "n >= 20"),
        ({"y": np.arange(50)}, "no array X"),
        ({"X": np.ones((50, 4), np.float32), "y": np.arange(49)}, "one label per row"),
    ],
    ids=["no labels", "single class", "nan rows", "zero rows", "too few", "no X", "short y"],
)
def test_bad_input_gets_a_clear_error(tmp_path, arrays, message) -> None:
    path = _write(tmp_path, **arrays)
    parser = argparse.ArgumentParser()
    calibrate_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["calibrate", path])
    with pytest.raises(CalibrationError, match=message):
        args.func(args)


def test_unreadable_file_is_said_plainly(tmp_path) -> None:
    path = tmp_path / "not.npz"
    path.write_text("hello")
    with pytest.raises(CalibrationError, match="cannot read"):
        load_sample(path)


def test_bad_arguments_are_refused() -> None:
    parser = argparse.ArgumentParser()
    calibrate_command.register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["calibrate", "x.npz", "--target-precision", "1.5"])


def returning_people(n: int, people: int, seed: int) -> np.ndarray:
    """Labels of a stream where the same ``people`` keep coming back in visits of 3-12 frames."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < n:
        out += [int(rng.integers(people))] * int(rng.integers(3, 13))
    return np.array(out[:n])


def test_people_level_off_when_the_same_people_come_back() -> None:
    stream = returning_people(4000, 100, seed=3)
    sample = stream[:1200]
    seen, whole = np.unique(sample).size, np.unique(stream).size
    estimate = expected_people(sample, 4000)
    heaps = seen * (4000 / 1200) ** (np.log(seen / np.unique(sample[:300]).size) / np.log(4))
    assert abs(estimate - whole) < 0.1 * whole  # the accumulation curve levels off
    assert abs(estimate - whole) < abs(heaps - whole)  # a power law of the prefixes does not
    newcomers = np.repeat(np.arange(400), 5)  # someone new in every visit
    assert expected_people(newcomers[:600], 2000) == pytest.approx(120 * 2000 / 600, rel=0.02)
    assert expected_people(sample, 1000) == seen


def test_precision_is_extrapolated_through_the_people_seen() -> None:
    assert size_exponent(1.0, 10.0) == pytest.approx(0.4)  # same people, seen more often
    assert size_exponent(10.0, 10.0) == 1.0  # new people in proportion to the size
    assert size_exponent(20.0, 10.0) == 1.0 and size_exponent(2.0, 1.0) == 1.0
    s = Setting.make("plain", 0.5)
    flat = Point(s, 0.99, 0.9, {400: (0.99, 0.9), 200: (0.99, 0.9), 100: (0.99, 0.9)})
    extrapolate(flat, 400, 4000, 1.0, fit_recall_slope([flat]))
    assert flat.expected_precision == pytest.approx(0.9)
    assert flat.expected_recall == pytest.approx(0.9)
    perfect = Point(s, 1.0, 1.0, {400: (1.0, 1.0)})
    extrapolate(perfect, 400, 800, 1.0, 0.0)
    assert perfect.expected_precision == pytest.approx(1 - 0.5 / 400 * 2)
    # a saturating stream: 100 people, sample 1200 of 4000, sample impurity 0.006 and 0.015
    # measured on the whole at about this threshold (the modern scenes of docs/quality.md)
    stream = returning_people(4000, 100, seed=3)
    beta = size_exponent(expected_people(stream[:1200], 4000) / np.unique(stream[:1200]).size,
                         4000 / 1200)
    point = Point(s, 0.994, 0.9, {1200: (0.994, 0.9)})
    extrapolate(point, 1200, 4000, beta, 0.0)
    old = 1 - 0.006 * 4000 / 1200  # at least in proportion to the size: 0.98
    assert abs(point.expected_precision - 0.985) < abs(old - 0.985)
    assert 0.98 < point.expected_precision < 0.99


@given(mistakes=st.integers(1, 100), n=st.integers(2000, 20000), growth=st.floats(1.0, 5.0))
def test_the_precision_range_holds_the_expectation_and_narrows_with_more_mistakes(
    mistakes: int, n: int, growth: float
) -> None:
    def point(count: int, size: int) -> Point:
        impurity = max(2 * count / size, 0.5 / size)
        return Point(Setting.make("plain", 0.5), 1 - impurity, 0.9,
                     expected_precision=max(0.0, 1 - growth * impurity), impurity=impurity)

    chosen = point(mistakes, n)
    low, high = precision_range(chosen, n)
    assert 0.0 <= low <= chosen.expected_precision <= high <= 1.0
    # the same impurity from four times the mistakes, seen on a sample four times the size
    wider = high - low
    low4, high4 = precision_range(point(4 * mistakes, 4 * n), 4 * n)
    assert high4 - low4 <= wider + 1e-12


def test_six_mistakes_leave_the_expected_precision_wide_open() -> None:
    # about what a 30% prefix of a 4,000-vector modern scene shows at precision 0.98
    chosen = Point(Setting.make("plain", 0.5), 0.99, 0.9, expected_precision=0.98, impurity=0.01)
    low, high = precision_range(chosen, 1200)
    assert low < 0.965 and high > 0.99  # wider than a 0.01 band on either side of 0.98
    assert mistakes_range(0)[0] == 0.0 and mistakes_range(0)[1] == pytest.approx(2.996, abs=1e-3)
    # a 0.01 band needs most of the 4,000-vector stream labelled (growth 2: beta = log 2 / log 3.3)
    needed = sample_for_band(chosen, 1200, 4000, np.log(2) / np.log(4000 / 1200))
    assert 2500 < needed < 4000


def at_size(impurity: float, size: int, expected_size: int, beta: float) -> Point:
    """A setting with this impurity measured on ``size`` vectors, extrapolated as calibrate does."""
    point = Point(Setting.make("plain", 0.5), 1 - impurity, 0.9, impurity=impurity)
    point.expected_precision = 1 - impurity * max(1.0, expected_size / size) ** beta
    return point


@given(impurity=st.floats(0.001, 0.03), n=st.integers(200, 5000), factor=st.floats(1.0, 4.0),
       beta=st.floats(0.0, 1.0))
def test_the_sample_for_a_band_is_the_smallest_whose_range_fits_it(
    impurity: float, n: int, factor: float, beta: float
) -> None:
    expected_size = int(n * factor)
    needed = sample_for_band(at_size(impurity, n, expected_size, beta), n, expected_size, beta)

    def width(size: int) -> float:
        low, high = precision_range(at_size(impurity, size, expected_size, beta), size)
        return high - low

    assert needed >= n and width(needed) <= 0.01
    assert needed == n or width(needed - 1) > 0.01


def test_a_cliff_next_door_counts_against_a_setting() -> None:
    pts = [Point(Setting.make("plain", t), 1 - imp, 0.9, {400: (1 - imp, 0.9)})
           for t, imp in ((0.50, 0.05), (0.51, 0.002), (0.52, 0.002), (0.53, 0.002))]
    extrapolate_series(pts, 400, 800, 1.0)
    assert [round(p.expected_precision, 3) for p in pts] == [0.9, 0.9, 0.996, 0.996]


def test_the_coarse_scan_goes_below_its_range_until_precision_misses() -> None:
    def scan(t: float) -> Point:  # precision reaches 0.98 from T = 0.3 up
        return Point(Setting.make("plain", t), 0.99 if t >= 0.3 - 1e-9 else 0.9, 1 - t)

    extended = [round(p.setting.threshold, 2) for p in _coarse_scan(scan, 0.5, 0.7, 0.1, 0.98)]
    assert extended == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]  # brackets the place it meets the target
    bracketed = [round(p.setting.threshold, 2) for p in _coarse_scan(scan, 0.2, 0.4, 0.1, 0.98)]
    assert bracketed == [0.2, 0.3, 0.4]  # already brackets it: nothing added


def test_the_merge_family_is_searched_over_its_merge_threshold() -> None:
    settings = _family_settings("merge", np.array([0.5, 0.6]))
    assert {(s.threshold, s.merge_threshold) for s in settings} == {
        (0.5, 0.5), (0.5, 0.55), (0.5, 0.6), (0.6, 0.6), (0.6, 0.64), (0.6, 0.68)}
    merging = Setting.make("merge", 0.6, offset=0.1).config(["camera_0"]).merging
    assert merging is not None
    assert (merging.initial_threshold, merging.min_threshold) == (0.64, 0.64)
    assert "merge" in _families("off") and "merge" not in _families("auto")


def test_settings_write_valid_configs_over_a_base() -> None:
    base = {
        "clustering_config": {"method": "EXP_AVERAGE", "ema_alpha": 0.2,
                              "cluster_realization": {"num_samples": 3}},
        "input_stream_configs": [{
            "stream_id": "camera_0", "topic": "t0",
            "fv_field_selector": {"feature_vector_path": "f"},
            "reg_stream_config": {"reg_threshold": 0.1, "cluster_retention_period_ms": 99},
        }],
    }
    for setting in (Setting.make("plain", 0.9), Setting.make("merge", 0.9),
                    Setting.make("improved", 0.9, 0.6)):
        config = setting.config(["camera_0", "camera_1"], base=base)
        assert config.method == "SIMPLE_AVERAGE" and config.realization is not None
        assert config.stream("camera_0").retention_ms == 99
        assert {s.reg_threshold for s in config.streams} == {0.9}
        assert (config.improved_mode is not None) == (setting.family == "improved")
    with pytest.raises(CalibrationError):
        measure(load_sample_without_labels(), Setting.make("plain", 0.9))


def load_sample_without_labels():
    from app.offline.calibrate import Sample

    x = np.eye(30, 4, dtype=np.float32) + 0.1
    return Sample(x, None, np.arange(30), np.full(30, "camera_0"))


def test_deferral_tunes_the_improved_mode_with_the_window_and_writes_it(tmp_path, capsys) -> None:
    train = scene_file(tmp_path, "train.npz", 600, seed=5)
    out = tmp_path / "deferred.json"
    answer = json.loads(run_cli([str(train), "--deferral-ms", "1000", "--json", "--out",
                                 str(out)], capsys))
    config = load_config(out)
    assert config.deferral_ms == 1000 and config.improved_mode is not None
    assert config.merging.time_interval_ms % 1000 == 0
    assert answer["config"]["clustering_config"]["improved_mode"]["deferral_ms"] == 1000


@pytest.mark.parametrize(("argv", "message"), [
    (["--deferral-ms", "3000"], "positive divisor of --merge-interval-ms (5000), got 3000"),
    (["--deferral-ms", "1000", "--improved", "off"], "cannot go with --improved off"),
])
def test_a_deferral_calibrate_cannot_use_is_refused(tmp_path, argv, message) -> None:
    train = scene_file(tmp_path, "train.npz", 200, seed=6)
    parser = argparse.ArgumentParser()
    calibrate_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["calibrate", str(train), *argv])
    with pytest.raises(FvcError) as refused:
        args.func(args)
    assert message in str(refused.value)
