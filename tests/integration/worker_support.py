"""A deployment of real fvc workers for integration tests: config, topics, processes, reads.

Each test gets its own topics, consumer group and Redis namespace, so tests never see each
other's data on the shared local Kafka and Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from app.config import ClusteringConfig, parse_config
from app.downstream.tail import read_events
from app.engine import Cluster, Engine, Observation
from app.kafka_client import make_consumer
from app.offline.produce import detection_keys, produce_scene
from app.offline.synth import Scene
from app.settings import Settings
from app.store import create_store

FVC = str(Path(sys.executable).with_name("fvc"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of one HTTP request (error statuses included)."""
    request = urllib.request.Request(url, method=method)  # noqa: S310 - the worker under test
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    message = f"timed out after {timeout}s waiting for {what}"
    raise AssertionError(message)


class Deployment:
    """Topics, config and environment of one test's workers."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        kafka: str,
        redis: str,
        *,
        cameras: int = 4,
        partitions: int = 8,
        clustering: dict | None = None,
        threshold: float = 0.5,
        stream: dict | None = None,
    ) -> None:
        self.tmp, self.name, self.partitions = tmp, name, partitions
        streams = [
            {
                "stream_id": f"camera_{i}",
                "topic": f"{name}.camera_{i}",
                "fv_field_selector": {"feature_vector_path": "features"},
                "reg_stream_config": {"reg_threshold": threshold},
                **(stream or {}),
            }
            for i in range(cameras)
        ]
        body = {"method": "SIMPLE_AVERAGE", **(clustering or {})}
        self.config_data = {"clustering_config": body, "input_stream_configs": streams}
        self.config_path = tmp / "config.json"
        self.write_config(self.config_data)
        self.env = {
            **os.environ,
            "FVC_KAFKA_BOOTSTRAP": kafka,
            "FVC_REDIS_URL": redis,
            "FVC_APP_ID": name,
            "FVC_NAMESPACE": name,
            "FVC_OUTPUT_TOPIC": f"{name}.out",
            "FVC_DEAD_LETTER_TOPIC": f"{name}.dlq",
            "FVC_INTERNAL_STATE_TOPIC": f"{name}.state",
            "FVC_TOPIC_PARTITIONS": str(partitions),
            "FVC_LOG_LEVEL": "INFO",
        }
        self.settings = Settings.from_env(self.env)
        self.workers: list[subprocess.Popen] = []
        self.ports: list[int] = []

    @property
    def config(self) -> ClusteringConfig:
        return parse_config(self.config_data)

    def write_config(self, data: object) -> None:
        self.config_path.write_text(json.dumps(data))

    def start_worker(self, wait: bool = True, **env: str) -> int:
        """Start one more worker; returns its web port."""
        index = len(self.workers)
        port = free_port()
        worker_env = {**self.env, "FVC_WEB_PORT": str(port),
                      "FVC_DATA_DIR": str(self.tmp / f"data-{index}"), **env}
        log = open(self.tmp / f"worker-{index}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [FVC, "worker", "--config", str(self.config_path)],
            env=worker_env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.workers.append(proc)
        self.ports.append(port)
        if wait:
            self.wait_ready(index)
        return port

    def wait_ready(self, index: int, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if self.workers[index].poll() is not None:
                message = f"worker {index} exited: {self.log(index)[-3000:]}"
                raise AssertionError(message)
            try:
                return http("GET", self.url(index, "/ready"), timeout=1)[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, f"worker {index} to be ready")

    def url(self, index: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def log(self, index: int) -> str:
        return (self.tmp / f"worker-{index}.log").read_text(errors="replace")

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        self.workers[index].send_signal(sig)
        self.workers[index].wait(timeout=60)

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def produce(self, scene: Scene, **kw: object):  # noqa: ANN201 - ProduceReport
        return produce_scene(self.settings, scene, config=self.config,
                             partitions=self.partitions, **kw)

    def events(self, timeout: float = 5.0, topic: str | None = None) -> list[dict]:
        return read_events(self.settings, topic or self.settings.output_topic, timeout=timeout)

    def dead_letters(self, timeout: float = 3.0) -> list[dict[str, str]]:
        """Headers of every dead letter so far (reason, source topic, partition, offset)."""
        consumer = make_consumer(self.settings, from_beginning=True)
        consumer.subscribe([self.settings.dead_letter_topic])
        out, idle_until = [], time.monotonic() + timeout
        try:
            while time.monotonic() < idle_until:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                idle_until = time.monotonic() + timeout
                headers = {k.removeprefix("fvc."): v.decode() for k, v in message.headers() or []}
                out.append(headers)
        finally:
            consumer.close()
        return out

    def clusters(self) -> dict[str, Cluster]:
        async def go() -> dict[str, Cluster]:
            store = create_store(self.settings.redis_url, self.name)
            await store.start()
            try:
                out: dict[str, Cluster] = {}
                async for chunk in store.load_all():
                    out.update((c.key, c) for c in chunk)
                return out
            finally:
                await store.close()

        return asyncio.run(go())

    def observations_stored(self) -> int:
        return sum(c.num_observations for c in self.clusters().values())

    def clear(self) -> None:
        async def go() -> None:
            store = create_store(self.settings.redis_url, self.name)
            await store.start()
            await store.clear()
            await store.close()

        asyncio.run(go())


def offline_engine(scene: Scene, config: ClusteringConfig) -> tuple[Engine, list]:
    """The engine run over ``scene`` in file order with the keys the producer sends."""
    streams = [str(s) for s in scene.s.tolist()]
    times = scene.t.tolist()
    keys = detection_keys(streams, times)
    tracks = [""] * len(times) if scene.k is None else [str(k) for k in scene.k.tolist()]
    observations = [
        Observation(scene.X[i], streams[i], keys[i], times[i], model_id="fvc-synthetic",
                    type="PERSON_FACE", track=tracks[i])
        for i in range(len(times))
    ]
    engine = Engine(config)
    events = []
    for start in range(0, len(observations), 256):
        events += engine.step(observations[start : start + 256]).events
    return engine, events
