"""Event time everywhere, against the real Kafka and Redis: live, batch and offline agree.

Issue 17, item 6. The same scene, produced to real topics, is clustered by live workers
(``fvc worker``, both ingest modes), by batch mode (``fvc run``) and offline (``fvc evaluate
--assignments``). A live or batch run's answer is its assignments topic resolved through the
MERGE events of its downstream topic (tests/support/replay.py ``LiveAnswer``), the way a
consumer would resolve it.

* One input partition: the worker sees the records in the order batch mode and ``fvc evaluate``
  take them, so every observation's final cluster is the offline one, and batch and live
  publish the same events (by id and value), whatever the batches were.
* Several input partitions, fed at full speed (a backlog), scored against the offline partition
  (B-cubed, offline as the truth, target 0.995). Bulk workers release their records in the one
  event-time order across all partitions, whichever worker reads them (frontiers in Redis), and
  match; a Faust worker decides in the order Kafka hands it the partitions (strict xfails,
  ``BelowOffline`` only, with the measured figures).
* ``fvc run`` and ``fvc evaluate --assignments`` through the real command line, on a scene of
  four cameras: identical assignments.

Live workers run with ``FVC_IDLE_TIMEOUT=0``: an input idle that long lets the watermark move
with the wall clock (the one wall-clock step, by design), which no replay can reproduce; a slow
test host must not turn that on between the last record and the reading of the answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from worker_support import FVC, Deployment, http, wait_for

from app.config import ClusteringConfig, parse_config
from app.engine import Engine
from app.engine.clock import ORDERED, EventClock
from app.offline.evaluate import evaluate
from app.offline.produce import as_rows
from app.offline.quality import bcubed
from app.offline.synth import Scene, make_scene
from app.settings import Settings
from app.store import MemoryStore, create_store
from tests.support.replay import Assignments, event_time_config, offline_assignments
from tests.support.topics import Events, last_offsets, live_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLOCK_TICKS_S = 2.5  # the leader's clock timer runs every second: two ticks at the last watermark
SETTLE_TIMEOUT_S = 120.0


def deployment_for(
    tmp: Path,
    name: str,
    inputs: str,
    kafka: str,
    redis: str,
    config: ClusteringConfig,
    partitions: int,
) -> Deployment:
    """A deployment of ``config`` reading ``<inputs>.<stream>``, with its own outputs.

    Its topics, group, namespace and assignments topic are named after ``name``; several
    deployments may read the same inputs.
    """
    folder = tmp / name
    folder.mkdir()
    deployment = Deployment(folder, name, kafka, redis, cameras=len(config.streams),
                            partitions=partitions)
    data = config.to_dict()
    for stream in data["input_stream_configs"]:
        stream["topic"] = f"{inputs}.{stream['stream_id']}"
    deployment.config_data = data
    deployment.write_config(data)
    deployment.env.update({"FVC_ASSIGNMENTS_TOPIC": f"{name}.assignments",
                           "FVC_IDLE_TIMEOUT": "0"})
    deployment.settings = Settings.from_env(deployment.env)
    return deployment


def store_state(deployment: Deployment) -> tuple[dict[str, int], int]:
    """The input offsets stored in Redis, and how many outbox records wait to be published."""

    async def go() -> tuple[dict[str, int], int]:
        store = create_store(deployment.settings.redis_url, deployment.name)
        await store.start()
        try:
            return await store.offsets(), len(await store.outbox_pending(limit=1))
        finally:
            await store.close()

    return asyncio.run(go())


def settle(deployment: Deployment) -> None:
    """Wait until the workers applied every input record, ticked, and published everything."""
    last = last_offsets(deployment.settings, list(deployment.config.topics))
    wait_for(lambda: store_state(deployment)[0] == last, SETTLE_TIMEOUT_S,
             f"{deployment.name} to apply every input record")
    time.sleep(CLOCK_TICKS_S)  # realization and retention at the last watermark
    wait_for(lambda: store_state(deployment)[1] == 0, 60, f"{deployment.name}'s outbox")


def run_batch(deployment: Deployment) -> subprocess.CompletedProcess[str]:
    """``fvc run`` over the deployment's inputs, through the real command line."""
    return subprocess.run(
        [FVC, "run", "--config", str(deployment.config_path)],
        env=deployment.env, capture_output=True, text=True, timeout=300,
    )


def answer_of(deployment: Deployment) -> tuple[Assignments, Events, int]:
    """A deployment's final assignments, its events by id, and its END_OF_INPUT records."""
    answer, events, ends = live_run(deployment.settings,
                                    deployment.env["FVC_ASSIGNMENTS_TOPIC"])
    return answer.final(), events, ends


def in_event_order(scene: Scene) -> list[tuple[str, str]]:
    """(stream, key) of every row in the order ``fvc evaluate`` clusters them."""
    rows = as_rows(scene)
    where = list(zip(rows.s.tolist(), rows.keys, strict=True))
    order = sorted(range(rows.n), key=lambda i: (int(rows.t[i]), where[i][0], i))
    return [where[i] for i in order]


def divergence(expected: Assignments, got: Assignments, order: list[tuple[str, str]]) -> str:
    """Which observations differ, the first in event order first (empty when none)."""
    missing = [w for w in order if w not in got]
    wrong = [w for w in order if w in got and got[w] != expected[w]]
    extra = sorted(set(got) - set(expected))
    if not (missing or wrong or extra):
        return ""
    lines = [f"{len(wrong)} observations in another cluster, {len(missing)} missing, "
             f"{len(extra)} unknown"]
    lines += [f"  {w}: expected {expected[w]}, got {got[w]}" for w in wrong[:10]]
    lines += [f"  missing {w}" for w in missing[:5]]
    lines += [f"  unknown {w}" for w in extra[:5]]
    return "\n".join(lines)


def event_difference(first: Events, second: Events, names: tuple[str, str]) -> str:
    """How two runs' events differ (empty when equal): ids only in one, values that differ."""
    only_first = sorted(set(first) - set(second))
    only_second = sorted(set(second) - set(first))
    changed = sorted(k for k in set(first) & set(second) if first[k] != second[k])
    if not (only_first or only_second or changed):
        return ""
    lines = [f"{len(only_first)} events only in {names[0]}, {len(only_second)} only in "
             f"{names[1]}, {len(changed)} with another value"]
    lines += [f"  only in {names[0]}: {_brief(first[k])}" for k in only_first[:5]]
    lines += [f"  only in {names[1]}: {_brief(second[k])}" for k in only_second[:5]]
    for key in changed[:5]:
        lines.append(f"  {key}: {_brief(first[key])}\n     vs {_brief(second[key])}")
    return "\n".join(lines)


def _brief(value: bytes) -> str:
    """An event without its vector: type, id, count, realization, merged clusters."""
    body = orjson.loads(value)
    inner: dict[str, Any] = next((v for k, v in body.items() if k.endswith("_event")), {})
    cluster = inner.get("cluster", {})
    merged = [c["first_detection_key"] for c in inner.get("merged_clusters", [])]
    return (f"{body['type']} {body['event_id']} n={cluster.get('num_observations')} "
            f"realized={cluster.get('is_realized')} merged={merged} "
            f"reason={inner.get('reason')}")


def kinds(events: Iterable[bytes]) -> Counter[str]:
    return Counter(orjson.loads(v)["type"] for v in events)


def test_one_partition_live_and_batch_give_the_offline_answer_and_the_same_events(
    tmp_path: Path, unique: str, kafka_bootstrap: str, redis_url: str
) -> None:
    scene = make_scene(3_000, seed=21, dim=32, cameras=1, frame_interval_ms=200)
    config = event_time_config(["camera_0"])
    offline = offline_assignments(scene, config)
    inputs = f"{unique}.in"
    names = ("batch", "faust", "bulk")
    runs = {n: deployment_for(tmp_path, f"{unique}-{n}", inputs, kafka_bootstrap, redis_url,
                              config, partitions=1) for n in names}
    try:
        for ingest in ("faust", "bulk"):
            runs[ingest].start_worker(FVC_INGEST=ingest)
        report = runs["batch"].produce(scene)  # as fast as it goes, the workers reading along
        assert (report.records, report.failed) == (scene.n, 0)
        batch = run_batch(runs["batch"])
        assert batch.returncode == 0, batch.stderr
        assert f"processed {scene.n} records" in batch.stdout
        for ingest in ("faust", "bulk"):
            settle(runs[ingest])
        answers = {n: answer_of(d) for n, d in runs.items()}
    finally:
        for deployment in runs.values():
            deployment.stop_all()
            deployment.clear()

    order = in_event_order(scene)
    for name, (final, _, _) in answers.items():
        assert not divergence(offline, final, order), f"{name}: {divergence(offline, final, order)}"
    assert answers["batch"][2] == 1  # END_OF_INPUT_RECORD on the one output partition
    batch_events = answers["batch"][1]
    found = kinds(batch_events.values())
    assert found["MERGE_EVENT"] > 10, f"the scene must merge often for this to mean much: {found}"
    assert found["DELETE_EVENT"] and found["REG_EVENT"], found
    for ingest in ("faust", "bulk"):
        difference = event_difference(batch_events, answers[ingest][1], ("batch", ingest))
        assert not difference, difference


class BelowOffline(AssertionError):
    """A live answer further from the offline one than 0.995 B-cubed."""


ARRIVAL_ORDER = (
    "product: a Faust worker decides observations in the order Kafka delivers them, not in "
    "event-time order; read at full speed, partitions come in chunks far apart in event time. "
    "Measured B-cubed against offline: precision 0.68-0.97, recall 0.80-1.00 (issue 17 item 6)"
)
LAYOUTS = {
    "4-cameras-of-1-partition": (4, 1),  # both ingest modes give all four to one worker
    "1-camera-of-4-partitions": (1, 4),
    "4-cameras-of-2-partitions": (4, 2),
}


def _case(layout: str, ingest: str) -> object:
    """One (cameras, partitions, ingest) case, marked with the shortfall it still has."""
    cameras, partitions = LAYOUTS[layout]
    reason = ARRIVAL_ORDER if ingest == "faust" else None
    marks = [pytest.mark.xfail(reason=reason, raises=BelowOffline, strict=True)] if reason else []
    return pytest.param(cameras, partitions, ingest, marks=marks, id=f"{layout}-{ingest}")


@pytest.mark.parametrize(
    ("cameras", "partitions", "ingest"),
    [_case(layout, ingest) for layout in LAYOUTS for ingest in ("bulk", "faust")],
)
def test_two_workers_over_many_partitions_stay_within_half_a_percent_of_the_offline_answer(
    tmp_path: Path, unique: str, kafka_bootstrap: str, redis_url: str, cameras: int,
    partitions: int, ingest: str,
) -> None:
    """Two workers share the input partitions; the answer is scored against the offline one.

    Faust gives a worker the same partition of every topic (co-partitioning), so four
    one-partition topics all go to one worker (the other stands by): the partitions are also
    shared out as one camera's topic of four partitions, and as four cameras' topics of two.
    """
    scene = make_scene(4_000, seed=22, dim=32, cameras=cameras, frame_interval_ms=200)
    config = event_time_config([f"camera_{c}" for c in range(cameras)])
    offline = offline_assignments(scene, config)
    live = deployment_for(tmp_path, unique, f"{unique}.in", kafka_bootstrap, redis_url, config,
                          partitions=partitions)
    inputs = cameras * partitions
    try:
        report = live.produce(scene)  # a backlog: a replay, or a catch-up after downtime
        assert (report.records, report.failed) == (scene.n, 0)
        live.start_worker(FVC_INGEST=ingest)
        live.start_worker(FVC_INGEST=ingest)
        # every input partition held (with Faust ingest, one also holds Faust's leader partition)
        expected = inputs + (ingest == "faust")
        wait_for(lambda: -1 not in (held := assigned(live)) and sum(held) == expected, 60,
                 "the input partitions shared out between the two workers")
        shares = assigned(live)
        settle(live)
        final, events, _ = answer_of(live)
        counters = [worker_counters(live, i) for i in range(len(live.workers))]
    finally:
        live.stop_all()
        live.clear()

    order = in_event_order(scene)
    assert sorted(final) == sorted(order), divergence(offline, final, order)
    precision, recall, _ = bcubed([offline[w] for w in order], [final[w] for w in order])
    assert kinds(events.values())["MERGE_EVENT"] > 10
    found = (
        f"B-cubed against offline: precision {precision:.4f}, recall {recall:.4f}; partitions "
        f"held {shares}; late records {[c['fvc_late_records_total'] for c in counters]}; merge "
        f"passes stored {[c['fvc_merge_passes_total'] for c in counters]}, offline "
        f"{merge_boundaries(scene, config)}\n{divergence(offline, final, order)}"
    )
    if precision < 0.995 or recall < 0.995:
        raise BelowOffline(found)


def assigned(deployment: Deployment) -> list[int]:
    """How many partitions each worker holds (-1 for one not answering or not ready)."""
    out = []
    for index in range(len(deployment.workers)):
        try:
            status, body = http("GET", deployment.url(index, "/ready"), timeout=2)
            out.append(orjson.loads(body)["assigned"] if status == 200 else -1)
        except OSError:
            out.append(-1)
    return out


def worker_counters(deployment: Deployment, index: int) -> dict[str, float]:
    """The late-record and merge-pass counters of one worker, from its /metrics page."""
    text = http("GET", deployment.url(index, "/metrics"))[1].decode()
    wanted = ("fvc_late_records_total", "fvc_merge_passes_total")
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name in wanted
    }


def merge_boundaries(scene: Scene, config: ClusteringConfig) -> int:
    """How many merge passes the offline run of ``scene`` stores (its event-time clock)."""
    assert config.merging is not None
    clock = EventClock(config.merging.time_interval_ms, ordered=True)
    times = sorted(scene.t.tolist())
    done = passes = 0
    while done < len(times):
        scan = clock.scan([ORDERED] * (len(times) - done), times[done:], 0)
        clock.adopt(scan)
        done += scan.cut
        if scan.merge_at is not None:
            clock.merged(scan.merge_at)
            passes += 1
    return passes


def test_fvc_run_and_fvc_evaluate_give_identical_assignments(
    tmp_path: Path, unique: str, kafka_bootstrap: str, redis_url: str
) -> None:
    cameras = [f"camera_{c}" for c in range(4)]
    scene = make_scene(6_000, seed=23, cameras=4)
    batch = deployment_for(tmp_path, unique, f"{unique}.in", kafka_bootstrap, redis_url,
                           event_time_config(cameras), partitions=8)
    data = tmp_path / "scene.npz"
    scene.save(data)
    written = tmp_path / "offline.jsonl"
    try:
        evaluate = subprocess.run(
            [FVC, "evaluate", str(data), "--config", str(batch.config_path), "--json",
             "--assignments", str(written)],
            env=batch.env, capture_output=True, text=True, timeout=300,
        )
        assert evaluate.returncode == 0, evaluate.stderr
        produce = subprocess.run(
            [FVC, "produce", str(data), "--config", str(batch.config_path)],
            env=batch.env, capture_output=True, text=True, timeout=300,
        )
        assert produce.returncode == 0, produce.stderr
        run = run_batch(batch)
        assert run.returncode == 0, run.stderr
        assert f"processed {scene.n} records" in run.stdout
        final, events, _ = answer_of(batch)
    finally:
        batch.clear()

    lines = [orjson.loads(line) for line in written.read_bytes().splitlines()]
    rows = as_rows(scene)
    assert [(a["stream"], a["key"]) for a in lines] == list(
        zip(rows.s.tolist(), rows.keys, strict=True)), "one line per row, in file order"
    offline = {(a["stream"], a["key"]): a["cluster_id"] for a in lines}
    assert kinds(events.values())["MERGE_EVENT"] > 10
    difference = divergence(offline, final, in_event_order(scene))
    assert not difference, difference


def deferred_config(streams: Iterable[str], max_window_size: int = 2048) -> ClusteringConfig:
    """``event_time_config`` with the improved mode deciding windows of 1 s together."""
    data = event_time_config(streams).to_dict()
    data["clustering_config"]["improved_mode"] = {
        "enabled": True, "deferral_ms": 1_000, "max_window_size": max_window_size}
    return parse_config(data)


@pytest.mark.parametrize("max_window_size", [2048, 4], ids=["windows-of-1s", "capped-at-4"])
def test_deferred_windows_survive_a_killed_worker_and_give_the_offline_answer(
    tmp_path: Path, unique: str, kafka_bootstrap: str, redis_url: str, max_window_size: int
) -> None:
    """A bulk worker killed while it holds an open window, restarted: nothing lost or doubled.

    Deferred decisions (improved_mode.deferral_ms) hold a window's records until a record of a
    later window comes (or the window holds max_window_size records: with 4, the scene's 232
    windows of up to 60 records become 1,085); their offsets are stored only with the window's
    decision, so the restarted worker reads them again and decides the window exactly as
    ``fvc evaluate`` and ``fvc run`` do.
    """
    scene = make_scene(4_000, seed=22, dim=32, cameras=1, frame_interval_ms=100)
    config = deferred_config(["camera_0"], max_window_size)
    offline = offline_assignments(scene, config)
    engine = Engine(config)
    evaluate(scene, config, engine, MemoryStore())
    held_offline = sum(c.num_observations for c in engine.clusters.values())
    inputs = f"{unique}.in"
    runs = {n: deployment_for(tmp_path, f"{unique}-{n}", inputs, kafka_bootstrap, redis_url,
                              config, partitions=1) for n in ("batch", "bulk")}
    live = runs["bulk"]
    try:
        report = runs["batch"].produce(scene)  # a backlog: the worker reads it at full speed
        assert (report.records, report.failed) == (scene.n, 0)
        batch = run_batch(runs["batch"])
        assert batch.returncode == 0, batch.stderr
        live.start_worker(FVC_INGEST="bulk", FVC_BATCH_SIZE="16")
        wait_for(lambda: sum(store_state(live)[0].values()) > scene.n // 3, 120,
                 "the worker to store a third of the input")
        live.kill(0)
        stored = sum(store_state(live)[0].values())
        assert stored < scene.n - 1, "killed too late to hold a window"
        live.start_worker(FVC_INGEST="bulk", FVC_BATCH_SIZE="16")
        settle(live)
        observations = live.observations_stored()
        answers = {n: answer_of(d) for n, d in runs.items()}
    finally:
        for deployment in runs.values():
            deployment.stop_all()
            deployment.clear()

    assert observations == held_offline  # each record applied exactly once
    order = in_event_order(scene)
    for name, (final, _, _) in answers.items():
        assert not divergence(offline, final, order), f"{name}: {divergence(offline, final, order)}"
    difference = event_difference(answers["batch"][1], answers["bulk"][1], ("batch", "bulk"))
    assert not difference, difference
