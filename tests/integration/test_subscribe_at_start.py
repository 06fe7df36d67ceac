"""A worker consumes topics created a moment before it started, and shows its lag in either mode.

A consumer group's first assignment leaves out every topic its leader's metadata lacks, and
nothing looks again for minutes: a worker started beside its new topics on a broker that has
just started consumed nothing. Workers now wait for the broker to list their topics first.
"""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from worker_support import Deployment, http, wait_for

from app.errors import FvcError
from app.kafka_client import ensure_topics, wait_for_topics
from app.offline.synth import make_scene
from app.settings import Settings

pytestmark = [pytest.mark.integration]

REALIZING = {"cameras": 2, "partitions": 4,
             "clustering": {"cluster_realization": {"num_samples": 2}}}
CONSUMING_WITHIN_S = 20.0  # worker start included; a missed assignment lasts minutes
ONE_CAMERA = {"cameras": 1, "partitions": 2}


def test_wait_for_topics_returns_once_the_broker_lists_them(
    kafka_bootstrap: str, unique: str
) -> None:
    settings = Settings.from_env({"FVC_KAFKA_BOOTSTRAP": kafka_bootstrap})
    topics = [f"{unique}.a", f"{unique}.b"]
    ensure_topics(settings, topics, partitions=3)
    assert wait_for_topics(settings, topics, timeout_s=10) < 10


def test_wait_for_topics_names_what_is_missing_when_its_time_is_up(
    kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.kafka_client")
    settings = Settings.from_env({"FVC_KAFKA_BOOTSTRAP": kafka_bootstrap})
    began = time.monotonic()
    with pytest.raises(FvcError, match=rf"after 1s: {unique}\.never \(not listed\)"):
        wait_for_topics(settings, [f"{unique}.never"], timeout_s=1.0)
    assert time.monotonic() - began < 5
    assert f"waiting up to 1s for the broker to list {unique}.never (not listed)" in caplog.text


@pytest.mark.parametrize("ingest", ["faust", "bulk"])
@pytest.mark.parametrize("deployment", [REALIZING], indirect=True)
def test_a_worker_started_beside_its_new_topics_consumes_at_once(
    deployment: Deployment, ingest: str
) -> None:
    scene = make_scene(400, seed=3, dim=32, cameras=2)
    ensure_topics(deployment.settings, deployment.config.topics, deployment.partitions)
    deployment.start_worker(wait=False, FVC_INGEST=ingest)
    deployment.produce(scene)
    wait_for(lambda: deployment.observations_stored() == 400, CONSUMING_WITHIN_S,
             "every record of every new topic stored")
    # the leader topic was there in time too: the leader's timers publish the events
    wait_for(lambda: bool(deployment.events(timeout=1)), 30, "the leader to publish events")
    assert "Ignoring missing topic" not in deployment.log(0)


def consumer_lag(deployment: Deployment) -> dict[str, float]:
    """``fvc_consumer_lag`` of the first worker, by partition."""
    text = http("GET", deployment.url(0, "/metrics"))[1].decode()
    return {
        sample.labels["partition"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "fvc_consumer_lag"
        for sample in family.samples
    }


@pytest.mark.parametrize("ingest", ["faust", "bulk"])
@pytest.mark.parametrize("deployment", [ONE_CAMERA], indirect=True)
def test_the_lag_gauge_follows_the_records_not_yet_applied(
    deployment: Deployment, ingest: str
) -> None:
    partitions = [f"{deployment.config.topics[0]}:{p}" for p in range(2)]
    deployment.start_worker(FVC_INGEST=ingest)
    deployment.produce(make_scene(200, seed=11, dim=32, cameras=1))
    wait_for(lambda: deployment.observations_stored() == 200, 60, "the first records stored")
    wait_for(lambda: consumer_lag(deployment) == dict.fromkeys(partitions, 0.0), 30,
             "no lag on either partition")
    good = deployment.config_data
    deployment.write_config({**good, "clustering_config": {"method": "NOPE"}})
    assert http("POST", deployment.url(0, "/reload"))[0] == 500  # paused: nothing is applied
    deployment.produce(make_scene(300, seed=12, dim=32, cameras=1))
    wait_for(lambda: sum(consumer_lag(deployment).values()) == 300, 30,
             "the lag of the records held back")
    deployment.write_config(good)
    assert http("POST", deployment.url(0, "/reload"))[0] == 200
    wait_for(lambda: deployment.observations_stored() == 500, 60, "every record stored")
    wait_for(lambda: sum(consumer_lag(deployment).values()) == 0, 30, "the lag back to 0")


FAUST_NEW_TOPIC = (
    "product: with Faust ingest the agent subscribes to the added topic and is assigned its "
    "partitions, but no record of it reaches the agent (issue 17 item 7); bulk ingest reads it"
)


@pytest.mark.parametrize(
    "ingest", [pytest.param("faust", marks=pytest.mark.xfail(reason=FAUST_NEW_TOPIC)), "bulk"]
)
@pytest.mark.parametrize("deployment", [{"cameras": 2, "partitions": 2}], indirect=True)
def test_a_stream_added_by_a_reload_is_consumed_without_a_restart(
    deployment: Deployment, ingest: str
) -> None:
    full = deployment.config_data
    ensure_topics(deployment.settings, deployment.config.topics, deployment.partitions)
    deployment.write_config({**full, "input_stream_configs": full["input_stream_configs"][:1]})
    deployment.start_worker(FVC_INGEST=ingest)
    scene = make_scene(300, seed=5, dim=32, cameras=2)
    first = int((scene.s == "camera_0").sum())
    deployment.produce(scene)
    wait_for(lambda: deployment.observations_stored() == first, 60, "the first camera stored")
    time.sleep(2)
    assert deployment.observations_stored() == first  # the second camera is not read yet
    deployment.write_config(full)
    assert http("POST", deployment.url(0, "/reload"))[0] == 200
    wait_for(lambda: deployment.observations_stored() == scene.n, 30,
             "the added camera's records stored by the same process")
    assert deployment.workers[0].poll() is None
