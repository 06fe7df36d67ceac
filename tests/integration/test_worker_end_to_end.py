"""produce → worker → downstream topic, against the real Kafka and Redis."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from worker_support import Deployment, http, offline_engine, wait_for

from app.downstream.view import ClusterView
from app.offline.synth import make_scene

pytestmark = [pytest.mark.integration, pytest.mark.slow]


REALIZING = {"clustering": {"cluster_realization": {"num_samples": 3}}, "cameras": 1,
             "partitions": 1}


@pytest.mark.parametrize("deployment", [REALIZING], indirect=True)
def test_live_run_equals_the_offline_engine(deployment: Deployment) -> None:
    scene = make_scene(1500, seed=4, dim=64, cameras=1)
    deployment.start_worker()
    deployment.produce(scene, fmt="msgpack")
    wait_for(lambda: deployment.observations_stored() == 1500, 60, "all observations stored")
    engine, offline_events = offline_engine(scene, deployment.config)
    stored = deployment.clusters()
    assert set(stored) == set(engine.clusters)
    for key, cluster in engine.clusters.items():
        assert stored[key].num_observations == cluster.num_observations
    expected_ids = {e.event_id for e in offline_events}
    wait_for(lambda: len(deployment.events(timeout=2)) >= len(expected_ids), 30, "all events")
    events = deployment.events(timeout=2)
    assert {e["event_id"] for e in events} == expected_ids
    live = ClusterView().apply_all(events).clusters
    offline = {k: c for k, c in engine.clusters.items() if c.realized}
    assert set(live) == set(offline)
    for key, cluster in offline.items():
        assert live[key].num_observations == cluster.num_observations
        np.testing.assert_allclose(live[key].representative, cluster.representative, atol=1e-5)
    # the gauges are read at scrape time; events are counted by their type header
    registered = sum(1 for e in offline_events if e.type.value == "REG_EVENT")
    wait_for(lambda: f'fvc_events_out_total{{type="REG_EVENT"}} {float(registered)}'
             in http("GET", deployment.url(0, "/metrics"))[1].decode(), 30, "events counted")
    metrics = http("GET", deployment.url(0, "/metrics"))[1].decode()
    assert f"fvc_clusters {float(len(engine.clusters))}" in metrics
    assert f"fvc_clusters_realized {float(len(offline))}" in metrics


TRACKED = {"cameras": 1, "partitions": 1, "stream": {"track_linking": {
    "track_id_path": "track_id", "track_threshold": 0.3, "time_window_ms": 5000}}}


@pytest.mark.parametrize("deployment", [TRACKED], indirect=True)
def test_live_track_linking_equals_the_offline_engine(deployment: Deployment) -> None:
    scene = make_scene(1200, seed=6, dim=64, cameras=1, intra_cosine=(0.35, 0.5))
    deployment.start_worker()
    deployment.produce(scene, fmt="msgpack")  # records carry the scene's track ids
    wait_for(lambda: deployment.observations_stored() == 1200, 60, "all observations stored")
    engine, _ = offline_engine(scene, deployment.config)
    stored = deployment.clusters()
    assert {k: c.num_observations for k, c in stored.items()} == {
        k: c.num_observations for k, c in engine.clusters.items()
    }
    assert all(stored[k].track == c.track for k, c in engine.clusters.items())
    untracked, _ = offline_engine(dataclasses.replace(scene, k=None), deployment.config)
    assert len(stored) < 0.7 * len(untracked.clusters)


def test_every_bad_record_reaches_the_dead_letter_topic(deployment: Deployment) -> None:
    from confluent_kafka import Producer

    from app.codec.encode import encode_observation

    scene = make_scene(400, seed=5, dim=32)
    deployment.start_worker(FVC_MAX_RECORD_BYTES="100000")
    report = deployment.produce(scene)
    wait_for(lambda: deployment.observations_stored() == report.records, 60, "good records")
    topic = deployment.config.streams[0].topic
    nan = np.full(32, np.nan, dtype=np.float32)
    bad = {
        "not_json": b"{not json",
        "not_an_object": b"[1, 2]",
        "missing_field": b'{"features": {"model_id": "m"}}',  # the field without its vector
        "wrong_type": b'{"features": {"feature": "abc"}}',
        "wrong_dimension": b'{"features": {"feature": [1.0, 2.0]}}',
        "non_finite": encode_observation(nan, fmt="msgpack"),
        "zero_vector": b'{"features": {"feature": [' + b"0.0," * 31 + b"0.0]}}",
        "too_large": b'{"features": {"feature": [' + b"1.0," * 40_000 + b"1.0]}}",
    }
    producer = Producer({"bootstrap.servers": deployment.settings.kafka_bootstrap})
    for value in bad.values():
        producer.produce(topic, key=b"bad", value=value, timestamp=int(scene.t[-1]))
    # no selected field at all: skipped as UVAP skips it, counted, not a dead letter
    producer.produce(topic, key=b"other", value=b'{"other": 1}', timestamp=int(scene.t[-1]))
    producer.flush(30)
    total = report.records + len(bad) + 1
    wait_for(lambda: len(deployment.dead_letters(timeout=1)) >= len(bad), 60, "dead letters")
    dead = deployment.dead_letters()
    assert {d["reason"] for d in dead} == set(bad)
    assert all(d["source.topic"] == topic and d["source.offset"].isdigit() for d in dead)
    assert deployment.observations_stored() + len(dead) + 1 == total
    status, metrics = http("GET", deployment.url(0, "/metrics"))
    assert status == 200
    for reason in bad:
        assert f'fvc_dead_letters_total{{reason="{reason}"}} 1.0' in metrics.decode()
    assert 'fvc_skipped_records_total{reason="missing_field"} 1.0' in metrics.decode()


def test_reload_pauses_on_an_invalid_config_and_resumes(deployment: Deployment) -> None:
    deployment.start_worker()
    good = deployment.config_data
    broken = {**good, "clustering_config": {**good["clustering_config"], "method": "NOPE"}}
    deployment.write_config(broken)
    status, body = http("POST", deployment.url(0, "/reload"))
    assert status == 500 and b"method" in body
    assert http("GET", deployment.url(0, "/health"))[0] == 200
    assert http("GET", deployment.url(0, "/ready"))[0] == 503
    scene = make_scene(300, seed=6, dim=32)
    deployment.produce(scene)
    time.sleep(3)
    assert deployment.observations_stored() == 0
    deployment.write_config(good)
    status, _ = http("POST", deployment.url(0, "/reload"))
    assert status == 200
    wait_for(lambda: deployment.observations_stored() == 300, 60, "processing resumed")
