"""The local stack (`fvc local`) gives real services that both Kafka clients and redis-py can use.

The shared stack is the one `fvc local up` started before pytest (``make test``); a test that
stops a stack runs its own second stack in a temporary folder on free ports, so the shared one
keeps serving the rest of the session.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.dev.local import stack
from app.dev.local.stack import StackConfig
from app.errors import LocalStackError
from tests.support.gate import require

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _create_topic(bootstrap: str, topic: str) -> None:
    """Create a one-partition topic through confluent-kafka's AdminClient and wait for it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)
    assert topic in admin.list_topics(topic, timeout=10).topics


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on right now (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _fvc(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``fvc`` command (the one next to this interpreter)."""
    fvc = Path(sys.executable).with_name("fvc")
    argv = [str(fvc)] if fvc.exists() else [sys.executable, "-m", "app.cli"]
    return subprocess.run(  # noqa: S603 - fixed argv
        [*argv, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


async def test_confluent_producer_to_aiokafka_consumer(kafka_bootstrap: str, unique: str) -> None:
    """A record written by confluent-kafka (fvc produce) reaches aiokafka (Faust's client)."""
    _create_topic(kafka_bootstrap, unique)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(unique, key=b"k1", value=b"from confluent-kafka")
    assert producer.flush(30) == 0
    consumer = AIOKafkaConsumer(
        unique, bootstrap_servers=kafka_bootstrap, group_id=unique, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"k1", b"from confluent-kafka")


async def test_aiokafka_producer_to_confluent_consumer(kafka_bootstrap: str, unique: str) -> None:
    """A record written by aiokafka (the workers) reaches confluent-kafka (fvc tail)."""
    _create_topic(kafka_bootstrap, unique)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(unique, key=b"k2", value=b"from aiokafka")
    finally:
        await producer.stop()
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": unique, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([unique])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
    finally:
        consumer.close()
    assert message is not None and message.error() is None
    assert (message.key(), message.value()) == (b"k2", b"from aiokafka")


def test_redis_answers_and_keeps_a_value(redis_url: str, unique: str) -> None:
    """The Redis the stores use answers PING and keeps what is written."""
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        client.set(f"{unique}:greeting", b"hello", ex=60)
        assert client.get(f"{unique}:greeting") == b"hello"
        client.delete(f"{unique}:greeting")


def test_status_reports_both_running(kafka_bootstrap: str, redis_url: str) -> None:
    """`fvc local status` sees the stack the tests run against."""
    done = _fvc("local", "status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # "external" when FVC_KAFKA_BOOTSTRAP / FVC_REDIS_URL name services fvc did not start.
    assert report["kafka"]["state"] in ("running", "external")
    assert report["redis"]["state"] in ("running", "external")


def test_taken_port_gives_one_clear_line(tmp_path: Path) -> None:
    """A port held by another program stops `up` with one line, before anything starts."""
    kafka_port, controller_port = _free_ports(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        config = StackConfig(tmp_path, kafka_port, controller_port, redis_port=taken)
        with pytest.raises(LocalStackError) as caught:
            stack.up(config, report=lambda line: None)
    message = str(caught.value)
    assert f"port {taken}" in message and "redis" in message and "\n" not in message
    assert not (tmp_path / "redis" / "redis.pid").exists()  # nothing was started


@pytest.mark.slow
def test_second_stack_up_status_down(tmp_path: Path) -> None:
    """A whole life cycle on a second stack: up, up again, down, status says stopped."""
    found = bool(shutil.which("java") and shutil.which("mvn"))
    require(found, "java and mvn are needed to start a Kafka broker")
    kafka_port, controller_port, redis_port = _free_ports(3)
    config = StackConfig(tmp_path / "state", kafka_port, controller_port, redis_port, timeout=120)
    try:
        running = stack.up(config, report=lambda line: None)
        assert [(s.name, s.state) for s in running] == [("kafka", "running"), ("redis", "running")]
        assert running[0].address == f"127.0.0.1:{kafka_port}"
        again = stack.up(config, report=lambda line: None)  # idempotent: same processes
        assert [s.pid for s in again] == [s.pid for s in running]
    finally:
        stopped = stack.down(config, report=lambda line: None)
    assert sorted(stopped) == ["kafka", "redis"]
    after = stack.status(config)
    assert [(s.name, s.state, s.pid) for s in after] == [
        ("kafka", "stopped", None),
        ("redis", "stopped", None),
    ]
    assert not any(stack.services(config)[i].pid_path.exists() for i in (0, 1))
