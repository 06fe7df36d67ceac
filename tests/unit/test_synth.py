"""The synthetic scene generator and ``fvc synth``: the scenes look like what they claim to be."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pytest

from app.commands import synth as synth_command
from app.errors import FvcError
from app.offline.modern import make_modern_scene
from app.offline.synth import Scene, load_scene, make_scene, measure_cosines
from app.offline.vector_stats import VectorStats, vector_stats

LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "lfw_dev.npz"


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene(20_000, seed=11, dim=256)


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    a, b = make_scene(3000, seed=4, dim=32), make_scene(3000, seed=4, dim=32)
    for key in "Xytsk":
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.X, make_scene(3000, seed=5, dim=32).X)


def test_shapes_dtypes_and_counts(scene: Scene) -> None:
    assert scene.X.shape == (20_000, 256) and scene.X.dtype == np.float32
    assert scene.y.shape == scene.t.shape == scene.s.shape == (20_000,)
    assert scene.y.dtype == np.int64 and scene.t.dtype == np.int64 and scene.s.dtype.kind == "U"
    assert np.unique(scene.y).size == 2000  # about n / 10 identities by default
    assert (scene.n, scene.dim) == (20_000, 256)


def test_vectors_are_not_unit_length(scene: Scene) -> None:
    norms = np.linalg.norm(scene.X, axis=1)
    assert norms.min() >= 0.8 - 1e-4 and norms.max() <= 1.6 + 1e-4
    assert norms.std() > 0.1


def test_times_are_in_order_on_the_frame_grid(scene: Scene) -> None:
    assert (np.diff(scene.t) >= 0).all()
    assert scene.t[0] >= 1_700_000_000_000
    assert ((scene.t - 1_700_000_000_000) % 100 == 0).all()


def test_cameras_are_named_streams() -> None:
    s = make_scene(5000, seed=2, dim=16, cameras=6).s
    assert set(s.tolist()) == {f"camera_{i}" for i in range(6)}


def test_people_pass_in_interleaved_bursts(scene: Scene) -> None:
    order = np.lexsort((scene.t, scene.y))
    y, t, s = scene.y[order], scene.t[order], scene.s[order]
    follows = y[1:] == y[:-1]  # next observation of the same person
    near = (t[1:] - t[:-1] <= 300) & (s[1:] == s[:-1])
    assert near[follows].mean() > 0.8  # mostly a few frames later on the same camera
    assert (scene.y[1:] == scene.y[:-1]).mean() < 0.2  # but other visits come in between


def test_a_few_people_come_back_often(scene: Scene) -> None:
    counts = np.bincount(scene.y)
    regulars = counts[counts > 1]
    assert counts.max() > 8 * np.median(regulars)


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_distractors_are_seen_once(fraction: float) -> None:
    counts = np.bincount(make_scene(10_000, seed=3, dim=16, distractor_fraction=fraction).y)
    assert abs((counts == 1).mean() - fraction) < 0.03


@pytest.mark.parametrize("intra", [(0.6, 0.75), (0.55, 0.65)])
def test_measured_cosines_match_the_request(scene: Scene, intra: tuple[float, float]) -> None:
    s = scene if intra == (0.6, 0.75) else make_scene(20_000, seed=11, dim=256, intra_cosine=intra)
    same, diff = measure_cosines(s.X, s.y)
    assert intra[0] - 0.05 <= same <= intra[1] + 0.05
    assert abs(same - sum(intra) / 2) < 0.03  # drawn uniformly per person
    assert abs(diff) < 0.05


def test_pairwise_cosine_follows_the_noise_model() -> None:
    # One person, all pairs: mean pairwise cosine is 1 / (1 + s^2) = the requested value.
    s = make_scene(400, seed=8, identities=2, distractor_fraction=0.0, intra_cosine=(0.65, 0.65))
    for person in (0, 1):
        u = _unit(s.X[s.y == person])
        gram = u @ u.T
        pairs = gram[np.triu_indices(len(u), 1)]
        assert pairs.mean() == pytest.approx(0.65, abs=0.01)


def test_save_load_round_trip(tmp_path: Path, scene: Scene) -> None:
    path = scene.save(tmp_path / "scene")  # no suffix added: the file is where it was asked
    assert path == tmp_path / "scene" and path.exists()
    back = load_scene(path)
    for key in "Xytsk":
        assert np.array_equal(getattr(back, key), getattr(scene, key))
        assert getattr(back, key).dtype == getattr(scene, key).dtype


def test_a_track_is_one_walk_of_one_person_past_one_camera(scene: Scene) -> None:
    assert scene.k is not None and scene.k.shape == (scene.n,)
    for track in np.unique(scene.k)[:200]:
        rows = scene.k == track
        assert len(set(scene.y[rows].tolist())) == 1
        assert len(set(scene.s[rows].tolist())) == 1
    assert len(np.unique(scene.k)) < scene.n  # walks have several frames


def test_files_without_tracks_load_with_none(tmp_path: Path, scene: Scene) -> None:
    np.savez(tmp_path / "plain.npz", X=scene.X, y=scene.y, t=scene.t, s=scene.s)
    assert load_scene(tmp_path / "plain.npz").k is None


def test_load_refuses_a_file_without_the_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", X=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="y, t, s"):
        load_scene(tmp_path / "bad.npz")


@pytest.mark.skipif(not LFW.exists(), reason=f"{LFW} is absent")
def test_loads_the_real_dev_file() -> None:
    real = load_scene(LFW)
    assert real.X.shape[1] == 128 and real.s[0] == "camera_0"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 10, "identities": 11},
        {"n": 10, "intra_cosine": (0.8, 0.7)},
        {"n": 10, "intra_cosine": (0.5, 1.0)},
        {"n": 10, "distractor_fraction": 1.5},
        {"n": 10, "burst": (0, 3)},
        {"n": 10, "cameras": 0},
    ],
)
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_scene(seed=0, **kwargs)


@pytest.mark.parametrize("n", [1, 2, 7, 33])
def test_tiny_scenes(n: int) -> None:
    s = make_scene(n, seed=1, dim=8)
    assert s.X.shape == (n, 8) and (np.diff(s.t) >= 0).all()


def test_fifty_thousand_512d_vectors_take_well_under_two_seconds() -> None:
    start = time.process_time()
    make_scene(50_000, seed=0)
    assert time.process_time() - start < 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fvc")
    synth_command.register(parser.add_subparsers(dest="command"))
    return parser


def test_command_writes_the_scene_and_reports(tmp_path: Path, capsys) -> None:
    out = tmp_path / "scene.npz"
    argv = ["synth", str(out), "--n", "3000", "--seed", "9", "--dim", "64", "--cameras", "3"]
    args = _parser().parse_args([*argv, "--intra-cosine", "0.55", "0.65", "--distractors", "0.3"])
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    assert "3000 vectors" in line and "300 identities" in line and "3 cameras" in line
    assert "dim 64" in line and str(out) in line
    written = load_scene(out)
    expected = make_scene(
        3000, seed=9, dim=64, cameras=3, intra_cosine=(0.55, 0.65), distractor_fraction=0.3
    )
    assert np.array_equal(written.X, expected.X) and np.array_equal(written.s, expected.s)


def test_command_turns_bad_input_into_a_clear_error(tmp_path: Path) -> None:
    parser = _parser()
    args = parser.parse_args(["synth", str(tmp_path / "x.npz"), "--n", "5", "--identities", "9"])
    with pytest.raises(FvcError, match="identities"):
        args.func(args)
    args = parser.parse_args(["synth", str(tmp_path / "missing" / "x.npz"), "--n", "5"])
    with pytest.raises(FvcError, match="cannot write"):
        args.func(args)


# -- the modern model: vectors that behave like FaceNet/ArcFace-style embeddings ----------------


@pytest.fixture(scope="module")
def modern() -> Scene:
    return make_modern_scene(4000, seed=5)


@pytest.fixture(scope="module")
def modern_stats(modern: Scene) -> VectorStats:
    return vector_stats(modern.X, modern.y)


def test_modern_same_seed_same_scene_other_seed_other_scene() -> None:
    a, b = make_modern_scene(800, seed=4, dim=64), make_modern_scene(800, seed=4, dim=64)
    for key in "Xytsk":
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.X, make_modern_scene(800, seed=5, dim=64).X)


def test_modern_shapes_people_and_images_per_person(modern: Scene) -> None:
    assert modern.X.shape == (4000, 512) and modern.X.dtype == np.float32
    assert modern.y.dtype == np.int64 and modern.s.dtype.kind == "U"
    counts = np.bincount(modern.y)
    assert counts.size == 100  # about n / 40 people by default
    assert counts.min() >= 18 and counts.max() <= 62  # 20 to 60, nudged to add up to n
    many = np.bincount(make_modern_scene(20_000, seed=1, dim=16, identities=500).y)
    assert many.size == 500 and many.min() >= 18 and many.max() <= 62


def test_modern_timeline_is_the_camera_scene_one(modern: Scene) -> None:
    assert (np.diff(modern.t) >= 0).all()
    assert set(modern.s.tolist()) == {f"camera_{i}" for i in range(4)}
    assert modern.k is not None
    for track in np.unique(modern.k)[:100]:  # a visit is one person on one camera
        rows = modern.k == track
        assert len(set(modern.y[rows].tolist())) == 1 and len(set(modern.s[rows].tolist())) == 1
    norms = np.linalg.norm(modern.X, axis=1)
    assert norms.min() >= 0.8 - 1e-4 and norms.max() <= 1.6 + 1e-4


def test_modern_cosines_are_facenet_like(modern_stats: VectorStats) -> None:
    # docs/quality.md: same person about 0.65 (0.6-0.7), different people about 0.1.
    assert 0.6 <= modern_stats.same_mean <= 0.7
    assert 0.05 <= modern_stats.different_mean <= 0.15
    assert 0.12 <= modern_stats.same_sd <= 0.22 and 0.12 <= modern_stats.different_sd <= 0.24
    assert 2.8 <= modern_stats.separation <= 3.8  # near LFW-dlib's 4.0, far from isotropic's 8


def test_modern_identities_are_anisotropic_around_a_common_direction(
    modern_stats: VectorStats,
) -> None:
    assert abs(modern_stats.centred_different) < 0.03  # the 0.1 comes from the shared mean
    assert 15 <= modern_stats.identity_dimensions <= 45  # of 512: a few tens, as LFW's 20 of 128
    isotropic = make_scene(4000, seed=5, dim=512, identities=100, distractor_fraction=0.0)
    assert vector_stats(isotropic.X, isotropic.y).identity_dimensions > 60  # of at most 99


def test_modern_has_a_few_percent_of_outliers(modern: Scene, modern_stats: VectorStats) -> None:
    assert 0.01 <= modern_stats.far_share <= 0.07
    unit = modern.X / np.linalg.norm(modern.X, axis=1, keepdims=True)
    sums = np.zeros((100, unit.shape[1]))
    np.add.at(sums, modern.y, unit)
    own = np.einsum("ij,ij->i", unit, sums[modern.y] - unit)
    own /= np.linalg.norm(sums[modern.y] - unit, axis=1)
    low = own < 0.45  # typical images sit near 0.8 from their person's mean
    assert 0.01 <= low.mean() <= 0.05
    assert 0.15 <= float(np.median(own[low])) <= 0.4  # outliers: cosine about 0.3


def test_modern_one_image_is_an_uncertain_witness_an_average_a_clean_one(modern: Scene) -> None:
    unit = modern.X / np.linalg.norm(modern.X, axis=1, keepdims=True)
    sums = np.zeros((100, unit.shape[1]))
    np.add.at(sums, modern.y, unit)
    means = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    images = unit @ unit.T
    strangers = modern.y[:, None] != modern.y[None, :]
    same = ~strangers & ~np.eye(modern.n, dtype=bool)
    assert images[strangers].max() > np.median(images[same]) - 0.1  # images overlap
    between_means = (means @ means.T)[~np.eye(100, dtype=bool)]
    within = np.einsum("ij,ij->i", unit, means[modern.y])
    assert between_means.max() < np.median(within)  # averages do not


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 10, "identities": 11},
        {"n": 10, "images": (5, 2)},
        {"n": 10, "burst": (0, 3)},
        {"n": 10, "cameras": 0},
        {"n": 10, "dim": 1},
    ],
)
def test_modern_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_modern_scene(seed=0, **kwargs)


@pytest.mark.parametrize("n", [1, 2, 7, 33])
def test_modern_tiny_scenes(n: int) -> None:
    s = make_modern_scene(n, seed=1, dim=8)
    assert s.X.shape == (n, 8) and (np.diff(s.t) >= 0).all() and np.isfinite(s.X).all()


def test_modern_fifty_thousand_512d_vectors_take_well_under_two_seconds() -> None:
    start = time.process_time()
    make_modern_scene(50_000, seed=0)
    assert time.process_time() - start < 2.0


def test_command_writes_a_modern_scene(tmp_path: Path, capsys) -> None:
    out = tmp_path / "faces.npz"
    args = _parser().parse_args(["synth", str(out), "--n", "800", "--seed", "3", "--model",
                                 "modern", "--dim", "64"])
    assert args.func(args) == 0
    assert "800 vectors, 20 identities" in capsys.readouterr().out
    expected = make_modern_scene(800, seed=3, dim=64)
    assert np.array_equal(load_scene(out).X, expected.X)


def test_command_refuses_isotropic_options_with_the_modern_model(tmp_path: Path) -> None:
    argv = ["synth", str(tmp_path / "x.npz"), "--n", "100", "--model", "modern"]
    for extra in (["--distractors", "0"], ["--intra-cosine", "0.5", "0.6"]):
        args = _parser().parse_args(argv + extra)
        with pytest.raises(FvcError, match="only for --model isotropic"):
            args.func(args)


def test_lfw_statistics_are_the_documented_ones() -> None:
    if not LFW.exists():
        pytest.skip(f"{LFW} is absent")
    real = load_scene(LFW)
    stats = vector_stats(real.X, real.y)
    assert stats.same_mean == pytest.approx(0.950, abs=0.002)
    assert stats.different_mean == pytest.approx(0.841, abs=0.002)
    assert stats.separation == pytest.approx(4.0, abs=0.05)
    assert stats.centred_same == pytest.approx(0.638, abs=0.005)
