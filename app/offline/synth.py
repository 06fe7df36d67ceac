"""Synthetic multi-camera scenes: labelled feature vectors that arrive the way cameras see people.

Real labelled face data is small and arrives in a random order; a camera network instead sees
people in bursts (several frames while someone walks past), a few regulars who come back often,
many passers-by seen once, and several visits going on at once on different cameras. This module
makes such streams, at any size and reproducibly from a seed, so the online clusterer can be
measured (``fvc evaluate``) and load-tested (``fvc produce``) without private data.

The files it writes have the same layout as ``shared/data/lfw_dev.npz``: ``X`` float32 (n, dim),
``y`` int64 identity, ``t`` int64 event time in ms, ``s`` stream id (``camera_0`` ...), and
``k`` int64 track id: the visit (one walk past one camera) the row belongs to, as a tracker would
number it.

Here identities are isotropic random directions; :mod:`app.offline.modern` makes the same kind of
stream with vectors that behave like FaceNet/ArcFace-style embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NORM_RANGE = (0.8, 1.6)  # raw vectors are not unit length, so consumers must normalise
ZIPF_CAP = 1000  # bounds the popularity of the most frequent visitor
CONCURRENCY_PER_CAMERA = 2.0  # visits in progress at once on one camera, on average
FRAME_SKIP_P = 0.8  # chance that the next detection of a visit is on the very next frame
CHUNK = 8192  # rows per step when building vectors


@dataclass(frozen=True, eq=False)
class Scene:
    """A labelled stream: row i is a vector ``X[i]`` of identity ``y[i]`` at ``t[i]`` on ``s[i]``.

    Rows are in event-time order (``t`` non-decreasing), as a replay of the cameras would be.
    ``k`` (track ids) is None for files without tracks, such as real face sets.
    """

    X: np.ndarray
    y: np.ndarray
    t: np.ndarray
    s: np.ndarray
    k: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.X.shape[1])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``X, y, t, s`` (and ``k``) to an ``.npz`` at exactly ``path`` (no suffix added)."""
        target = Path(path)
        tracks = {} if self.k is None else {"k": self.k}
        with open(target, "wb") as handle:
            np.savez(handle, X=self.X, y=self.y, t=self.t, s=self.s, **tracks)
        return target


def load_scene(path: str | os.PathLike[str]) -> Scene:
    """Read a scene (or any file in the same layout, such as ``lfw_dev.npz``).

    >>> import tempfile, os
    >>> scene = make_scene(50, seed=1, dim=8)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     back = load_scene(scene.save(os.path.join(d, "s.npz")))
    >>> bool((back.X == scene.X).all()), back.s.dtype.kind
    (True, 'U')
    """
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in ("X", "y", "t", "s") if key not in data.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {', '.join(missing)}")
        return Scene(
            X=data["X"].astype(np.float32, copy=False),
            y=data["y"].astype(np.int64, copy=False),
            t=data["t"].astype(np.int64, copy=False),
            s=data["s"].astype(str),
            k=data["k"].astype(np.int64, copy=False) if "k" in data.files else None,
        )


def make_scene(
    n: int,
    *,
    seed: int,
    dim: int = 512,
    cameras: int = 4,
    identities: int | None = None,
    intra_cosine: tuple[float, float] = (0.6, 0.75),
    distractor_fraction: float = 0.2,
    zipf_a: float = 1.5,
    burst: tuple[int, int] = (3, 12),
    frame_interval_ms: int = 100,
    start_ms: int = 1_700_000_000_000,
) -> Scene:
    """A reproducible scene of ``n`` observations of ``identities`` people (default about n/10).

    ``intra_cosine`` is the range of the mean cosine between two observations of one person
    (drawn per person); different people are near-orthogonal. ``distractor_fraction`` of the
    people are seen exactly once; the others come in ``burst``-long visits, and how many visits
    each makes follows a Zipf law with exponent ``zipf_a``.

    >>> scene = make_scene(1000, seed=7, dim=64)
    >>> scene.X.shape, scene.X.dtype, len(set(scene.y.tolist()))
    ((1000, 64), dtype('float32'), 100)
    """
    k = _check(n, dim, cameras, identities, intra_cosine, distractor_fraction, zipf_a, burst)
    rng = np.random.default_rng(seed)
    visit_id, visit_len = _visits(rng, n, k, distractor_fraction, zipf_a, burst)
    t, cam, order = timeline(rng, visit_len, cameras, frame_interval_ms, start_ms)
    y = np.repeat(visit_id, visit_len)[order]
    track = np.repeat(np.arange(visit_len.size, dtype=np.int64), visit_len)[order]
    X = _vectors(rng, y, k, dim, intra_cosine)
    names = np.array([f"camera_{c}" for c in range(cameras)])
    return Scene(X=X, y=y.astype(np.int64), t=t, s=names[cam], k=track)


def _check(
    n: int,
    dim: int,
    cameras: int,
    identities: int | None,
    intra_cosine: tuple[float, float],
    distractor_fraction: float,
    zipf_a: float,
    burst: tuple[int, int],
) -> int:
    """Validate the arguments; return the number of identities."""
    k = max(1, round(n / 10)) if identities is None else int(identities)
    lo, hi = intra_cosine
    problems = [
        (n < 1, f"n must be at least 1, got {n}"),
        (dim < 2, f"dim must be at least 2, got {dim}"),
        (cameras < 1, f"cameras must be at least 1, got {cameras}"),
        (not 1 <= k <= n, f"identities must be between 1 and n={n}, got {k}"),
        (not 0 < lo <= hi < 1, f"intra_cosine must satisfy 0 < lo <= hi < 1, got {intra_cosine}"),
        (not 0 <= distractor_fraction <= 1, "distractor_fraction must be within [0, 1]"),
        (zipf_a <= 1, f"zipf_a must be above 1, got {zipf_a}"),
        (not 1 <= burst[0] <= burst[1], f"burst must satisfy 1 <= lo <= hi, got {burst}"),
    ]
    refuse(problems)
    return k


def refuse(problems: Iterable[tuple[bool, str]]) -> None:
    """Raise ValueError with the first problem that holds (a scene's argument checks)."""
    for bad, message in problems:
        if bad:
            raise ValueError(message)


def _visits(
    rng: np.random.Generator,
    n: int,
    k: int,
    distractor_fraction: float,
    zipf_a: float,
    burst: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Who visits, and how many observations each visit yields; the lengths add up to ``n``.

    Distractors make one visit of one observation. Every other person makes at least one visit;
    the extra visits needed to fill ``n`` go to people in proportion to a Zipf-distributed
    popularity, so most come once and a few come back many times.
    """
    n_distractors = min(round(distractor_fraction * k), k - 1) if k > 1 else 0
    people = rng.permutation(k)
    distractors, regulars = people[:n_distractors], people[n_distractors:]
    budget = n - n_distractors
    mean_burst = (burst[0] + burst[1]) / 2
    extra = max(0, round(budget / mean_burst) - regulars.size)
    popularity = np.minimum(rng.zipf(zipf_a, regulars.size), ZIPF_CAP).astype(np.float64)
    counts = 1 + rng.multinomial(extra, popularity / popularity.sum())
    regular_visits = rng.permutation(np.repeat(regulars, counts))
    lengths = rng.integers(burst[0], burst[1] + 1, regular_visits.size)
    lengths = fit_total(rng, lengths, budget)
    visit_id = np.concatenate([regular_visits, distractors])
    visit_len = np.concatenate([lengths, np.ones(n_distractors, dtype=lengths.dtype)])
    shuffle = rng.permutation(visit_id.size)
    return visit_id[shuffle], visit_len[shuffle]


def fit_total(rng: np.random.Generator, lengths: np.ndarray, total: int) -> np.ndarray:
    """Nudge counts by one here and there (never below 1) until they sum to ``total``."""
    lengths = lengths.copy()
    short = total - int(lengths.sum())
    if short > 0:
        lengths += rng.multinomial(short, np.full(lengths.size, 1 / lengths.size))
    while short < 0:  # a few rounds at most: each takes up to one from every visit above 1
        room = np.flatnonzero(lengths > 1)
        take = rng.choice(room, size=min(-short, room.size), replace=False)
        lengths[take] -= 1
        short += take.size
    return lengths


def timeline(
    rng: np.random.Generator,
    visit_len: np.ndarray,
    cameras: int,
    frame_interval_ms: int,
    start_ms: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Event times and cameras of every observation, and the order that sorts them by time.

    Visits start as a Poisson process tuned so that about ``CONCURRENCY_PER_CAMERA`` visits are in
    progress on each camera; within a visit detections fall on successive frames, now and then
    skipping one (a missed detection). Returns ``(t, camera, order)`` already in time order.
    """
    n_visits = visit_len.size
    mean_span = float(visit_len.mean()) * frame_interval_ms / FRAME_SKIP_P
    gap = mean_span / (CONCURRENCY_PER_CAMERA * cameras)
    frames = np.floor(np.cumsum(rng.exponential(gap, n_visits)) / frame_interval_ms)
    visit_cam = rng.integers(0, cameras, n_visits)
    owner = np.repeat(np.arange(n_visits), visit_len)
    steps = rng.geometric(FRAME_SKIP_P, owner.size)
    steps[np.cumsum(visit_len) - visit_len] = 0  # the first detection of a visit starts it
    walked = np.cumsum(steps)
    offset = walked - np.repeat(walked[np.cumsum(visit_len) - visit_len], visit_len)
    t_all = start_ms + (frames[owner].astype(np.int64) + offset) * frame_interval_ms
    cam_all = visit_cam[owner]
    order = np.lexsort((owner, cam_all, t_all))
    return t_all[order].astype(np.int64), cam_all[order], order


def _vectors(
    rng: np.random.Generator,
    y: np.ndarray,
    k: int,
    dim: int,
    intra_cosine: tuple[float, float],
) -> np.ndarray:
    """Noisy observations of random identity centres, each scaled to a random norm.

    The math: an identity centre ``mu`` is a random unit vector (in high dimension, centres of
    different people are nearly orthogonal, cosine about N(0, 1/dim)). An observation is
    ``x = mu + e`` with ``e`` isotropic Gaussian of total variance ``s**2`` (each coordinate has
    variance ``s**2 / dim``). Then ``|x|**2 ~ 1 + s**2`` and ``x . mu ~ 1``, so
    ``E cos(x, mu) ~ 1 / sqrt(1 + s**2)``; two observations share only ``mu`` (their noises are
    nearly orthogonal), so their cosine is ``~ 1 / (1 + s**2)``. To give a person the pairwise
    cosine ``c`` drawn from ``intra_cosine`` we therefore take ``s**2 = 1 / c - 1``.
    """
    centres = rng.standard_normal((k, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    pairwise = rng.uniform(intra_cosine[0], intra_cosine[1], k)
    sigma = np.sqrt(1.0 / pairwise - 1.0) / np.sqrt(dim)  # per-coordinate noise std
    sigma = sigma.astype(np.float32)
    X = rng.standard_normal((y.size, dim), dtype=np.float32)
    for lo in range(0, y.size, CHUNK):  # chunks keep the gathered centres small and in cache
        rows = slice(lo, lo + CHUNK)
        X[rows] *= sigma[y[rows], None]
        X[rows] += centres[y[rows]]
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    X *= (rng.uniform(*NORM_RANGE, y.size) / norms).astype(np.float32)[:, None]
    return X


def measure_cosines(
    X: np.ndarray, y: np.ndarray, *, pairs: int = 20_000, seed: int = 0
) -> tuple[float, float]:
    """Mean cosine of random same-identity pairs and of random different-identity pairs.

    A quick check that a scene (or a real file) has the separation it should; NaN where there
    are no such pairs.

    >>> scene = make_scene(2000, seed=3, dim=256, intra_cosine=(0.7, 0.7))
    >>> same, diff = measure_cosines(scene.X, scene.y)
    >>> round(same, 1), round(diff, 1)
    (0.7, 0.0)
    """
    rng = np.random.default_rng(seed)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    order = np.argsort(y, kind="stable")
    _, start, size = np.unique(y[order], return_index=True, return_counts=True)
    groups = np.flatnonzero(size > 1)
    same = float("nan")
    if groups.size:
        g = groups[rng.integers(0, groups.size, pairs)]
        i = rng.integers(0, size[g])
        j = (i + rng.integers(1, size[g])) % size[g]
        a, b = order[start[g] + i], order[start[g] + j]
        same = float(np.einsum("ij,ij->i", unit[a], unit[b]).mean())
    a, b = rng.integers(0, y.size, (2, pairs))
    keep = y[a] != y[b]
    diff = float("nan")
    if keep.any():
        diff = float(np.einsum("ij,ij->i", unit[a[keep]], unit[b[keep]]).mean())
    return same, diff
