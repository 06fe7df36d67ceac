"""Faults of the services around the workers, mid-run with two workers: nothing lost or doubled.

Each test gives the deployment a Redis of its own (the shared one must live on), or a whole
stack of its own for the broker, then kills or freezes it while records arrive. A worker that
exits because the store lost its data (status 75) is restarted, as Kubernetes would; any other
exit fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from worker_support import Deployment, free_port, http, wait_for

from app.dev.local import stack
from app.dev.local.redis import RedisService
from app.dev.local.stack import StackConfig
from app.kafka_client import make_consumer
from app.offline.synth import make_scene
from app.worker.outage import EXIT_STORE_LOST

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORDS = 3000
RATE = 300  # records/s: the fault lands while records still arrive


class OwnRedis:
    """A redis-server for one test, restartable on the same port and folder."""

    def __init__(self, home: Path, persist: bool) -> None:
        self.service = RedisService(home, free_port(), persist)
        self.service.prepare(lambda _line: None)
        self.start()

    @property
    def url(self) -> str:
        return self.service.address

    def start(self) -> None:
        self.service.launch()
        self.service.wait_ready(30)

    def signal(self, sig: int) -> None:
        pid = self.service.pid()
        assert pid is not None
        os.kill(pid, sig)

    def kill_and_restart(
        self, down_s: float, while_down: Callable[[], None] = lambda: None
    ) -> None:
        self.signal(signal.SIGKILL)
        wait_for(lambda: self.service.pid() is None, 10, "redis to die")
        began = time.monotonic()
        while_down()
        time.sleep(max(0.0, down_s - (time.monotonic() - began)))
        self.start()


@pytest.fixture
def own_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis", persist=getattr(request, "param", False))
    yield server
    server.service.stop(grace=5)


@pytest.fixture
def faulty(tmp_path: Path, unique: str, kafka_bootstrap: str, own_redis: OwnRedis) -> Iterator[
    Deployment
]:
    d = Deployment(tmp_path, unique, kafka_bootstrap, own_redis.url, cameras=1, partitions=4)
    yield d
    d.stop_all()


def records_in_topics(deployment: Deployment) -> int:
    """Records the camera topics hold: what the producer got in, retries included.

    A producer retrying through a broker restart may have written a record twice (each copy at
    its own offset): the workers must count every record the topics hold, once. A broker just
    restarted answers NOT_LEADER_FOR_PARTITION until it has elected its leaders: asked again.
    """
    consumer = make_consumer(deployment.settings)

    def watermarks(where: TopicPartition) -> tuple[int, int]:
        for _ in range(30):
            try:
                return consumer.get_watermark_offsets(where, 30)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                    raise
                time.sleep(1.0)
        return consumer.get_watermark_offsets(where, 30)

    try:
        total = 0
        for topic in deployment.config.topics:
            for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                low, high = watermarks(TopicPartition(topic, partition))
                total += high - low
        return total
    finally:
        consumer.close()


def _run_with_fault(
    deployment: Deployment, ingest: str, fault: Callable[[], None]
) -> list[int]:
    """Two workers, records arriving, ``fault()`` mid-run; restarts store-lost exits."""
    scene = make_scene(RECORDS, seed=21, dim=48, cameras=1)
    env = {"FVC_INGEST": ingest, "FVC_STORE_OUTAGE_S": "120"}
    for _ in range(2):
        deployment.start_worker(**env)
    producing = threading.Thread(target=deployment.produce, args=(scene,), kwargs={"rate": RATE})
    producing.start()
    wait_for(lambda: deployment.observations_stored() > RECORDS // 4, 60, "processing under way")
    fault()
    restarted: list[int] = []

    def counted() -> bool:
        for i, proc in enumerate(list(deployment.workers)):
            if proc.poll() is not None and i not in restarted:
                assert proc.returncode == EXIT_STORE_LOST, deployment.log(i)[-3000:]
                restarted.append(i)
                deployment.start_worker(wait=False, **env)
        try:
            stored = deployment.observations_stored()
        except Exception:  # noqa: BLE001 - the store may be down or rebuilding: ask again
            return False
        assert stored <= sent, f"{stored} observations stored for {sent} records"
        return stored == sent

    producing.join()
    sent = records_in_topics(deployment)
    assert RECORDS <= sent <= RECORDS + 10, sent
    wait_for(counted, 240, "every record counted exactly once")
    alive = [i for i, p in enumerate(deployment.workers) if p.poll() is None]
    assert len(alive) == 2, [(i, p.returncode) for i, p in enumerate(deployment.workers)]
    return restarted


def _ready(deployment: Deployment, index: int) -> dict:
    """The worker's /ready body (503 while not ready)."""
    return json.loads(http("GET", deployment.url(index, "/ready"))[1])


@pytest.mark.parametrize("ingest", ["faust", "bulk"])
@pytest.mark.parametrize("own_redis", [True], indirect=True)
def test_redis_sigkill_with_persistence_is_waited_out(
    faulty: Deployment, own_redis: OwnRedis, ingest: str
) -> None:
    def unready() -> None:
        wait_for(lambda: not _ready(faulty, 0)["store_available"], 30, "/ready to say so")
        assert _ready(faulty, 0)["ready"] is False

    restarted = _run_with_fault(faulty, ingest, lambda: own_redis.kill_and_restart(3.0, unready))
    assert restarted == []  # the AOF kept the state: no rebuild, no restart
    wait_for(lambda: _ready(faulty, 0)["store_available"], 30, "the store to be back")


@pytest.mark.parametrize("ingest", ["faust", "bulk"])
def test_redis_sigkill_without_persistence_is_rebuilt(
    faulty: Deployment, own_redis: OwnRedis, ingest: str
) -> None:
    restarted = _run_with_fault(faulty, ingest, lambda: own_redis.kill_and_restart(1.0))
    assert restarted, "an emptied store must be noticed"
    contents: dict[str, bytes] = {}
    events = faulty.events(timeout=5.0)
    for event in events:  # the replay's events carry their generation's tag: no id reused
        body = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        assert contents.setdefault(event["event_id"], body) == body, event["event_id"]
    assert any("~" in event["event_id"] for event in events), "the rebuild tags its ids"


@pytest.mark.parametrize("ingest", ["faust", "bulk"])
def test_redis_sigstop_pauses_the_workers(
    faulty: Deployment, own_redis: OwnRedis, ingest: str
) -> None:
    def freeze() -> None:
        """Ten seconds frozen: commands hang (up to the socket timeout), nothing fails."""
        own_redis.signal(signal.SIGSTOP)
        try:
            time.sleep(10)
        finally:
            own_redis.signal(signal.SIGCONT)

    restarted = _run_with_fault(faulty, ingest, freeze)
    assert restarted == []


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[StackConfig]:
    """A Kafka broker and a Redis of this test's own, on free ports."""
    config = StackConfig(
        tmp_path / "stack", free_port(), free_port(), free_port(), timeout=120
    )
    stack.up(config, report=lambda _line: None)
    yield config
    stack.down(config, report=lambda _line: None)


@pytest.mark.parametrize("ingest", ["faust", "bulk"])
def test_broker_sigkill_and_restart_is_waited_out(
    tmp_path: Path, unique: str, private_stack: StackConfig, ingest: str
) -> None:
    kafka_service, redis_service = stack.services(private_stack)
    deployment = Deployment(
        tmp_path, unique, f"127.0.0.1:{private_stack.kafka_port}", redis_service.address,
        cameras=1, partitions=4,
    )

    def kill_broker() -> None:
        pid = kafka_service.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: kafka_service.pid() is None, 10, "the broker to die")
        wait_for(lambda: not _ready(deployment, 0)["broker_available"], 30, "/ready to say so")
        stack.up(private_stack, report=lambda _line: None)

    try:
        assert _run_with_fault(deployment, ingest, kill_broker) == []
    finally:
        deployment.stop_all()
