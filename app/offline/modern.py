"""Synthetic scenes whose vectors behave like modern face embeddings (FaceNet, ArcFace).

The default scene of :mod:`app.offline.synth` draws identities as isotropic random directions
with isotropic noise: people are near-orthogonal and every image of a person is an equally
noisy copy of one centre, so every method separates them at its best threshold and the methods
cannot be told apart. Real embeddings are not like that (docs/quality.md measures them):

* **identities are anisotropic and share a mean**: identity centres spread over a few leading
  directions (variance falling as 1/i over the axes) around a direction common to all faces, so
  two different people have a cosine of about 0.1 on average and some pairs much more;
* **images vary along nuisance directions**: pose, light, expression and image quality move an
  embedding mostly along the same few leading directions (variance falling as i^-1.5), so one
  image can look more like a stranger in the same conditions than like the same person in
  others, while an average over several images is clean;
* **each walk past a camera shifts the person** (camera angle, light, distance): images of one
  visit are close, images of two visits less so;
* **image quality varies**: the amount of nuisance of each image is drawn (log-normal), and 2%
  of the images are outliers, far from their identity (cosine about 0.3) along the same
  nuisance directions: blur, darkness or a bad crop push the faces of everyone the same way.

With the defaults, two images of one person have a cosine of about 0.65 on average and two
images of different people about 0.1, as FaceNet-style models give; people have 20 to 60
images each and arrive in visits on several cameras, with the timeline of the default scene.
"""

from __future__ import annotations

import numpy as np

from app.offline.synth import NORM_RANGE, Scene, fit_total, refuse, timeline

SHARED = 0.15  # share of a centre's variance along the direction common to all faces
VISIT_COSINE = 0.85  # cosine between the centres of two visits of one person
NOISE = 0.3  # typical variance of an image's nuisance noise, against a unit visit centre
NUISANCE_POWER = 1.5  # nuisance variance falls as i ** -NUISANCE_POWER over the axes
QUALITY_SPREAD = 0.3  # log-normal spread of the per-image noise scale
OUTLIER_FRACTION = 0.02
OUTLIER_COSINE = 0.3  # cosine of an outlier to its visit centre
CHUNK = 8192  # rows per step when building vectors


def make_modern_scene(
    n: int,
    *,
    seed: int,
    dim: int = 512,
    cameras: int = 4,
    identities: int | None = None,
    images: tuple[int, int] = (20, 60),
    burst: tuple[int, int] = (3, 12),
    frame_interval_ms: int = 100,
    start_ms: int = 1_700_000_000_000,
) -> Scene:
    """A reproducible scene of ``n`` observations of ``identities`` people (default about n/40).

    Each person has between ``images[0]`` and ``images[1]`` observations (nudged so that they
    add up to ``n``), seen in visits of about ``burst`` frames on one camera each.

    >>> scene = make_modern_scene(2000, seed=7, dim=64)
    >>> scene.X.shape, scene.X.dtype, len(set(scene.y.tolist()))
    ((2000, 64), dtype('float32'), 50)
    """
    k = _check(n, dim, cameras, identities, images, burst)
    rng = np.random.default_rng(seed)
    counts = fit_total(rng, rng.integers(images[0], images[1] + 1, k), n)
    person, visit_len = _visits(rng, counts, burst)
    t, cam, order = timeline(rng, visit_len, cameras, frame_interval_ms, start_ms)
    visit = np.repeat(np.arange(visit_len.size, dtype=np.int64), visit_len)[order]
    X = _vectors(rng, person, visit, k, dim)
    names = np.array([f"camera_{c}" for c in range(cameras)])
    return Scene(X=X, y=person[visit].astype(np.int64), t=t, s=names[cam], k=visit)


def _check(
    n: int,
    dim: int,
    cameras: int,
    identities: int | None,
    images: tuple[int, int],
    burst: tuple[int, int],
) -> int:
    """Validate the arguments; return the number of identities."""
    k = max(1, round(2 * n / (images[0] + images[1]))) if identities is None else int(identities)
    problems = [
        (n < 1, f"n must be at least 1, got {n}"),
        (dim < 2, f"dim must be at least 2, got {dim}"),
        (cameras < 1, f"cameras must be at least 1, got {cameras}"),
        (not 1 <= k <= n, f"identities must be between 1 and n={n}, got {k}"),
        (not 1 <= images[0] <= images[1], f"images must satisfy 1 <= lo <= hi, got {images}"),
        (not 1 <= burst[0] <= burst[1], f"burst must satisfy 1 <= lo <= hi, got {burst}"),
    ]
    refuse(problems)
    return k


def _visits(
    rng: np.random.Generator, counts: np.ndarray, burst: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Whose each visit is and how long it is, visits in a random order.

    A person with ``c`` images makes about ``c / mean burst`` visits; each image falls into one
    of them at random, and visits left empty are dropped.
    """
    per_person = np.maximum(1, np.rint(counts / ((burst[0] + burst[1]) / 2))).astype(np.int64)
    first = np.cumsum(per_person) - per_person
    owner = np.repeat(np.arange(counts.size), counts)
    slot = first[owner] + (rng.random(owner.size) * per_person[owner]).astype(np.int64)
    visit_len = np.bincount(slot, minlength=int(per_person.sum()))
    person = np.repeat(np.arange(counts.size), per_person)
    keep = visit_len > 0
    shuffle = rng.permutation(int(keep.sum()))
    return person[keep][shuffle], visit_len[keep][shuffle]


def _directions(rng: np.random.Generator, count: int, dim: int, power: float) -> np.ndarray:
    """Random unit vectors whose variance along axis i falls as ``i ** -power``."""
    x = rng.standard_normal((count, dim), dtype=np.float32)
    x *= (np.arange(1, dim + 1, dtype=np.float32) ** (-power / 2))[None, :]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _vectors(
    rng: np.random.Generator, person: np.ndarray, visit: np.ndarray, k: int, dim: int
) -> np.ndarray:
    """Images: visit centres around identity centres, plus nuisance noise (much of it for outliers).

    The math: a unit centre ``c`` plus ``b u`` with ``u`` a unit vector nearly orthogonal to it
    has cosine ``1 / sqrt(1 + b**2)`` to ``c``, so two visits ``c + b u1``, ``c + b u2`` have
    cosine ``1 / (1 + b**2)``: ``b**2 = 1 / VISIT_COSINE - 1``. Likewise an image with noise of
    variance ``s**2`` has cosine ``1 / sqrt(1 + s**2)`` to its visit centre.
    """
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    own, shared = np.float32(np.sqrt(1 - SHARED)), np.float32(np.sqrt(SHARED))
    centres = own * _directions(rng, k, dim, 1.0) + shared * common
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shift = np.float32(np.sqrt(1 / VISIT_COSINE - 1))
    visits = centres[person] + shift * _directions(rng, person.size, dim, 1.0)
    visits /= np.linalg.norm(visits, axis=1, keepdims=True)
    scale = np.sqrt(NOISE) * rng.lognormal(-(QUALITY_SPREAD**2) / 2, QUALITY_SPREAD, visit.size)
    outlier = rng.random(visit.size) < OUTLIER_FRACTION
    scale[outlier] = np.sqrt(1 / OUTLIER_COSINE**2 - 1)
    scale = scale.astype(np.float32)
    X = np.empty((visit.size, dim), dtype=np.float32)
    for lo in range(0, visit.size, CHUNK):
        rows = slice(lo, lo + CHUNK)
        noise = _directions(rng, X[rows].shape[0], dim, NUISANCE_POWER)
        X[rows] = visits[visit[rows]] + scale[rows, None] * noise
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    X *= (rng.uniform(*NORM_RANGE, visit.size) / norms).astype(np.float32)[:, None]
    return X
