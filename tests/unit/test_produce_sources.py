"""`fvc produce` without Kafka: sources to rows, stream routing, the send plan, pacing, values.

Sending itself runs against a fake producer here (delivery failures, encoded values); the real
broker round trip is in tests/integration/test_produce_tail.py.
"""

from __future__ import annotations

import argparse

import numpy as np
import orjson
import pytest

from app import kafka_client
from app.codec.decode import Selector, decode
from app.commands import produce as produce_command
from app.commands.produce import read_rows, write_labels
from app.config import parse_config
from app.errors import FvcError
from app.offline.produce import (
    Pacer,
    Rows,
    as_rows,
    detection_keys,
    planned_records,
    produce_scene,
    routes_for,
)
from app.offline.synth import make_scene
from app.settings import Settings

NOW = 1_800_000_000_000


def config_for(*streams: tuple[str, str | None]) -> object:
    """A config whose streams read ``<id>.in`` at ``features`` or at an FVCluster path."""
    configs = []
    for stream, cluster_path in streams:
        selector = {"fv_cluster_path": cluster_path} if cluster_path else {
            "feature_vector_path": "det.fv"
        }
        configs.append({
            "stream_id": stream, "topic": f"{stream}.in", "fv_field_selector": selector,
            "reg_stream_config": {"reg_threshold": 0.5},
        })
    return parse_config({"clustering_config": {"method": "SIMPLE_AVERAGE"},
                         "input_stream_configs": configs})


def write_jsonl(path, lines: list[object]) -> None:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x) for x in lines))


def test_detection_keys_count_within_each_stream_and_time() -> None:
    keys = detection_keys(["a", "a", "b", "a", "a"], [5, 5, 5, 6, 5])
    assert keys == ["5_0", "5_1", "5_0", "6_0", "5_2"]


def test_synthetic_scene_rows_keep_order_times_and_labels() -> None:
    scene = make_scene(400, seed=2, dim=8, cameras=3)
    rows = as_rows(scene)
    assert rows.n == 400 and (rows.t == scene.t).all() and (rows.y == scene.y).all()
    assert len(set(zip(rows.s.tolist(), rows.keys, strict=True))) == 400
    for stream, key, ms, vector in rows.tuples()[:50]:
        assert key.startswith(f"{ms}_") and stream.startswith("camera_") and vector.shape == (8,)


def test_npz_with_every_array_reads_like_the_scene(tmp_path) -> None:
    scene = make_scene(120, seed=4, dim=6, cameras=2)
    rows = read_rows(scene.save(tmp_path / "scene.npz"))
    expected = as_rows(scene)
    assert rows.keys == expected.keys and (rows.s == expected.s).all()
    assert (rows.X == scene.X).all() and (rows.y == scene.y).all()


def test_npz_of_vectors_only_gets_one_stream_and_stepped_times(tmp_path) -> None:
    np.savez(tmp_path / "x.npz", X=np.ones((3, 4), np.float32))
    rows = read_rows(tmp_path / "x.npz", stream="cam9", interval_ms=40, now_ms=NOW)
    assert [r[:3] for r in rows.tuples()] == [
        ("cam9", f"{NOW}_0", NOW), ("cam9", f"{NOW + 40}_0", NOW + 40),
        ("cam9", f"{NOW + 80}_0", NOW + 80),
    ]
    assert rows.y is None


def test_npz_arrays_of_different_lengths_are_refused(tmp_path) -> None:
    np.savez(tmp_path / "bad.npz", X=np.ones((3, 4)), t=np.arange(2))
    with pytest.raises(FvcError, match="t has 2 entries, X has 3 rows"):
        read_rows(tmp_path / "bad.npz")


def test_npy_is_one_stream_from_now(tmp_path) -> None:
    X = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    np.save(tmp_path / "v.npy", X)
    rows = read_rows(tmp_path / "v.npy", stream="door", now_ms=NOW)
    assert rows.s.tolist() == ["door"] * 3
    assert rows.t.tolist() == [NOW, NOW + 100, NOW + 200]
    assert rows.keys == [f"{NOW}_0", f"{NOW + 100}_0", f"{NOW + 200}_0"]
    assert (rows.X == X).all()


def test_npy_of_one_vector_is_refused(tmp_path) -> None:
    np.save(tmp_path / "v.npy", np.ones(4))
    with pytest.raises(FvcError, match="2-d array"):
        read_rows(tmp_path / "v.npy")


def test_jsonl_reads_both_line_forms_and_skips_end_of_frame(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [
        {"features": {"model_id": "m1", "feature": [1, 0], "type": "PERSON_FULL_BODY"},
         "end_of_frame": False, "stream_id": "cam1", "key": "1000_0", "timestamp": 1000},
        {"end_of_frame": True, "stream_id": "cam1", "key": "1000_1", "timestamp": 1000},
        b"",
        {"stream_id": "cam2", "feature": [0, 2], "key": "1500_3"},
        {"cluster": {"representative_fv": {"feature": [3, 3]}, "num_observations": 4}},
        {"feature": [1, 1]},
    ])
    rows = read_rows(path, stream="dflt", now_ms=NOW, interval_ms=10)
    assert [r[:3] for r in rows.tuples()] == [
        ("cam1", "1000_0", 1000), ("cam2", "1500_3", 1500),
        ("dflt", f"{NOW + 20}_0", NOW + 20), ("dflt", f"{NOW + 30}_0", NOW + 30),
    ]
    assert rows.X.tolist() == [[1, 0], [0, 2], [3, 3], [1, 1]]
    assert rows.meta[0] == ("m1", "PERSON_FULL_BODY") and rows.meta[1] == ("", "")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (b"{not json", "d.jsonl:2: not JSON"),
        (b"[1, 2]", "d.jsonl:2: expected a JSON object"),
        (b'{"features": {"model_id": "m"}}', "d.jsonl:2: missing_field: features.feature"),
        (b'{"feature": [1, 2, 3]}', "d.jsonl:2: feature has 3 values, the first vector has 2"),
        (b'{"feature": [1, 2], "timestamp": "soon"}', "d.jsonl:2: timestamp must be a int"),
        (b'{"feature": [0, 0]}', "d.jsonl:2: zero_vector"),
        (b'{"feature": [1, 2], "timestamp": -5}', "d.jsonl:2: timestamp -5 is negative"),
    ],
)
def test_a_bad_jsonl_line_is_reported_with_its_line_number(tmp_path, bad, match) -> None:
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"feature": [1, 2]}, bad, {"feature": [3, 4]}])
    with pytest.raises(FvcError, match=match):
        read_rows(path)


def test_unknown_file_kind_is_refused(tmp_path) -> None:
    (tmp_path / "v.csv").write_text("1,2\n")
    with pytest.raises(FvcError, match="unknown source kind '.csv'"):
        read_rows(tmp_path / "v.csv")


def test_routes_without_config_use_the_default_topic_and_features() -> None:
    routes = routes_for(["camera_1", "x"])
    assert routes["camera_1"] == ("camera_1.FeatureVectorRecord.json", "features", False)
    assert routes["x"].topic == "x.FeatureVectorRecord.json"


def test_routes_with_config_follow_topic_and_field_selector() -> None:
    routes = routes_for(["a", "b"], config_for(("a", None), ("b", "up.cluster")))
    assert routes["a"] == ("a.in", "det.fv", False)
    assert routes["b"] == ("b.in", "up.cluster", True)


def test_a_stream_missing_from_the_config_is_named() -> None:
    with pytest.raises(FvcError, match=r"stream 'ghost' is not in the config \(configured: a\)"):
        routes_for(["a", "ghost"], config_for(("a", None)))


def test_plan_closes_each_frame_after_its_last_detection() -> None:
    rows = Rows(np.ones((4, 2), np.float32), np.array([5, 5, 5, 7]), np.array(["a", "b", "a", "a"]),
                detection_keys(["a", "b", "a", "a"], [5, 5, 5, 7]))
    sent = planned_records(rows, end_of_frame=True)
    topic = "a.FeatureVectorRecord.json"
    assert sent == [
        (topic, "5_0", 5), ("b.FeatureVectorRecord.json", "5_0", 5),
        ("b.FeatureVectorRecord.json", "5_1", 5), (topic, "5_1", 5), (topic, "5_2", 5),
        (topic, "7_0", 7), (topic, "7_1", 7),
    ]
    assert planned_records(rows, limit=2) == sent[:2]


def test_starting_at_moves_times_and_keys_together() -> None:
    rows = as_rows(make_scene(30, seed=1, dim=4)).starting_at(NOW)
    assert rows.t[0] == NOW
    assert all(k.startswith(f"{t}_") for k, t in zip(rows.keys, rows.t.tolist(), strict=True))


def test_pacer_waits_only_when_well_ahead_of_schedule() -> None:
    now = [100.0]
    pacer = Pacer(400.0, clock=lambda: now[0])
    assert pacer.pause(1) == 0.0  # 2.5 ms ahead: not worth a sleep
    assert pacer.pause(4) == pytest.approx(0.01)
    now[0] += 0.02
    assert pacer.pause(8) == 0.0 and Pacer(0.0).pause(10**6) == 0.0
    later = Pacer(400.0, clock=lambda: now[0], start=now[0] + 1.0)  # records planned to go later
    assert later.pause(0) == pytest.approx(1.0) and later.pause(400) == pytest.approx(2.0)


class FakeProducer:
    """Records what is produced; deliveries to topics in ``failing`` fail at flush."""

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.sent: list[tuple[str, bytes, bytes, int]] = []
        self.pending: list = []
        self.failing = failing
        self.described: list[str] = []

    def list_topics(self, topic: str, timeout: float) -> None:
        assert not self.sent, "metadata is fetched before the first record"
        self.described.append(topic)

    def produce(self, topic, value, key, timestamp, on_delivery) -> None:
        self.sent.append((topic, key, value, timestamp))
        self.pending.append((on_delivery, "broker said no" if topic in self.failing else None))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        for callback, error in self.pending:
            callback(error, None)
        self.pending = []
        return 0


@pytest.fixture
def fake(monkeypatch) -> FakeProducer:
    producer = FakeProducer(failing=("b.in",))
    monkeypatch.setattr(kafka_client, "make_producer", lambda _settings: producer)
    monkeypatch.setattr(kafka_client, "ensure_topics", lambda *_a, **_k: ["a.in"])
    return producer


def test_produce_scene_sends_the_plan_and_counts_failed_deliveries(fake) -> None:
    rows = Rows(np.array([[1, 2], [3, 4], [5, 6]], np.float32), np.array([10, 10, 20]),
                np.array(["a", "b", "a"]), ["10_0", "10_0", "20_0"])
    config = config_for(("a", None), ("b", "up.cluster"))
    report = produce_scene(Settings(), rows, config=config, fmt="msgpack", model_id="mm")
    assert [(t, k.decode(), ms) for t, k, _, ms in fake.sent] == planned_records(
        rows, config=config
    )
    assert (report.records, report.failed, report.created_topics) == (3, 1, ("a.in",))
    assert report.errors == ["broker said no"] and report.topics == ("a.in", "b.in")
    assert fake.described == ["a.in", "b.in"]
    first = decode(fake.sent[0][2], "msgpack", Selector.of(config.stream("a")))
    assert first.vector.tolist() == [1, 2] and first.model_id == "mm"
    assert first.type == "PERSON_FACE"
    second = decode(fake.sent[1][2], "auto", Selector.of(config.stream("b")))
    assert second.count == 1 and second.vector.tolist() == [3, 4]


def test_labels_file_holds_the_ground_truth_in_send_order(tmp_path) -> None:
    rows = as_rows(make_scene(50, seed=3, dim=4, cameras=2)).head(20)
    with np.load(write_labels(tmp_path / "l.npz", rows)) as labels:
        assert labels["keys"].tolist() == rows.keys and (labels["y"] == rows.y).all()
        assert (labels["t"] == rows.t).all() and (labels["s"] == rows.s).all()
        assert labels["topics"][0] == f"{rows.s[0]}.FeatureVectorRecord.json"


def run_produce(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    produce_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["produce", *argv])
    return args.func(args)


def test_cli_needs_exactly_one_source() -> None:
    with pytest.raises(FvcError, match="exactly one of SOURCE"):
        run_produce([])
    with pytest.raises(FvcError, match="exactly one of SOURCE"):
        run_produce(["x.npy", "--synthetic", "5"])


def test_cli_reports_undelivered_records_and_exits_non_zero(fake, tmp_path, capsys) -> None:
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"stream_id": s, "feature": [1, 1]} for s in ("a", "b")])
    (tmp_path / "c.json").write_bytes(orjson.dumps(config_for(("a", None), ("b", None)).to_dict()))
    with pytest.raises(FvcError, match="1 of 2 records were not delivered: broker said no"):
        run_produce([str(path), "--config", str(tmp_path / "c.json")])
    assert capsys.readouterr().out.startswith("sent 2 records to 2 topic(s), 1 created in ")


def test_a_synthetic_scene_for_a_config_is_seen_by_its_streams(
    fake, monkeypatch, tmp_path
) -> None:
    delivering = FakeProducer(failing=())
    monkeypatch.setattr(kafka_client, "make_producer", lambda _settings: delivering)
    (tmp_path / "c.json").write_bytes(orjson.dumps(config_for(("a", None), ("b", None)).to_dict()))
    run_produce(["--synthetic", "60", "--dim", "4", "--config", str(tmp_path / "c.json")])
    assert {topic for topic, *_ in delivering.sent} == {"a.in", "b.in"}  # not camera_0..3
    with pytest.raises(FvcError, match="'camera_0' is not in the config"):  # asked for more
        run_produce(["--synthetic", "60", "--cameras", "3", "--config", str(tmp_path / "c.json")])


def test_client_config_is_minimal_for_plaintext() -> None:
    config = kafka_client.client_config(Settings(kafka_bootstrap="k:1"), **{"linger.ms": 7})
    assert config["bootstrap.servers"] == "k:1" and config["security.protocol"] == "plaintext"
    assert config["linger.ms"] == 7 and not any(k.startswith(("sasl", "ssl")) for k in config)


def test_client_config_passes_sasl_and_tls_settings_through() -> None:
    settings = Settings.from_env(
        {}, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
        sasl_password="p",  # noqa: S106 - a dummy credential, checked to pass through
        ssl_cafile="/ca.pem", ssl_certfile="/c.pem", ssl_keyfile="/k.pem",
    )
    config = kafka_client.client_config(settings)
    assert config["security.protocol"] == "sasl_ssl"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
        "SCRAM-SHA-512", "u", "p"
    )
    assert (config["ssl.ca.location"], config["ssl.certificate.location"]) == ("/ca.pem", "/c.pem")
    assert config["ssl.key.location"] == "/k.pem"
