"""``fvc reid`` against the real Kafka and Redis: scene → worker → downstream topic → reid.

One deployment is shared by the module (a worker, a scene with merges, a re-identification
service) because building it is the slow part; the tests run in file order and the last two
change it (a removal, a restart). Part of each identity's observations is held back from the
worker and used as the identify queries. Which identity a cluster is comes from the worker's
assignments topic: the identity most of its observations belong to.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import orjson
import pytest
from confluent_kafka import TopicPartition
from worker_support import FVC, Deployment, free_port, http, wait_for

from app.config import parse_config
from app.downstream.tail import follow
from app.downstream.view import ClusterView
from app.kafka_client import make_consumer, make_producer
from app.offline.produce import as_rows, produce_scene
from app.offline.synth import Scene, make_scene

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTERING = {
    "cluster_realization": {"num_samples": 3},
    "cluster_merging": {"initial_threshold": 0.8, "threshold_discount_rate": 1.0,
                        "min_threshold": 0.8, "time_interval_ms": 500},
}


def subset(scene: Scene, mask: np.ndarray) -> Scene:
    return Scene(X=scene.X[mask], y=scene.y[mask], t=scene.t[mask], s=scene.s[mask])


def post(url: str, body: object, content_type: str = "application/json") -> tuple[int, dict]:
    data = msgpack.packb(body) if "msgpack" in content_type else orjson.dumps(
        body, option=orjson.OPT_SERIALIZE_NUMPY)
    request = urllib.request.Request(url, data=data, method="POST",  # noqa: S310 - the service under test
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def end_offsets(settings: object, topic: str) -> dict[int, int]:
    consumer = make_consumer(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
    finally:
        consumer.close()


class Reid:
    """One ``fvc reid`` process (run as ``python -m app.commands.reid``)."""

    def __init__(self, deployment: Deployment, tag: str, *args: str) -> None:
        self.deployment, self.port = deployment, free_port()
        self.log_path = deployment.tmp / f"reid-{tag}.log"
        command = [sys.executable, "-m", "app.commands.reid", "--port", str(self.port),
                   "--host", "127.0.0.1", "--threshold", "0.5", *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, env=deployment.env, stdout=log,
                                         stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, dict]:
        status, body = http("GET", self.url(path))
        return status, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"reid exited: {self.log_path.read_text()[-3000:]}")
            try:
                return http("GET", self.url("/ready"), timeout=1)[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, "reid to be ready")

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Until the service has read everything the topic holds now."""
        ends = end_offsets(self.deployment.settings, self.deployment.settings.output_topic)

        def caught_up() -> bool:
            positions = self.get("/stats")[1]["follower"]["positions"]
            return all(positions.get(str(p), 0) >= end for p, end in ends.items())

        wait_for(caught_up, timeout, "reid to read the whole topic")

    def identify(self, vectors: np.ndarray, k: int = 5, **kw: object) -> list[dict]:
        status, body = post(self.url("/identify"), {"vectors": vectors.tolist(), "k": k}, **kw)
        assert status == 200, body
        return body["results"]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@dataclass
class World:
    deployment: Deployment
    reid: Reid
    queries: Scene  # held-back vectors of identities seen at least 5 times
    majority: dict[str, int]  # realized cluster id -> the identity most of its members are
    events: list[dict]


def wait_quiet(deployment: Deployment, seconds: float = 3.0, timeout: float = 90.0) -> list[dict]:
    """The downstream events once no new one has come for ``seconds`` (merges settled)."""
    count, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = deployment.events(timeout=1.0)
        if len(events) != count:
            count, since = len(events), time.monotonic()
        elif time.monotonic() - since >= seconds:
            return events
    raise AssertionError("the worker kept emitting events")


def majorities(deployment: Deployment, produced: Scene, events: list[dict]) -> dict[str, int]:
    """Each realized cluster's majority identity, from the assignments topic and the merges."""
    rows = as_rows(produced)
    identity = {f"{s}:{k}": int(y) for s, k, y in zip(rows.s, rows.keys, rows.y, strict=True)}
    topic = deployment.env["FVC_ASSIGNMENTS_TOPIC"]
    view = ClusterView().apply_all(events)
    members: dict[str, Counter] = {}
    for item in follow(deployment.settings, topic, from_beginning=True, idle_timeout=3):
        body = item.event or {}
        cluster = view.resolve(body["cluster_id"])
        members.setdefault(cluster, Counter())[identity[item.key]] += 1
    assert sum(sum(c.values()) for c in members.values()) == produced.n
    return {c: m.most_common(1)[0][0] for c, m in members.items() if c in view.clusters}


@pytest.fixture(scope="module")
def world(tmp_path_factory, kafka_bootstrap: str, redis_url: str):
    name = f"t{uuid.uuid4().hex[:10]}"
    deployment = Deployment(tmp_path_factory.mktemp("reid"), name, kafka_bootstrap, redis_url,
                            cameras=2, partitions=4, clustering=CLUSTERING, threshold=0.75)
    deployment.env["FVC_ASSIGNMENTS_TOPIC"] = f"{name}.assignments"
    scene = make_scene(2400, seed=11, dim=64, cameras=2)
    held = np.zeros(scene.n, dtype=bool)
    for person, count in Counter(scene.y.tolist()).items():
        if count >= 5:
            held[np.flatnonzero(scene.y == person)[-1]] = True
    produced = subset(scene, ~held)
    started: list[Reid] = []
    try:
        deployment.start_worker()
        report = deployment.produce(produced, fmt="msgpack")
        wait_for(lambda: deployment.observations_stored() == report.records, 90, "clustering")
        events = wait_quiet(deployment)
        started.append(Reid(deployment, "first", "--topic", deployment.settings.output_topic))
        started[0].wait_ready()
        assert started[0].get("/ready")[1]["lag"] == 0
        world = World(deployment, started[0], subset(scene, held),
                      majorities(deployment, produced, events), events)
        yield world
        started.append(world.reid)
    finally:
        for reid in started:
            reid.stop()
        deployment.stop_all()
        deployment.clear()


def realized_in_redis(deployment: Deployment) -> dict:
    return {k: c for k, c in deployment.clusters().items() if c.realized}


def test_the_view_equals_the_realized_clusters_in_redis(world: World) -> None:
    world.reid.wait_caught_up()
    redis = realized_in_redis(world.deployment)
    assert world.reid.get("/stats")[1]["clusters"] == len(redis) > 50
    keys = sorted(redis)
    answers = world.reid.identify(np.stack([redis[k].representative for k in keys]), k=1)
    for key, answer in zip(keys, answers, strict=True):
        (best,) = answer["candidates"]
        assert best["cluster_id"] == key and best["similarity"] > 0.9999
        assert best["num_observations"] == redis[key].num_observations
    status, body = world.reid.get(f"/clusters/{keys[0]}")
    assert status == 200 and body["num_observations"] == redis[keys[0]].num_observations


def test_held_back_vectors_find_their_identity_at_top_1(world: World) -> None:
    realized_people = set(world.majority.values())
    asked = np.isin(world.queries.y, list(realized_people))
    assert asked.sum() >= 50
    vectors, people = world.queries.X[asked], world.queries.y[asked]
    answers = world.reid.identify(vectors)
    hits = [world.majority.get(a["cluster_id"]) == int(p) for a, p in zip(answers, people,
                                                                           strict=True)]
    assert np.mean(hits) >= 0.95
    packed = world.reid.identify(vectors.astype("<f4"), content_type="application/msgpack")
    assert [a["cluster_id"] for a in packed] == [a["cluster_id"] for a in answers]
    assert all(a["match"] == (a["similarity"] >= 0.5) for a in answers)


def test_a_merge_maps_both_old_ids_to_the_survivor(world: World) -> None:
    merges = [e["merge_event"] for e in world.events if e["type"] == "MERGE_EVENT"]
    assert merges, "the scene should make the worker merge clusters"
    view = ClusterView().apply_all(world.events)
    named = {c["cluster_id"] for a in world.reid.identify(world.queries.X, k=20)
             for c in a["candidates"]}
    for merge in merges:
        survivor = f"{merge['cluster_id']['first_detection_stream_id']}:" \
                   f"{merge['cluster_id']['first_detection_key']}"
        now = view.resolve(survivor)
        for old in merge["merged_clusters"]:
            merged = f"{old['first_detection_stream_id']}:{old['first_detection_key']}"
            assert merged not in named
            for asked in (merged, survivor):
                status, body = world.reid.get(f"/clusters/{asked}")
                if now in view.clusters:
                    assert status == 200 and body["cluster_id"] == now, (asked, body)
                else:
                    assert status == 404


def test_streaming_mode_writes_one_match_record_per_input(world: World) -> None:
    d = world.deployment
    streams = [{**s, "topic": s["topic"] + ".queries"}
               for s in d.config_data["input_stream_configs"]]
    config = {**d.config_data, "input_stream_configs": streams}
    config_path = d.tmp / "queries.json"
    config_path.write_text(json.dumps(config))
    output = f"{d.name}.matches"
    reid = Reid(d, "stream", "--stream", "--config", str(config_path), "--output-topic", output,
                "--group", f"{d.name}.reid")
    try:
        reid.wait_ready()
        report = produce_scene(d.settings, world.queries, config=parse_config(config))
        producer = make_producer(d.settings)
        producer.produce(streams[0]["topic"], key=b"bad-1", value=b"{not json")
        producer.produce(streams[0]["topic"], key=b"bad-2",
                         value=b'{"features": {"feature": [1.0, 2.0]}}')
        producer.flush(10)
        items = list(follow(d.settings, output, from_beginning=True, idle_timeout=10,
                            max_events=report.records))
        assert len(items) == report.records == world.queries.n
        rows = as_rows(world.queries)
        sent = {f"{s}:{k}": (int(t), int(y))
                for s, k, t, y in zip(rows.s, rows.keys, rows.t, rows.y, strict=True)}
        hits = []
        assert len({f"{i.event['stream_id']}:{i.key}" for i in items}) == len(sent)
        for item in items:
            time_sent, person = sent[f"{item.event['stream_id']}:{item.key}"]
            assert item.timestamp == time_sent == item.event["time"]
            if person in set(world.majority.values()):
                hits.append(world.majority.get(item.event["cluster_id"]) == person)
        assert len(hits) >= 50 and np.mean(hits) >= 0.95
        wait_for(lambda: "wrong_dimension" in reid.get("/metrics")[1]["text"], 10, "bad count")
        metrics = reid.get("/metrics")[1]["text"]
        assert 'fvc_reid_stream_bad_records_total{reason="not_json"} 1.0' in metrics
        assert 'fvc_reid_stream_bad_records_total{reason="wrong_dimension"} 1.0' in metrics
    finally:
        assert reid.stop() == 0


def test_a_removed_cluster_is_never_returned_after_its_event(world: World) -> None:
    d, reid = world.deployment, world.reid
    victim = max(realized_in_redis(d).values(), key=lambda c: c.num_observations)
    person = world.majority[victim.key]
    before = reid.identify(np.stack([victim.representative]), k=1)
    assert before[0]["cluster_id"] == victim.key
    command = [FVC, "clusters", "--redis", d.settings.redis_url, "--namespace", d.name,
               "delete", victim.key]
    deleted = subprocess.run(command, capture_output=True, text=True, timeout=60, env=d.env)
    assert deleted.returncode == 0, deleted.stderr
    where = None
    for item in follow(d.settings, d.settings.output_topic, from_beginning=True, idle_timeout=5):
        body = (item.event or {}).get("delete_event") or {}
        cid = body.get("deleted_cluster") or {}
        if f"{cid.get('first_detection_stream_id')}:{cid.get('first_detection_key')}" == \
                victim.key:
            assert body["reason"] == "REMOVED"
            where = (item.partition, item.offset)
            break
    assert where is not None, "the DELETE_EVENT should reach the topic"

    def read_past() -> bool:
        positions = reid.get("/stats")[1]["follower"]["positions"]
        return positions.get(str(where[0]), 0) > where[1]

    wait_for(read_past, 30, "reid to read the DELETE_EVENT")
    own = world.queries.X[world.queries.y == person]
    answers = reid.identify(np.vstack([victim.representative, own]), k=50)
    assert all(c["cluster_id"] != victim.key for a in answers for c in a["candidates"])
    assert reid.get(f"/clusters/{victim.key}")[0] == 404


def test_a_restart_rebuilds_the_same_view(world: World) -> None:
    d, first = world.deployment, world.reid
    first.wait_caught_up()
    queries = np.vstack([world.queries.X, np.stack(
        [c.representative for c in realized_in_redis(d).values()])])
    before, stats_before = first.identify(queries), first.get("/stats")[1]
    assert first.stop() == 0
    world.reid = second = Reid(d, "second", "--topic", d.settings.output_topic)
    second.wait_ready()
    after, stats_after = second.identify(queries), second.get("/stats")[1]
    assert stats_after["clusters"] == stats_before["clusters"]
    assert stats_after["merged_ids"] == stats_before["merged_ids"]
    for old, new in zip(before, after, strict=True):
        assert [c["cluster_id"] for c in new["candidates"]] == \
               [c["cluster_id"] for c in old["candidates"]]
        np.testing.assert_allclose([c["similarity"] for c in new["candidates"]],
                                   [c["similarity"] for c in old["candidates"]], atol=1e-6)


def test_help_teaches_with_examples() -> None:
    shown = subprocess.run([sys.executable, "-m", "app.commands.reid", "--help"],
                           capture_output=True, text=True, timeout=30, cwd=Path.cwd())
    assert shown.returncode == 0 and "examples:" in shown.stdout and "/identify" in shown.stdout
