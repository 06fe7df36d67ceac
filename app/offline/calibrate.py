"""Choosing thresholds from data: what ``fvc calibrate`` does (docs/thresholds.md explains it).

A threshold belongs to the embedding model (dlib faces: about 0.95; FaceNet-style models: about
0.4-0.6), so fvc measures it instead of guessing:

* **Labelled** (``calibrate``): run the engine over the sample, in file order with event-time
  merge timers exactly as ``fvc evaluate`` does, for a grid of thresholds and for each family of
  settings (plain; plain with the merge timer at a few merge thresholds; the improved mode with
  a few size discounts), and keep the setting with the most recall whose precision *at the
  expected size* reaches the target.
* **Size.** Precision falls as more people are seen (more chances of a false match), so a
  threshold right for a sample is too loose for the full stream. The impurity ``1 - precision``
  is modelled as proportional to the number of distinct people ``D`` times the observations per
  person ``m = size / D`` to the power ``ITEM_EXPONENT``: ``D`` comes from the sample's labels
  (a Chao1 species extrapolation over visits, ``expected_people``), so a stream whose people keep
  coming back (``D`` levels off) is extrapolated with little growth, and one with new people all
  the time with nearly proportional growth. Each setting's impurity is the worst of it and its
  grid neighbours (a cliff next door is a warning). Recall is extrapolated linearly in
  log(size), with the slope measured on the sample's halves and quarters (contiguous blocks).
* **Unlabelled**: app/offline/unlabelled.py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.config import ClusteringConfig, parse_config
from app.errors import FvcError
from app.offline.neighbours import nearest_similarities

FAMILIES = ("plain", "merge", "improved")
MERGE_OFFSET = 0.2  # merge family: merge threshold T + 0.2 (1 - T) by default
MERGE_OFFSETS = (0.0, 0.1, 0.2)  # merge family: the offsets searched
DISCOUNT_FRACTIONS = (0.3, 0.6, 0.8)  # improved family: size_discount = f (1 - T)
# With deferred decisions a window's group is already an average over several images, so
# smaller discounts are searched as well (docs/deferral.md).
DEFERRED_DISCOUNT_FRACTIONS = (0.0, 0.1, 0.3, 0.6)
COARSE_STEPS = 24
DEFAULT_INTERVAL_MS = 5000
DEFAULT_SIZE_FACTOR = 10  # --expected-size default: ten times the sample
EPISODE_GAP = 20  # a person unseen for this many observations has left: the next one is a new visit
ITEM_EXPONENT = 0.4  # impurity ~ people x (observations per person) ** ITEM_EXPONENT
MIN_ROWS = 20
RANGE_LEVEL = 0.9  # how sure the expected precision's range is (precision_range)
BAND_WIDTH = 0.01  # a precision band such as [0.98, 0.99]: sample_for_band


class CalibrationError(FvcError):
    """The sample cannot be calibrated on: the message says what is wrong with the file."""


@dataclass(frozen=True, eq=False)
class Sample:
    """Vectors in stream order (unit length), labels when known, event times and stream ids."""

    X: np.ndarray
    y: np.ndarray | None
    t: np.ndarray
    s: np.ndarray

    @property
    def n(self) -> int:
        """Number of vectors."""
        return int(self.X.shape[0])

    @property
    def stream_ids(self) -> list[str]:
        """The stream ids present, sorted."""
        return sorted({str(v) for v in self.s.tolist()})

    def rows(self, start: int, stop: int) -> Sample:
        """The contiguous block ``[start, stop)``."""
        y = None if self.y is None else self.y[start:stop]
        return Sample(self.X[start:stop], y, self.t[start:stop], self.s[start:stop])


def load_sample(path: str | os.PathLike[str], *, labelled: bool = True) -> Sample:
    """Read ``X`` (and ``y`` unless ``labelled`` is False; ``t``, ``s`` optional) and check them.

    Rows with NaN/Inf or zero vectors, missing labels, a single class or too few rows are refused
    with a CalibrationError saying what to do.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        message = f"cannot read {path}: {exc}"
        raise CalibrationError(message) from exc
    if "X" not in arrays:
        message = f"{path} has no array X (the vectors, n x d)"
        raise CalibrationError(message)
    X = np.asarray(arrays["X"], dtype=np.float32)
    if X.ndim != 2 or X.shape[0] < MIN_ROWS or X.shape[1] < 2:
        message = f"X must be n x d with n >= {MIN_ROWS} and d >= 2; got shape {X.shape}"
        raise CalibrationError(message)
    _check_rows(X)
    y = _labels(arrays, X.shape[0], path) if labelled else None
    n = X.shape[0]
    t = np.asarray(arrays["t"], dtype=np.int64) if "t" in arrays else np.arange(n) * 250
    s = np.asarray(arrays["s"]).astype(str) if "s" in arrays else np.full(n, "camera_0")
    if t.shape != (n,) or s.shape != (n,):
        message = f"t and s must have one entry per row of X ({n})"
        raise CalibrationError(message)
    return Sample(X / np.linalg.norm(X, axis=1, keepdims=True), y, t, s)


def _check_rows(X: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:5]) + (" ..." if bad.size > 5 else "")
        message = f"{bad.size} row(s) of X hold NaN or Inf (rows {shown}); remove them first"
        raise CalibrationError(message)
    zero = np.flatnonzero(np.linalg.norm(X, axis=1) == 0)
    if zero.size:
        message = f"{zero.size} row(s) of X are zero vectors (first: row {zero[0]}); remove them"
        raise CalibrationError(message)


def _labels(arrays: dict[str, np.ndarray], n: int, path: object) -> np.ndarray:
    if "y" not in arrays:
        message = (
            f"{path} has no labels (array y): give labels, or pass --unlabelled to estimate "
            "a threshold from the similarities alone"
        )
        raise CalibrationError(message)
    y = np.asarray(arrays["y"])
    if y.shape != (n,):
        message = f"y must have one label per row of X ({n}); got shape {y.shape}"
        raise CalibrationError(message)
    if np.unique(y).size < 2:
        message = (
            "y holds a single class: precision cannot be measured without at least two "
            "identities (use --unlabelled for unlabelled data)"
        )
        raise CalibrationError(message)
    return y


# -- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One candidate: a family and its threshold (and merge threshold / size discount)."""

    family: str
    threshold: float
    merge_threshold: float | None = None
    size_discount: float | None = None
    deferral_ms: int = 0  # improved family: deferred decisions (docs/deferral.md)

    @classmethod
    def make(
        cls,
        family: str,
        threshold: float,
        fraction: float = 0.0,
        *,
        offset: float = MERGE_OFFSET,
        deferral_ms: int = 0,
    ) -> Setting:
        """The family's setting at ``threshold``.

        ``fraction``: the improved size discount, as a share of ``1 - T``; ``offset``: the merge
        family's flat merge threshold is ``T + offset (1 - T)``.
        """
        t = round(float(threshold), 4)
        if family == "merge":
            return cls(family, t, round(min(1.0, t + offset * (1 - t)), 4))
        if family == "improved":
            return cls(family, t, t, round(min(0.5, fraction * (1 - t)), 4), deferral_ms)
        return cls("plain", t)

    @property
    def share(self) -> float:
        """The improved discount, or the merge family's offset, as a share of ``1 - T``.

        A share, because the settings' size discount and merge threshold differ a little from
        one threshold to the next; plain settings have none (0).

        >>> Setting.make("merge", 0.5, offset=0.2).share, Setting.make("plain", 0.5).share
        (0.2, 0.0)
        """
        room = max(1e-9, 1 - self.threshold)
        if self.family == "improved" and self.size_discount is not None:
            return round(self.size_discount / room, 1)
        if self.family == "merge" and self.merge_threshold is not None:
            return round((self.merge_threshold - self.threshold) / room, 1)
        return 0.0

    @property
    def label(self) -> str:
        """Short readable name."""
        if self.family == "merge":
            return f"merge@{self.merge_threshold:g}"
        if self.family == "improved":
            return f"improved(d={self.size_discount:g})"
        return "plain"

    def config_dict(
        self,
        stream_ids: Sequence[str],
        *,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        base: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A complete config: ``base`` (or a plain one) with this setting's thresholds."""
        data = _base_dict(base, stream_ids)
        clustering = data["clustering_config"]
        for key in ("cluster_merging", "improved_mode"):
            clustering.pop(key, None)
        clustering["method"] = "SIMPLE_AVERAGE"
        clustering.pop("ema_alpha", None)
        for stream in data["input_stream_configs"]:
            stream["reg_stream_config"]["reg_threshold"] = self.threshold
        if self.merge_threshold is not None:
            clustering["cluster_merging"] = {
                "initial_threshold": self.merge_threshold,
                "threshold_discount_rate": 1.0,
                "min_threshold": self._merge_floor(self.merge_threshold),
                "time_interval_ms": interval_ms,
            }
        if self.size_discount is not None:
            clustering["improved_mode"] = {"enabled": True, "size_discount": self.size_discount}
            if self.deferral_ms:
                clustering["improved_mode"]["deferral_ms"] = self.deferral_ms
        return data

    def _merge_floor(self, initial: float) -> float:
        """The lowest merge threshold: the improved mode's discount may lower it, by the floor."""
        if self.size_discount is not None:
            return round(max(0.0, initial - self.size_discount), 4)
        return initial

    def config(self, stream_ids: Sequence[str], **kwargs: Any) -> ClusteringConfig:
        """The validated config of :meth:`config_dict`."""
        return parse_config(self.config_dict(stream_ids, **kwargs))


def _base_dict(base: dict[str, Any] | None, stream_ids: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``base`` covering every stream id (new streams copy its first entry)."""
    import copy

    if base is None:
        base = {"clustering_config": {"method": "SIMPLE_AVERAGE"}, "input_stream_configs": []}
    data = copy.deepcopy(base)
    streams = data["input_stream_configs"]
    known = {s["stream_id"] for s in streams}
    for stream_id in stream_ids:
        if stream_id in known:
            continue
        streams.append(
            {
                "stream_id": stream_id,
                "fv_field_selector": {"feature_vector_path": "features"},
                "reg_stream_config": {"reg_threshold": 1.0},
            }
        )
    return data


# -- measuring ----------------------------------------------------------------------------------


def measure(sample: Sample, setting: Setting, interval_ms: int = DEFAULT_INTERVAL_MS) -> tuple[
    float, float
]:
    """B-cubed precision and recall of ``setting`` on ``sample``, as ``fvc evaluate`` runs it."""
    from app.engine import Engine
    from app.offline.evaluate import evaluate
    from app.offline.synth import Scene
    from app.store import MemoryStore

    if sample.y is None:
        message = "measure needs labels"
        raise CalibrationError(message)
    config = setting.config(sample.stream_ids, interval_ms=interval_ms)
    scene = Scene(X=sample.X, y=sample.y, t=sample.t, s=sample.s)
    figures = evaluate(scene, config, Engine(config), MemoryStore())
    return float(figures["bcubed_precision"]), float(figures["bcubed_recall"])


@dataclass
class Point:
    """One setting measured on the whole sample and on its halves and quarters."""

    setting: Setting
    precision: float
    recall: float
    by_size: dict[int, tuple[float, float]] = field(default_factory=dict)
    expected_precision: float = float("nan")
    expected_recall: float = float("nan")
    impurity: float = float("nan")  # the sample impurity the expected precision grew from


def measure_point(
    sample: Sample, setting: Setting, interval_ms: int, blocks: Sequence[int] = (2, 4)
) -> Point:
    """Measure on the whole sample and, for the size fit, on ``k`` contiguous blocks each."""
    precision, recall = measure(sample, setting, interval_ms)
    point = Point(setting, precision, recall, {sample.n: (precision, recall)})
    for k in blocks:
        size = sample.n // k
        if size < MIN_ROWS:
            continue
        scores = [measure(sample.rows(i * size, (i + 1) * size), setting, interval_ms) for i in
                  range(k)]
        point.by_size[size] = (
            float(np.mean([p for p, _ in scores])), float(np.mean([r for _, r in scores]))
        )
    return point


def visits(y: np.ndarray, gap: int = EPISODE_GAP) -> np.ndarray:
    """How many visits each identity makes in ``y`` (stream order), one entry per identity.

    A visit ends when the person is not seen for ``gap`` observations: items of one visit are
    not independent sightings (a burst of frames, several cameras at once).

    >>> visits(np.array([1, 1, 2, 1] + [3] * 30 + [1])).tolist()
    [2, 1, 1]
    """
    last: dict[Any, int] = {}
    count: dict[Any, int] = {}
    for i, label in enumerate(y.tolist()):
        if label not in last or i - last[label] > gap:
            count[label] = count.get(label, 0) + 1
        last[label] = i
    return np.array(list(count.values()), dtype=np.int64)


def expected_people(y: np.ndarray, expected_size: int) -> float:
    """Distinct identities expected in a stream of ``expected_size`` observations like ``y``.

    Chao1 extrapolation of the species accumulation curve (Shen, Chao and Lin 2003) over visits:
    ``f0 = f1^2 / (2 f2)`` people not seen yet, of whom ``f0 (1 - (1 - f1 / (V f0 + f1))^W)``
    turn up in ``W`` more visits (``V`` visits in the sample, ``f1``/``f2`` people seen in one/two
    visits). People who keep coming back (few seen once) level the curve off; a stream of new
    people all the time (nearly everyone seen once) keeps it growing. Never more than in
    proportion to the size.

    >>> again = np.tile(np.repeat(np.arange(10), 30), 4)  # 10 people, 4 visits each
    >>> round(expected_people(again, 3600), 1)
    10.0
    """
    n = int(y.shape[0])
    counts = visits(y)
    seen = float(counts.size)
    if expected_size <= n or seen == 0:
        return seen
    f1, f2 = int((counts == 1).sum()), int((counts == 2).sum())
    unseen = f1 * f1 / (2 * f2) if f2 else f1 * (f1 - 1) / 2
    if unseen <= 0:
        return seen
    v = float(counts.sum())
    more = v * (expected_size / n - 1)
    new = unseen * (1 - (1 - f1 / (v * unseen + f1)) ** more)
    return float(min(seen + new, seen * expected_size / n))


def size_exponent(people_ratio: float, size_ratio: float) -> float:
    """Exponent ``beta`` of ``impurity ~ size^beta`` between the sample and the expected size.

    ``impurity ~ D m^c`` with ``D`` the people and ``m = size / D`` the observations per person
    (``c = ITEM_EXPONENT``): with ``D ~ size^h``, ``beta = h + c (1 - h)``. From ``c`` (the same
    people seen more often) to 1 (new people in proportion to the size).

    >>> size_exponent(1.0, 10.0), size_exponent(10.0, 10.0)
    (0.4, 1.0)
    """
    if size_ratio <= 1.0:
        return 1.0
    h = float(np.clip(math.log(max(people_ratio, 1.0)) / math.log(size_ratio), 0.0, 1.0))
    return h + ITEM_EXPONENT * (1 - h)


def fit_recall_slope(points: Sequence[Point]) -> float:
    """Shared slope of recall vs log(size) over ``points`` (their halves and quarters), <= 0.

    >>> s = Setting.make("plain", 0.5)
    >>> round(fit_recall_slope([Point(s, 0.96, 0.9, {100: (0.96, 0.9), 50: (0.98, 0.92),
    ...                                              25: (0.99, 0.94)})]), 4)
    -0.0289
    """
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for point in points:
        sizes = sorted(point.by_size)
        if len(sizes) < 2:
            continue
        logs = np.log(np.array(sizes, dtype=np.float64))
        rec = np.array([point.by_size[s][1] for s in sizes])
        xs.append(logs - logs.mean())
        ys.append(rec - rec.mean())
    if not xs:
        return 0.0
    x, y = np.concatenate(xs), np.concatenate(ys)
    if float(x @ x) <= 0:
        return 0.0
    return float(min(0.0, (x @ y) / (x @ x)))  # more people never help recall


def series(points: Sequence[Point]) -> list[list[Point]]:
    """``points`` grouped by family and discount (or merge offset) share, by threshold."""
    groups: dict[tuple[str, float], list[Point]] = {}
    for point in points:
        groups.setdefault((point.setting.family, point.setting.share), []).append(point)
    return [sorted(g, key=lambda p: p.setting.threshold) for g in groups.values()]


def extrapolate(
    point: Point,
    n: int,
    expected_size: int,
    beta: float,
    gamma: float,
    impurity: float | None = None,
) -> None:
    """Fill in the point's expected precision and recall at ``expected_size``.

    ``impurity``: the sample impurity to grow (default the point's own).
    """
    ratio = max(1.0, expected_size / n)
    own = 1.0 - point.precision if impurity is None else impurity
    own = max(own, 0.5 / n)  # nothing seen is not "never": half an item
    point.impurity = own
    point.expected_precision = max(0.0, 1.0 - own * ratio**beta)
    point.expected_recall = float(np.clip(point.recall + gamma * math.log(ratio), 0.0, 1.0))


def extrapolate_series(points: Sequence[Point], n: int, expected_size: int, beta: float) -> None:
    """Extrapolate one series (same family and shape, by threshold).

    A setting's impurity is taken as the worst of it and its neighbours on the threshold grid:
    next to a cliff the stream's own threshold would sit on the wrong side of it. The recall
    slope is the series' own (a larger discount holds recall better as the stream grows).
    """
    gamma = fit_recall_slope(points)
    impurities = [1.0 - p.precision for p in points]
    for i, point in enumerate(points):
        worst = max(impurities[max(0, i - 1) : i + 2])
        extrapolate(point, n, expected_size, beta, gamma, worst)


def sample_needed(target: float, n: int, expected_size: int, beta: float) -> int:
    """Vectors a labelled sample needs before one misplaced observation stays within target.

    A stray observation in a cluster of ``m`` costs ``2 (m - 1) / m`` (about 2) of B-cubed
    precision summed over the sample: ``2 / n`` of its precision, which grows by
    ``(expected_size / n)^beta`` at the expected size. Below this size a single mistake
    decides whether the target looks reached, so no setting can be told apart from the next.

    >>> sample_needed(0.98, 120, 400, 0.4), sample_needed(0.99, 1000, 1000, 0.8)
    (162, 200)
    """
    growth = max(1.0, expected_size / n) ** beta
    return math.ceil(2.0 * growth / (1.0 - target))


def mistakes_range(count: float, level: float = RANGE_LEVEL) -> tuple[float, float]:
    """Range of the mean count of mistakes behind ``count`` seen ones (Garwood's Poisson range).

    >>> [round(v, 2) for v in mistakes_range(6)]
    [2.61, 11.84]
    """
    from scipy.stats import chi2

    tail = (1 - level) / 2
    low = float(chi2.ppf(tail, 2 * count)) / 2 if count > 0 else 0.0
    return low, float(chi2.ppf(1 - tail, 2 * count + 2)) / 2


def precision_range(point: Point, n: int, level: float = RANGE_LEVEL) -> tuple[float, float]:
    """Where the stream's precision may land around ``point``'s expected one, at ``level``.

    The sample's impurity comes from a handful of misplaced observations, about
    ``impurity n / 2`` (each costs about ``2 / n``: sample_needed), and a count of a few is
    known only roughly: 6 seen mistakes mean 2.6 to 11.8 at 90%. The expected impurity scales
    with that count. This is the sampling error alone: the model's own error comes on top.

    >>> s = Setting.make("plain", 0.5)
    >>> p = Point(s, 0.99, 0.9, expected_precision=0.98, impurity=0.01)
    >>> [round(v, 4) for v in precision_range(p, 1200)]
    [0.9605, 0.9913]
    """
    growth = (1 - point.expected_precision) / max(point.impurity, 1e-12)
    low, high = _impurity_range(point.impurity, n, growth, level)
    return max(0.0, 1.0 - high), min(1.0, 1.0 - low)


def sample_for_band(
    point: Point,
    n: int,
    expected_size: int,
    beta: float,
    width: float = BAND_WIDTH,
    level: float = RANGE_LEVEL,
) -> int:
    """Labelled vectors a sample needs for ``precision_range`` to be at most ``width`` wide.

    At the point's impurity the count of mistakes grows with the sample, so the range narrows,
    about as ``sqrt(count) / n`` (and the growth to ``expected_size`` shrinks). A user aiming at
    a band such as [0.98, 0.99] learns how much to label; ``n`` when the sample already does.

    >>> p = Point(Setting.make("plain", 0.5), 0.99, 0.9, impurity=0.01)
    >>> sample_for_band(p, 1200, 4000, 0.5)
    3191
    """

    def wide(size: int) -> bool:
        growth = max(1.0, expected_size / size) ** beta
        low, high = _impurity_range(point.impurity, size, growth, level)
        return high - low > width

    if not wide(n):
        return n
    low, high = n, 2 * n
    while wide(high):
        low, high = high, 2 * high
    while high - low > 1:  # the width falls with the size: bisect for the first narrow enough
        middle = (low + high) // 2
        low, high = (middle, high) if wide(middle) else (low, middle)
    return high


def _impurity_range(
    impurity: float, n: int, growth: float, level: float
) -> tuple[float, float]:
    """Range of the expected impurity: the sample's mistake count's range, each ``2 / n``."""
    low, high = mistakes_range(impurity * n / 2, level)
    per_mistake = 2.0 / n * growth
    return low * per_mistake, high * per_mistake


# -- labelled calibration -----------------------------------------------------------------------


@dataclass
class Calibration:
    """What ``calibrate`` chose, and the measurements it chose from."""

    target_precision: float
    sample_size: int
    expected_size: int
    chosen: Point
    reached: bool
    points: list[Point]
    slopes: dict[str, tuple[float, float]]
    coarse: list[Point]
    people: tuple[int, float] = (0, 0.0)  # identities in the sample, expected at expected_size
    needed: int = 0  # vectors a sample needs to tell settings apart (sample_needed)
    precision_range: tuple[float, float] = (0.0, 1.0)  # the chosen one's (precision_range)
    band_sample: int = 0  # vectors for a range BAND_WIDTH wide (sample_for_band)

    @property
    def mistakes(self) -> float:
        """About how many misplaced observations the sample showed at the chosen setting."""
        return self.chosen.impurity * self.sample_size / 2


def calibrate(
    sample: Sample,
    target_precision: float,
    expected_size: int | None = None,
    *,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    improved: str = "auto",
    progress: Callable[[str], None] | None = None,
    deferral_ms: int = 0,
) -> Calibration:
    """The setting with the most expected recall at expected precision >= the target.

    ``improved``: ``auto`` tries every family, ``on`` only the improved mode, ``off`` none of it.
    ``deferral_ms``: the deferral window the config will run with (a latency the user chooses,
    not searched here); it needs the improved mode, so only that family is tried.
    """
    if sample.y is None:
        message = "calibrate needs labels (or use estimate_unlabelled)"
        raise CalibrationError(message)
    size = expected_size or DEFAULT_SIZE_FACTOR * sample.n
    families = ("improved",) if deferral_ms else _families(improved)
    nn = nearest_similarities(sample.X, 1)[:, 0]
    lo, hi = (float(v) for v in np.quantile(nn, [0.01, 0.995]))
    step = max((hi - lo) / COARSE_STEPS, 1e-4)
    # The fine grid is centred where the coarse scan reaches the target: with deferred decisions
    # the scan runs deferred (a group, an average of several images, is judged at a lower
    # threshold than one image, so the plain scan's place would miss the deferred optimum).
    family = "improved" if deferral_ms else "plain"

    def scan(threshold: float) -> Point:
        setting = Setting.make(family, threshold, deferral_ms=deferral_ms)
        return _report(Point(setting, *measure(sample, setting, interval_ms)), progress)

    coarse = _coarse_scan(scan, lo, hi, step, target_precision)
    anchor = _anchor(coarse, target_precision)
    # One fine step more below: the loosest threshold is only a neighbour (see _choose).
    fine = np.arange(anchor - 1.25 * step, anchor + 2 * step + step / 8, step / 4)
    fine = fine[(fine > 0.0) & (fine < 1.0)]
    people = (int(np.unique(sample.y).size), expected_people(sample.y, size))
    beta = size_exponent(people[1] / people[0], size / sample.n)
    needed = sample_needed(target_precision, sample.n, size, beta)
    measured: dict[str, list[Point]] = {family: [] for family in families}
    grid = fine
    for _ in range(COARSE_STEPS + 1):
        for family in families:
            measured[family] += [_report(measure_point(sample, s, interval_ms), progress)
                                 for s in _family_settings(family, grid, deferral_ms)]
        points, slopes = _extrapolated(measured, sample.n, size, beta)
        cal = _choose(sample, target_precision, size, points, slopes, coarse)
        top = float(grid[-1])
        if cal.reached or sample.n < needed:
            break
        # The coarse anchor is where the *sample* reaches the target; where a flat curve meets
        # it only at the expected size lies above the grid: go on a coarse step at a time. Not
        # on a sample too small to tell settings apart: only one showing no mistake at all
        # would reach the target there, and that says more about the sample than the setting.
        grid = np.arange(top + step / 4, top + step + step / 8, step / 4)
        grid = grid[grid < 1.0]
        if grid.size == 0:
            break
    cal.people = people
    cal.needed = needed
    cal.precision_range = precision_range(cal.chosen, sample.n)
    cal.band_sample = sample_for_band(cal.chosen, sample.n, size, beta)
    return cal


def _extrapolated(
    measured: dict[str, list[Point]], n: int, size: int, beta: float
) -> tuple[list[Point], dict[str, tuple[float, float]]]:
    """Every family's points extrapolated to ``size``, and each family's (beta, recall slope)."""
    points: list[Point] = []
    slopes: dict[str, tuple[float, float]] = {}
    for family, family_points in measured.items():
        slopes[family] = (beta, fit_recall_slope(family_points))
        for group in series(family_points):
            extrapolate_series(group, n, size, beta)
        points += family_points
    return points, slopes


def _families(improved: str) -> tuple[str, ...]:
    """Families to try.

    The improved mode brings its own merge pass; the plain merge pass at a flat threshold is
    tried only without it (``off``): its false merges grow faster with the number of people than
    a sample shows (docs/thresholds.md), so its extrapolation is unsafe.
    """
    if improved == "on":
        return ("improved",)
    if improved == "off":
        return ("plain", "merge")
    return ("plain", "improved")


def _family_settings(family: str, thresholds: np.ndarray, deferral_ms: int = 0) -> list[Setting]:
    """The family's candidates: every threshold with each of its merge shapes or discounts."""
    if family == "improved":
        fractions = DEFERRED_DISCOUNT_FRACTIONS if deferral_ms else DISCOUNT_FRACTIONS
        return [Setting.make(family, t, f, deferral_ms=deferral_ms)
                for f in fractions for t in thresholds]
    if family == "merge":
        return [Setting.make(family, t, offset=o) for o in MERGE_OFFSETS for t in thresholds]
    return [Setting.make(family, t) for t in thresholds]


def _coarse_scan(
    scan: Callable[[float], Point], lo: float, hi: float, step: float, target: float
) -> list[Point]:
    """Points from ``lo`` to ``hi`` by ``step``, extended down until one misses ``target``.

    The range comes from the nearest-neighbour similarities, which suit a single image judged
    on its own; a mode that judges groups (deferred decisions) or discounts large clusters may
    reach the target below it, and the fine grid must straddle the place where precision meets
    the target, not sit on one side of it.
    """
    points = [scan(float(t)) for t in np.arange(lo, hi + step / 2, step)]
    for _ in range(COARSE_STEPS):
        lowest = points[0].setting.threshold
        if points[0].precision < target or lowest - step <= 0.0:
            break
        points.insert(0, scan(lowest - step))
    return points


def _anchor(coarse: Sequence[Point], target: float) -> float:
    """Most recall at sample precision >= target, or the most precise threshold."""
    ok = [p for p in coarse if p.precision >= target]
    if ok:
        return max(ok, key=lambda p: (p.recall, -p.setting.threshold)).setting.threshold
    return max(coarse, key=lambda p: (p.precision, p.setting.threshold)).setting.threshold


def _choose(
    sample: Sample,
    target: float,
    size: int,
    points: list[Point],
    slopes: dict[str, tuple[float, float]],
    coarse: list[Point],
) -> Calibration:
    simple = {f: i for i, f in enumerate(FAMILIES)}  # on equal recall prefer the simpler family
    # The loosest threshold has no looser neighbour to warn of a cliff below it
    # (extrapolate_series), so it is measured only to judge the one above it.
    loosest = min(p.setting.threshold for p in points)
    ok = [p for p in points
          if p.expected_precision >= target and p.setting.threshold > loosest]
    if ok:
        chosen = max(
            ok, key=lambda p: (round(p.expected_recall, 4), -simple[p.setting.family],
                               -p.setting.threshold),
        )
    else:
        chosen = max(points, key=lambda p: (p.expected_precision, p.expected_recall))
    return Calibration(target, sample.n, size, chosen, bool(ok), points, slopes, coarse)


def _report(point: Point, progress: Callable[[str], None] | None) -> Point:
    if progress is not None:
        progress(f"{point.setting.label:>20} T={point.setting.threshold:.4f}  "
                 f"P={point.precision:.4f} R={point.recall:.4f}")
    return point


__all__ = [
    "Calibration",
    "CalibrationError",
    "Point",
    "Sample",
    "Setting",
    "calibrate",
    "expected_people",
    "extrapolate",
    "fit_recall_slope",
    "load_sample",
    "measure",
    "mistakes_range",
    "precision_range",
    "sample_for_band",
    "sample_needed",
    "size_exponent",
    "visits",
]
