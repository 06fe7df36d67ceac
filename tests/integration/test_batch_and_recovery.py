"""Batch mode, and recovery of a lost Redis from the internal-state topic or by replay."""

from __future__ import annotations

import subprocess

import pytest
from worker_support import FVC, Deployment, wait_for

from app.offline.synth import make_scene
from app.store.codec import decode_cluster
from app.worker.internal_state import OFFSET_PREFIX, read_compacted

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def make(tmp_path, unique, kafka, redis, **options) -> Deployment:
    return Deployment(tmp_path, unique, kafka, redis, **options)


def mirrored(deployment: Deployment) -> dict[str, int]:
    """Observation counts of the clusters in the internal-state topic."""
    latest = read_compacted(deployment.settings, deployment.settings.internal_state_topic, 10)
    clusters = [decode_cluster(v) for k, v in latest.items() if not k.startswith(OFFSET_PREFIX)]
    return {c.key: c.num_observations for c in clusters}


def run_batch(deployment: Deployment) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FVC, "run", "--config", str(deployment.config_path)],
        env=deployment.env, capture_output=True, text=True, timeout=300,
    )


def test_batch_mode_ends_with_end_of_input_and_is_repeatable(
    tmp_path, unique, kafka_bootstrap, redis_url
) -> None:
    deployment = make(tmp_path, unique, kafka_bootstrap, redis_url,
                      clustering={"cluster_realization": {"num_samples": 2}})
    try:
        scene = make_scene(1200, seed=12, dim=32)
        deployment.produce(scene)
        first = run_batch(deployment)
        assert first.returncode == 0, first.stderr
        assert "processed 1200 records" in first.stdout
        ends = [e for e in deployment.events(timeout=2) if e["type"] == "END_OF_INPUT_RECORD"]
        assert len(ends) == deployment.partitions  # one on every partition of the topic
        assert deployment.observations_stored() == 1200
        second = run_batch(deployment)
        assert second.returncode == 0, second.stderr
        assert deployment.observations_stored() == 1200
        ends = [e for e in deployment.events(timeout=2) if e["type"] == "END_OF_INPUT_RECORD"]
        assert len(ends) == 2 * deployment.partitions
    finally:
        deployment.clear()


def test_a_lost_redis_is_rebuilt_from_the_internal_state_topic(
    tmp_path, unique, kafka_bootstrap, redis_url
) -> None:
    deployment = make(tmp_path, unique, kafka_bootstrap, redis_url,
                      clustering={"save_internal_state": True})
    try:
        deployment.start_worker()
        deployment.produce(make_scene(1000, seed=13, dim=32))
        wait_for(lambda: deployment.observations_stored() == 1000, 60, "first run")
        before = {k: c.num_observations for k, c in deployment.clusters().items()}
        # the mirror is published from the outbox: wait until it has caught up with Redis
        wait_for(lambda: mirrored(deployment) == before, 30, "the internal-state topic")
        deployment.stop_all()
        deployment.clear()  # Redis is lost
        data = deployment.config_data
        data["clustering_config"]["start_from_internal_state"] = True
        deployment.write_config(data)
        deployment.start_worker()
        after = {k: c.num_observations for k, c in deployment.clusters().items()}
        assert after == before
        deployment.produce(make_scene(200, seed=14, dim=32))
        wait_for(lambda: deployment.observations_stored() == 1200, 60, "no double counting")
    finally:
        deployment.stop_all()
        deployment.clear()


def test_without_internal_state_a_fresh_store_replays_the_inputs(
    tmp_path, unique, kafka_bootstrap, redis_url
) -> None:
    # one partition: the replay sees the records in the live run's order, so the result is equal
    deployment = make(tmp_path, unique, kafka_bootstrap, redis_url, cameras=1, partitions=1)
    try:
        deployment.start_worker()
        deployment.produce(make_scene(800, seed=15, dim=32, cameras=1))
        wait_for(lambda: deployment.observations_stored() == 800, 60, "first run")
        before = {k: c.num_observations for k, c in deployment.clusters().items()}
        deployment.stop_all()
        deployment.clear()
        deployment.start_worker()
        wait_for(lambda: deployment.observations_stored() == 800, 60, "replay of the inputs")
        assert {k: c.num_observations for k, c in deployment.clusters().items()} == before
    finally:
        deployment.stop_all()
        deployment.clear()
