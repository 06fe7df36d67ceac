"""The re-identification view: replay-safe event application, its index, requests and HTTP.

Events are made by the real engine and go through the real codecs, so what is tested is what
the downstream topic carries. The shuffled-delivery test mimics Kafka: a cluster's events stay
in order on their partition (the cluster id is the key), partitions interleave at random, and
at-least-once delivery repeats some; the view must end where the engine ended.
"""

from __future__ import annotations

import random
import zlib

import msgpack
import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app.codec.decode import cluster_name, decode_event
from app.codec.encode import encode_event
from app.config import parse_config
from app.downstream.reid.follow import take_event_id
from app.downstream.reid.http import make_app
from app.downstream.reid.request import BadRequest, parse_identify
from app.downstream.reid.service import ReidOptions, ReidService
from app.downstream.reid.state import ReidState
from app.downstream.view import ClusterView, event_version
from app.engine import Engine, Event, Observation
from app.offline.synth import make_scene
from app.settings import Settings

CONFIG = parse_config({
    "clustering_config": {
        "method": "SIMPLE_AVERAGE", "cluster_realization": {"num_samples": 3},
        "cluster_merging": {"initial_threshold": 0.75, "threshold_discount_rate": 1.0,
                            "min_threshold": 0.75, "time_interval_ms": 1000}},
    "input_stream_configs": [{"stream_id": "cam", "fv_field_selector": {
        "feature_vector_path": "features"}, "reg_stream_config": {"reg_threshold": 0.8}}],
})


def engine_run(n: int = 600, seed: int = 3, remove: int = 2) -> tuple[Engine, list[dict]]:
    """A scene through the engine with merge passes and a few removals.

    Returns the engine and its events decoded in both formats, with and without the optional
    coherence.
    """
    engine, events = engine_events(n, seed, remove)
    fmt, method = ("json", "msgpack"), (None, CONFIG.method)  # with and without coherence
    return engine, [decode_event(encode_event(e, fmt[i % 2], method[i // 2 % 2]))
                    for i, e in enumerate(events)]


def engine_events(n: int, seed: int, remove: int) -> tuple[Engine, list[Event]]:
    """``engine_run``'s engine and the events it made."""
    scene = make_scene(n, seed=seed, dim=32, cameras=1)
    engine, events = Engine(CONFIG), []
    for start in range(0, n, 50):
        batch = [Observation(scene.X[i], "cam", f"{scene.t[i]}_{i}", int(scene.t[i]))
                 for i in range(start, min(start + 50, n))]
        events += engine.step(batch).events
        merged = engine.merge()
        engine.apply(merged)
        events += merged.events
    realized = sorted(k for k, c in engine.clusters.items() if c.realized)
    for key in realized[:remove]:
        gone = engine.remove(key)
        engine.apply(gone)
        events += gone.events
    return engine, events


def kafka_like(events: list[dict], rng: random.Random, partitions: int = 4) -> list[dict]:
    """Per-key order kept, partitions interleaved at random, 10% delivered again later.

    A repeat lands anywhere after its original on the same partition, as when a new leader
    publishes the outbox a crashed one had sent but not acknowledged: older states then follow
    newer ones.
    """
    queues: list[list[dict]] = [[] for _ in range(partitions)]
    for event in events:
        queue = queues[zlib.crc32(event["event_id"].rpartition("@")[0].encode()) % partitions]
        queue.append(event)
    for queue in queues:
        for i in [i for i in range(len(queue)) if rng.random() < 0.1]:
            queue.insert(rng.randint(i + 1, len(queue)), queue[i])
    out = []
    while any(queues):
        out.append(rng.choice([q for q in queues if q]).pop(0))
    return out


def assert_view_is_engine(view: ClusterView, engine: Engine) -> None:
    realized = {k: c for k, c in engine.clusters.items() if c.realized}
    assert set(view.clusters) == set(realized)
    for key, cluster in realized.items():
        assert view.clusters[key].num_observations == cluster.num_observations
        np.testing.assert_allclose(view.clusters[key].representative, cluster.representative,
                                   atol=1e-6)


def test_events_made_by_the_engine_rebuild_its_realized_clusters() -> None:
    engine, events = engine_run()
    types = {e["type"] for e in events}
    assert {"REG_EVENT", "MERGE_EVENT", "DELETE_EVENT"} <= types
    assert_view_is_engine(ClusterView().apply_all(events), engine)


@pytest.mark.parametrize("seed", range(5))
def test_any_kafka_delivery_order_with_duplicates_gives_the_same_view(seed: int) -> None:
    engine, events = engine_run()
    view = ClusterView().apply_all(kafka_like(events, random.Random(seed)))
    assert_view_is_engine(view, engine)


def test_the_uvap_profiles_records_rebuild_the_same_view() -> None:
    """UVAP's records: the id in a header, the survivor among the merged ids, one partition."""
    engine, made = engine_events(600, 3, 2)
    events = []
    for event in made:
        body = decode_event(encode_event(event, "json", profile="uvap"))
        assert "event_id" not in body
        take_event_id(body, [("fvc.event_type", b"x"), ("fvc.event_id", event.event_id.encode())])
        events.append(body)
    assert any(e["type"] == "MERGE_EVENT" for e in events)
    rng = random.Random(5)
    again = [e for e in events if rng.random() < 0.1]  # a new leader publishes some again
    assert_view_is_engine(ClusterView().apply_all(events + again), engine)


def test_an_older_version_never_rolls_the_view_back() -> None:
    engine, events = engine_run()
    regs = [e for e in events if e["type"] == "REG_EVENT"]
    view = ClusterView().apply_all(events)
    before = {k: c.num_observations for k, c in view.clusters.items()}
    for event in reversed(regs):  # every older state again, newest last-but-reversed
        assert view.apply(event) == ()
    assert {k: c.num_observations for k, c in view.clusters.items()} == before


def test_removed_and_merged_ids_do_not_come_back() -> None:
    engine, events = engine_run()
    view = ClusterView().apply_all(events)
    removed = [e["delete_event"]["deleted_cluster"] for e in events if e["type"] == "DELETE_EVENT"]
    merges = [e["merge_event"] for e in events if e["type"] == "MERGE_EVENT"]
    view.apply_all(events)  # a whole replay
    for cid in removed:
        assert cluster_name(cid) not in view.clusters
    for merge in merges:
        for old in merge["merged_clusters"]:
            key = cluster_name(old)
            assert key not in view.clusters
            assert view.resolve(key) in engine.clusters or view.resolve(key) not in view.clusters


def test_event_version_and_events_without_one() -> None:
    assert event_version({"event_id": "cam:1_0@12"}) == 12
    assert event_version({"event_id": "weird"}) is None
    reg = {"type": "REG_EVENT", "reg_event": {
        "cluster_id": {"first_detection_stream_id": "cam", "first_detection_key": "1_0"},
        "cluster": {"representative_fv": {"feature": [1.0, 0.0]}, "num_observations": 2,
                    "is_realized": True}}}
    view = ClusterView()
    assert view.apply(reg) == ("cam:1_0",)
    assert view.apply(reg) == ("cam:1_0",)  # no event_id: applied as before versions existed


def test_the_index_mirrors_the_view_through_any_delivery() -> None:
    engine, events = engine_run()
    state = ReidState("exact", "cpu")
    delivered = kafka_like(events, random.Random(7))
    for start in range(0, len(delivered), 37):
        assert state.apply(delivered[start : start + 37]) == 0
    view = state.view.clusters
    assert set(state.index.table.keys()) == set(view)
    for key, cluster in view.items():
        row = state.index.vectors[state.index.slot_of(key)]
        np.testing.assert_allclose(row, cluster.representative / np.linalg.norm(
            cluster.representative), atol=1e-6)
    assert_view_is_engine(state.view, engine)


def test_identify_ranks_clusters_and_flags_matches() -> None:
    engine, events = engine_run()
    state = ReidState("exact", "cpu")
    state.apply(events)
    keys = sorted(state.view.clusters)
    reps = np.stack([state.view.clusters[k].representative for k in keys])
    answers = state.identify(reps * 3.0, k=4, threshold=0.99)  # length does not matter
    for key, answer in zip(keys, answers, strict=True):
        assert answer.best.cluster_id == key and answer.match
        assert answer.best.similarity == pytest.approx(1.0, abs=1e-5)
        sims = [c.similarity for c in answer.candidates]
        assert sims == sorted(sims, reverse=True) and len(sims) == min(4, len(keys))
    removed = {e["delete_event"]["deleted_cluster"]["first_detection_key"]
               for e in events if e["type"] == "DELETE_EVENT"}
    everything = state.identify(reps, k=len(keys) + 5, threshold=0.5)
    named = {c.cluster_id.split(":", 1)[1] for a in everything for c in a.candidates}
    assert not named & removed
    assert not state.identify(-reps[:1], k=1, threshold=0.5)[0].match
    with pytest.raises(ValueError, match="have 3 values"):
        state.identify(np.ones((1, 3)), k=1, threshold=0.5)


def test_identify_on_an_empty_view_answers_no_candidates() -> None:
    (answer,) = ReidState("exact", "cpu").identify(np.ones((1, 8)), k=3, threshold=0.0)
    assert answer.to_dict() == {"match": False, "cluster_id": None, "similarity": None,
                                "candidates": []}


def test_a_malformed_event_is_refused_and_the_index_stays_in_step() -> None:
    state = ReidState("exact", "cpu")
    bad = {"type": "REG_EVENT", "event_id": "cam:x@1", "reg_event": {
        "cluster_id": {"first_detection_stream_id": "cam", "first_detection_key": "x"},
        "cluster": {"num_observations": 3, "is_realized": True}}}
    assert state.apply([bad]) == 1
    assert len(state.index) == len(state.view.clusters) == 0


# -- requests -------------------------------------------------------------------------------


def test_requests_in_json_and_msgpack() -> None:
    one = parse_identify(b'{"vector": [1, 2.5]}', "application/json", k=5, threshold=0.5)
    assert one.queries.tolist() == [[1.0, 2.5]] and (one.k, one.threshold) == (5, 0.5)
    body = msgpack.packb({"vectors": [np.float32([1, 2]).tobytes(), [3, 4],
                                      {"feature": [5, 6], "model_id": "m"}],
                          "k": 2, "threshold": 0.7})
    many = parse_identify(body, "application/msgpack; charset=x", k=5, threshold=0.5)
    assert many.queries.tolist() == [[1, 2], [3, 4], [5, 6]] and many.k == 2
    assert many.threshold == 0.7
    assert parse_identify(b'{"vector": [1]}', "", k=1, threshold=0).queries.shape == (1, 1)


@pytest.mark.parametrize(("body", "message"), [
    (b"", "empty body"),
    (b"{nope", "not JSON"),
    (b"[1, 2]", "must be an object"),
    (b'{"vecor": [1]}', "unknown field"),
    (b'{"vector": [1], "vectors": [[1]]}', "exactly one"),
    (b"{}", "exactly one"),
    (b'{"vector": []}', "non-empty array"),
    (b'{"vector": ["a"]}', "flat array of numbers"),
    (b'{"vector": [[1, 2]]}', "flat array of numbers"),
    (b'{"vector": [0, 0]}', "all zeros"),
    (b'{"vector": [1e39]}', "infinite"),
    (b'{"vectors": [[1, 2], [1]]}', r"vectors\[1\] has 1 values"),
    (b'{"vectors": []}', "non-empty array of vectors"),
    (b'{"vector": [1], "k": 0}', '"k" must be'),
    (b'{"vector": [1], "k": true}', '"k" must be'),
    (b'{"vector": [1], "threshold": 2}', '"threshold" must be'),
    (b'{"vector": {"model_id": "m"}}', 'without "feature"'),
])
def test_bad_requests_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        parse_identify(body, "application/json", k=5, threshold=0.5)
    assert caught.value.status == 400


def test_an_unknown_content_type_is_415() -> None:
    with pytest.raises(BadRequest, match="Content-Type") as caught:
        parse_identify(b"<xml/>", "application/xml", k=5, threshold=0.5)
    assert caught.value.status == 415


# -- HTTP, without Kafka: the follower is not started, events are applied directly -----------


@pytest.fixture
async def client():
    service = ReidService(Settings(), ReidOptions(topic="t", k=3, threshold=0.9))
    async with TestClient(TestServer(make_app(service))) as http:
        yield http, service


async def test_http_endpoints(client) -> None:  # noqa: ANN001 - the fixture's pair
    http, service = client
    assert (await http.post("/identify", json={"vector": [1.0]})).status == 503
    assert (await http.get("/ready")).status == 503
    assert (await http.get("/health")).status == 200
    engine, events = engine_run(300)
    service.state.apply(events)
    service.follower.ready.set()
    assert (await http.get("/ready")).status == 200
    key, cluster = next(iter(service.state.view.clusters.items()))
    vector = cluster.representative.tolist()
    answer = await (await http.post("/identify", json={"vector": vector})).json()
    (result,) = answer["results"]
    assert result["match"] and result["cluster_id"] == key and len(result["candidates"]) == 3
    assert result["candidates"][0]["num_observations"] == cluster.num_observations
    packed = msgpack.packb({"vectors": [np.float32(vector).tobytes()] * 2, "k": 1})
    response = await http.post("/identify", data=packed,
                               headers={"Content-Type": "application/msgpack"})
    assert [r["cluster_id"] for r in (await response.json())["results"]] == [key, key]
    bad = await http.post("/identify", json={"vector": [1.0, 2.0]})
    assert bad.status == 400 and "values; the clusters have 32" in (await bad.json())["error"]
    assert (await http.get(f"/clusters/{key}")).status == 200
    assert (await http.get("/clusters/cam:nope")).status == 404
    metrics = await (await http.get("/metrics")).text()
    assert 'fvc_reid_queries_total{source="http"} 3.0' in metrics
    assert "fvc_reid_bad_requests_total 1.0" in metrics
    spec = orjson.loads(await (await http.get("/openapi.json")).read())
    assert {"/identify", "/health", "/ready", "/metrics"} <= set(spec["paths"])
    registry = Registry().with_resource("urn:reid", Resource(spec, DRAFT202012))
    for name, body in (("IdentifyResponse", answer), ("IdentifyRequest", {"vector": vector})):
        schema = {"$ref": f"urn:reid#/components/schemas/{name}"}
        Draft202012Validator(schema, registry=registry).validate(body)
    stats = await (await http.get("/stats")).json()
    assert stats["clusters"] == len(service.state) and stats["dimension"] == 32


def reg(key: str, feature: list[float], version: int = 1) -> dict:
    return {"type": "REG_EVENT", "event_id": f"cam:{key}@{version}", "reg_event": {
        "cluster_id": {"first_detection_stream_id": "cam", "first_detection_key": key},
        "cluster": {"representative_fv": {"feature": feature}, "num_observations": 3,
                    "is_realized": True}}}


def test_unsearchable_representatives_are_left_out_of_view_and_index() -> None:
    state = ReidState("exact", "cpu")
    state.apply([reg("a", [1.0, 0.0]), reg("b", [1.0, 0.0, 0.0]), reg("c", [float("nan"), 1.0]),
                 reg("d", [0.0, 0.0]), reg("e", [0.0, 2.0])])
    assert sorted(state.view.clusters) == ["cam:a", "cam:e"] and state.dropped == 3
    assert len(state.index) == 2 and state.dimension == 2
    (answer,) = state.identify(np.array([[0.0, 5.0]]), k=5, threshold=0.5)
    assert [c.cluster_id for c in answer.candidates] == ["cam:e", "cam:a"]
    state.apply([reg("b", [0.0, 1.0], version=2)])  # a later usable version is taken
    assert "cam:b" in state.view.clusters and len(state.index) == 3


def test_the_stream_matcher_answers_mixed_dimensions_on_an_empty_view() -> None:
    import threading

    from app.downstream.reid.metrics import ReidMetrics
    from app.downstream.reid.stream import StreamMatcher

    state = ReidState("exact", "cpu")
    matcher = StreamMatcher(Settings(), CONFIG, state, ReidMetrics(), threading.Event(),
                            output_topic="out", group="g", k=3, threshold=0.5)
    answers = matcher._identify([np.ones(2, np.float32), np.ones(3, np.float32)])
    assert [a.match for a in answers] == [False, False]
    state.apply([reg("a", [1.0, 0.0])])
    answers = matcher._identify([np.ones(2, np.float32), np.ones(3, np.float32)])
    assert answers[0].best.cluster_id == "cam:a" and answers[1].best is None


@pytest.mark.parametrize("argv", [["--k", "0"], ["--threshold", "1.5"], ["--port", "0"],
                                  ["--stream"]])
def test_the_command_refuses_bad_flags(argv: list[str], capsys, monkeypatch) -> None:  # noqa: ANN001
    from app.commands import reid as command

    monkeypatch.delenv("FVC_CONFIG", raising=False)
    assert command.main(argv) == 2
    assert "fvc reid: --" in capsys.readouterr().err
