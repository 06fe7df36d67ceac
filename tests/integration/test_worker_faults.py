"""Rebalances and crashes: no observation lost or counted twice, no event lost."""

from __future__ import annotations

import threading

import pytest
from worker_support import Deployment, offline_engine, wait_for

from app.offline.synth import make_scene

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def latest_event_counts(events: list[dict]) -> dict[str, int]:
    """num_observations of the last REG/MERGE event of every cluster."""
    from app.codec.decode import cluster_name

    latest: dict[str, int] = {}
    for event in events:
        body = event.get("reg_event") or event.get("merge_event")
        if body:
            latest[cluster_name(body["cluster_id"])] = body["cluster"]["num_observations"]
    return latest


@pytest.mark.parametrize("ingest", ["faust", "bulk"])
def test_two_workers_share_partitions_through_a_rebalance(
    deployment: Deployment, ingest: str
) -> None:
    scene = make_scene(4000, seed=8, dim=48)
    deployment.start_worker(FVC_INGEST=ingest)
    producing = threading.Thread(target=deployment.produce, args=(scene,), kwargs={"rate": 1000})
    producing.start()
    wait_for(lambda: deployment.observations_stored() > 500, 60, "the first worker to start")
    deployment.start_worker(FVC_INGEST=ingest)  # joins mid-stream: the group rebalances
    producing.join()
    wait_for(lambda: deployment.observations_stored() == 4000, 240, "every observation stored")
    clusters = deployment.clusters()
    assert sum(c.num_observations for c in clusters.values()) == 4000
    wait_for(
        lambda: latest_event_counts(deployment.events(timeout=2))
        == {k: c.num_observations for k, c in clusters.items() if c.realized},
        120,
        "the last event of every cluster to match its stored state",
    )


@pytest.mark.parametrize("ingest", ["faust", "bulk"])
@pytest.mark.parametrize("deployment", [{"cameras": 1, "partitions": 1}], indirect=True)
def test_kill_9_mid_stream_then_restart_equals_an_uninterrupted_run(
    deployment: Deployment, ingest: str
) -> None:
    scene = make_scene(3000, seed=9, dim=48, cameras=1)
    deployment.start_worker(FVC_INGEST=ingest)
    producing = threading.Thread(target=deployment.produce, args=(scene,), kwargs={"rate": 1500})
    producing.start()
    wait_for(lambda: deployment.observations_stored() > 800, 60, "processing to be under way")
    deployment.kill(0)
    stored_at_kill = deployment.observations_stored()
    assert 0 < stored_at_kill < 3000
    producing.join()
    deployment.start_worker(FVC_INGEST=ingest)
    wait_for(lambda: deployment.observations_stored() == 3000, 240, "the restarted worker")
    engine, offline_events = offline_engine(scene, deployment.config)
    stored = deployment.clusters()
    assert {k: c.num_observations for k, c in stored.items()} == {
        k: c.num_observations for k, c in engine.clusters.items()
    }
    expected = {e.event_id for e in offline_events}
    wait_for(lambda: expected <= {e["event_id"] for e in deployment.events(timeout=2)}, 60,
             "every event of the uninterrupted run")
