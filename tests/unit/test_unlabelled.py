"""``fvc calibrate --unlabelled``: a threshold from the vectors alone, on old and modern models."""

from __future__ import annotations

import numpy as np

from app.offline.calibrate import Sample, Setting, measure
from app.offline.modern import make_modern_scene
from app.offline.unlabelled import (
    FIRST_K,
    estimate_unlabelled,
    mixture_threshold,
    neighbours_needed,
)


def _sample(scene) -> Sample:
    units = (scene.X / np.linalg.norm(scene.X, axis=1, keepdims=True)).astype(np.float32)
    return Sample(units, scene.y, scene.t, scene.s.astype(str))


def _neighbour_lists(own: int, rows: int = 200, width: int = 160) -> np.ndarray:
    """Each row: ``own`` genuine similarities (~0.8), then strangers (~0.3), most similar first."""
    rng = np.random.default_rng(0)
    genuine = rng.normal(0.8, 0.03, (rows, own))
    strangers = rng.normal(0.3, 0.05, (rows, width - own))
    return -np.sort(-np.concatenate([genuine, strangers], axis=1), axis=1)


def test_the_neighbour_list_widens_until_strangers_dominate_it() -> None:
    assert neighbours_needed(_neighbour_lists(own=2)) == FIRST_K
    assert neighbours_needed(_neighbour_lists(own=30)) == 80  # 10, 20, 40 are half own images


def test_a_larger_expected_stream_asks_for_a_stricter_threshold() -> None:
    top = _neighbour_lists(own=2)[:, :FIRST_K]
    thresholds = [mixture_threshold(top, 200, size, 0.98)[0] for size in (200, 2000, 20000)]
    assert thresholds == sorted(thresholds)
    assert 0.3 < thresholds[0] < thresholds[-1] < 0.8  # between the strangers and the genuine


def test_modern_embeddings_get_a_usable_threshold() -> None:
    # Forty images per person: the first neighbour is nearly always the same person, so a
    # first-neighbour mixture has no strangers to fit (it used to answer 1.0, recall 0.03).
    sample = _sample(make_modern_scene(1200, seed=4, identities=30))
    estimate = estimate_unlabelled(sample, 0.98, sample.n, bootstrap=10)
    assert estimate.neighbours > FIRST_K
    precision, recall = measure(sample, Setting.make("plain", estimate.threshold))
    assert precision >= 0.98
    assert recall >= 0.5
    lo, hi = estimate.interval
    assert lo < estimate.threshold < hi


def test_a_sample_of_few_people_with_many_images_each_is_refused_an_estimate() -> None:
    # two people, 800 images each: even 640 neighbours are the same person's other images
    sample = _sample(make_modern_scene(1600, seed=2, identities=2))
    estimate = estimate_unlabelled(sample, 0.98, sample.n, bootstrap=5)
    assert not estimate.strangers_found and estimate.confidence == "low"
    assert estimate.describe().startswith("no estimate")
