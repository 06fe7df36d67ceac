"""A reg_threshold from the vectors alone, when no labels exist: ``fvc calibrate --unlabelled``.

Each vector's nearest neighbours in the sample are other images of the same person (genuine)
or strangers (impostors), and the threshold must keep the most similar stranger out. Modern
embeddings put a person's other images first: with tens of images per person the *first*
neighbour is nearly always genuine, so the impostors only show further down the list. The
estimate therefore looks at each vector's ``K`` nearest neighbours, widening ``K`` (10, 20,
40, ...) until a two-component Gaussian mixture of their similarities says that at least 60%
of them are strangers, so the impostor component is the strangers' tail, not a person's
weaker images. The threshold is where the most similar stranger of a vector, at the expected
size, stays below it for a share ``P`` of the vectors. A bootstrap over the vectors gives the
interval and the confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from app.offline.calibrate import DEFAULT_SIZE_FACTOR, Sample
from app.offline.neighbours import nearest_similarities

FIRST_K = 10  # neighbours looked at first; doubled until IMPOSTOR_SHARE of them are strangers
MAX_K = 640
BINS = 2048  # the mixture is fitted to a histogram of this many bins
IMPOSTOR_SHARE = 0.6  # clearly more strangers than own images: their tail is what is fitted


@dataclass(frozen=True)
class Estimate:
    """A threshold from the nearest-neighbour similarities alone, and how far to trust it."""

    threshold: float
    interval: tuple[float, float]
    confidence: str
    separation: float
    impostor: tuple[float, float, float]  # weight, mean, std of the impostor component
    genuine: tuple[float, float, float]
    expected_size: int
    expected_precision: float
    neighbours: int  # K: how many nearest neighbours of each vector were looked at
    strangers_found: bool = True  # False: even the widest list was mostly one person's images

    def describe(self) -> str:
        """One paragraph for the operator."""
        lo, hi = self.interval
        if not self.strangers_found:
            return (
                f"no estimate: each vector's {self.neighbours} nearest neighbours are still "
                "mostly images of the same person (a sample of few people with many images "
                f"each), so the strangers cannot be told from them; reg_threshold "
                f"{self.threshold:.4f} keeps nearly everything apart. Calibrate on a labelled "
                "sample (fvc calibrate without --unlabelled), or give one with more people."
            )
        return (
            f"estimated reg_threshold {self.threshold:.4f} (90% bootstrap interval {lo:.4f} - "
            f"{hi:.4f}); confidence {self.confidence}: similarities to each vector's "
            f"{self.neighbours} nearest neighbours split into "
            f"impostors ~{self.impostor[1]:.3f} +- {self.impostor[2]:.3f} "
            f"({self.impostor[0]:.0%}) and genuine matches ~{self.genuine[1]:.3f} +- "
            f"{self.genuine[2]:.3f}, separation {self.separation:.2f} (above 2 is clean). "
            "Check it on a labelled sample (fvc calibrate without --unlabelled) when you can."
        )


def fit_mixture(values: np.ndarray, iterations: int = 200) -> tuple[np.ndarray, ...]:
    """Two-component 1-D Gaussian mixture by EM: (weights, means, stds), lower mean first.

    EM runs over a fine histogram of the values (``BINS`` bins, a bin's values at its centre),
    so a fit costs the same for a thousand values or a million.

    >>> rng = np.random.default_rng(0)
    >>> v = np.concatenate([rng.normal(0.3, 0.02, 300), rng.normal(0.7, 0.05, 700)])
    >>> w, mu, sd = fit_mixture(v)
    >>> [round(float(x), 2) for x in (w[0], mu[0], mu[1])]
    [0.3, 0.3, 0.7]
    """
    v = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(v, bins=BINS)
    keep = counts > 0
    x, c = ((edges[:-1] + edges[1:]) / 2)[keep], counts[keep].astype(np.float64)
    mu = np.quantile(v, [0.2, 0.8])
    sd = np.full(2, max(float(v.std()) / 2, 1e-4))
    w = np.array([0.5, 0.5])
    for _ in range(iterations):
        dens = w / (sd * math.sqrt(2 * math.pi)) * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2)
        resp = c[:, None] * dens / np.maximum(dens.sum(axis=1, keepdims=True), 1e-300)
        nk = np.maximum(resp.sum(axis=0), 1e-9)
        w = nk / v.size
        before = mu
        mu = (resp * x[:, None]).sum(axis=0) / nk
        sd = np.sqrt(np.maximum((resp * (x[:, None] - mu) ** 2).sum(axis=0) / nk, 1e-10))
        if float(np.abs(mu - before).max()) < 1e-7:
            break
    order = np.argsort(mu)
    return w[order], mu[order], sd[order]


def mixture_threshold(
    top: np.ndarray, n: int, size: int, target: float
) -> tuple[float, tuple[np.ndarray, ...]]:
    """The threshold from the rows' nearest-neighbour similarities ``top``, and the fit.

    ``top`` holds ``K`` similarities per row out of ``n`` vectors, a share ``w`` of them
    impostors (the mixture's lower component ``G``). At ``size`` vectors each row has about
    ``m = K w size / n`` strangers of that kind, and the most similar of them stays below T
    for a share ``target`` of the rows: ``G(T)^m = target``.
    """
    w, mu, sd = fit_mixture(top.ravel())
    strangers = max(top.shape[1] * float(w[0]) * max(size, n) / n, 1.0)
    quantile = min(target ** (1.0 / strangers), 1.0 - 1e-12)
    threshold = NormalDist(float(mu[0]), float(sd[0])).inv_cdf(quantile)
    return float(threshold), (w, mu, sd)


def neighbours_needed(top: np.ndarray) -> int:
    """The smallest ``K`` (10, 20, 40, ...) whose similarities are mostly impostors.

    Fewer, and a person's other images fill the list: the lower component is then the weaker
    genuine matches, not strangers (modern embeddings, tens of images per person).
    """
    k = FIRST_K
    while k < top.shape[1]:
        if fit_mixture(top[:, :k].ravel())[0][0] >= IMPOSTOR_SHARE:
            return k
        k *= 2
    return int(top.shape[1])


def estimate_unlabelled(
    sample: Sample,
    target_precision: float,
    expected_size: int | None = None,
    *,
    bootstrap: int = 100,
    seed: int = 0,
) -> Estimate:
    """A reg_threshold from the nearest-neighbour similarity distribution alone."""
    size = expected_size or DEFAULT_SIZE_FACTOR * sample.n
    wide = nearest_similarities(sample.X, MAX_K, seed=seed)
    k = neighbours_needed(wide)
    top = wide[:, :k]
    threshold, (w, mu, sd) = mixture_threshold(top, sample.n, size, target_precision)
    rng = np.random.default_rng(seed)
    again = [
        mixture_threshold(top[rng.integers(0, len(top), len(top))], sample.n, size,
                          target_precision)[0]
        for _ in range(bootstrap)
    ]
    lo, hi = (float(v) for v in np.quantile(again, [0.05, 0.95]))
    found = bool(w[0] >= IMPOSTOR_SHARE)
    separation = float(math.sqrt(2) * abs(mu[1] - mu[0]) / math.sqrt(sd[0] ** 2 + sd[1] ** 2))
    width = (hi - lo) / max(float(mu[1] - mu[0]), 1e-9)
    small = min(w) < 0.02
    confidence = "high" if separation > 3 and width < 0.15 and not small else (
        "medium" if separation > 2 and width < 0.4 else "low"
    )
    if not found:
        confidence = "low"
    threshold = float(np.clip(threshold, 0.0, 1.0))
    return Estimate(
        threshold=round(threshold, 4),
        interval=(round(lo, 4), round(hi, 4)),
        confidence=confidence,
        separation=round(separation, 3),
        impostor=(float(w[0]), float(mu[0]), float(sd[0])),
        genuine=(float(w[1]), float(mu[1]), float(sd[1])),
        expected_size=size,
        expected_precision=target_precision,
        neighbours=k,
        strangers_found=found,
    )


__all__ = [
    "Estimate",
    "estimate_unlabelled",
    "fit_mixture",
    "mixture_threshold",
    "neighbours_needed",
]
