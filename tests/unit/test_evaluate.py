"""``fvc evaluate`` on synthetic scenes: the figures it prints and the quality it reaches."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from app.commands import evaluate as evaluate_command
from app.config import ClusteringConfig
from app.engine import Engine
from app.errors import FvcError
from app.offline.evaluate import evaluate
from app.offline.synth import make_scene
from app.store import MemoryStore

LFW = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "lfw_dev.npz"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser()
    evaluate_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_json_output_has_exactly_the_documented_keys(tmp_path, capsys) -> None:
    path = tmp_path / "scene.npz"
    make_scene(2000, seed=3, dim=64).save(path)
    out = run_cli(["evaluate", str(path), "--json"], capsys)
    figures = json.loads(out)
    assert tuple(figures) == evaluate_command.KEYS
    assert figures["n"] == 2000 and figures["vectors_per_second"] > 0


def test_default_threshold_meets_the_quality_target_on_20k_vectors(tmp_path, capsys) -> None:
    path = tmp_path / "scene.npz"
    make_scene(20_000, seed=11).save(path)
    figures = json.loads(run_cli(["evaluate", str(path), "--json"], capsys))
    assert figures["bcubed_precision"] >= 0.98
    assert figures["bcubed_recall"] >= 0.9


def test_realized_only_scores_unrealized_items_as_singletons() -> None:
    scene = make_scene(3000, seed=5, dim=64)
    streams = sorted(set(scene.s.tolist()))
    plain = ClusteringConfig.for_threshold(0.5, streams)
    data = plain.to_dict()
    data["clustering_config"]["cluster_realization"] = {"num_samples": 10**6}
    from app.config import parse_config

    never = parse_config(data)
    figures = evaluate(scene, never, Engine(never), MemoryStore(), realized_only=True)
    assert figures["clusters"] == 3000 and figures["bcubed_precision"] == 1.0


def test_batch_size_does_not_change_the_result() -> None:
    scene = make_scene(3000, seed=9, dim=64)
    config = ClusteringConfig.for_threshold(0.5, sorted(set(scene.s.tolist())))
    a = evaluate(scene, config, Engine(config), MemoryStore(), batch_size=1)
    b = evaluate(scene, config, Engine(config), MemoryStore(), batch_size=700)
    keys = ("clusters", "bcubed_f1")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


@pytest.mark.skipif(not LFW.exists(), reason="shared/data/lfw_dev.npz is absent")
def test_real_faces_match_the_plain_online_leader_reference(capsys) -> None:
    figures = json.loads(run_cli(["evaluate", str(LFW), "--threshold", "0.955", "--json"], capsys))
    assert figures["bcubed_precision"] >= 0.98
    assert np.isclose(figures["bcubed_recall"], 0.804, atol=0.02)


def test_track_linking_keeps_precision_and_raises_recall(tmp_path, capsys) -> None:
    path = tmp_path / "tracks.npz"
    make_scene(4000, seed=5, dim=128, intra_cosine=(0.35, 0.5)).save(path)
    base = ["evaluate", str(path), "--threshold", "0.5", "--json"]
    plain = json.loads(run_cli(base, capsys))
    linked = json.loads(run_cli([*base, "--track-threshold", "0.3"], capsys))
    assert linked["bcubed_precision"] >= plain["bcubed_precision"]
    assert linked["bcubed_recall"] > plain["bcubed_recall"] + 0.2
    assert linked["clusters"] < plain["clusters"]


def test_track_threshold_needs_a_file_with_tracks(tmp_path, capsys) -> None:
    path = tmp_path / "no-tracks.npz"
    scene = make_scene(200, seed=5, dim=16)
    np.savez(path, X=scene.X, y=scene.y, t=scene.t, s=scene.s)
    with pytest.raises(FvcError, match="track ids k"):
        run_cli(["evaluate", str(path), "--track-threshold", "0.3"], capsys)
