"""One Kafka hop's latency on the local broker: produce at a fixed rate, consume, no worker.

An event reaches ``fvc bench``'s latency listener after two such hops (camera record into the
worker, event out of it), so this is the floor under the produce-to-event latency that no
worker change can lower. Records carry their send time as the Kafka timestamp; a one-off
consumer reads them as they arrive, exactly as ``fvc bench`` reads events::

    fvc local up
    .venv/bin/python benchmarks/hop.py                 # 3 rounds of 4,000 records at 1,400/s
    .venv/bin/python benchmarks/hop.py --rate 3000 --json

Each round uses a new producer, as ``fvc bench`` does per phase, so its first records also
show the producer's start (connection, metadata, idempotent producer id).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.kafka_client import ensure_topics, make_consumer, make_producer  # noqa: E402
from app.settings import Settings  # noqa: E402

PAYLOAD = 2_100  # bytes: a msgpack record of a 512-d vector
SEGMENTS = 8


def one_round(settings: Settings, topic: str, n: int, rate: float) -> np.ndarray:
    """Latencies (ms) of ``n`` records sent at ``rate``/s, in arrival order."""
    seen: list[float] = []
    listening, stop = threading.Event(), threading.Event()

    def listen() -> None:
        consumer = make_consumer(settings)
        consumer.subscribe([topic], on_assign=lambda *_: listening.set())
        try:
            while not stop.is_set():
                message = consumer.poll(0.2)
                if message is not None and not message.error():
                    seen.append(time.time() * 1000 - message.timestamp()[1])
        finally:
            consumer.close()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    listening.wait(30)
    time.sleep(1.0)  # the listener has fetched the end of the partitions
    producer = make_producer(settings)
    value = bytes(PAYLOAD)
    began = time.monotonic()
    for i in range(n):
        ahead = began + i / rate - time.monotonic()
        if ahead > 0.002:
            producer.poll(ahead)
        producer.produce(topic, value, key=str(i).encode(), timestamp=int(time.time() * 1000))
        producer.poll(0)
    producer.flush(30)
    deadline = time.monotonic() + 10
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    listener.join(10)
    return np.asarray(seen)


def segments(latency: np.ndarray) -> list[dict[str, float]]:
    """p50 and max of each eighth of the round, in arrival order: where the slow ones sit."""
    return [{"p50": round(float(np.percentile(part, 50)), 1), "max": round(float(part.max()), 1)}
            for part in np.array_split(latency, SEGMENTS) if len(part)]


def main(argv: list[str] | None = None) -> int:
    """Time ``--rounds`` rounds through one new topic and print their latencies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4_000, help="records per round")
    parser.add_argument("--rate", type=float, default=1_400.0, help="records per second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    topic = f"hop-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic], partitions=args.partitions)
    rounds = []
    for number in range(args.rounds):
        latency = one_round(settings, topic, args.n, args.rate)
        rounds.append({
            "records": int(len(latency)),
            "latency_ms_p50": round(float(np.percentile(latency, 50)), 1),
            "latency_ms_p99": round(float(np.percentile(latency, 99)), 1),
            "by_eighth": segments(latency),
        })
        print(f"round {number + 1}: p50 {rounds[-1]['latency_ms_p50']} ms,"
              f" p99 {rounds[-1]['latency_ms_p99']} ms", file=sys.stderr)
    report = {"rate": args.rate, "records_per_round": args.n, "rounds": rounds}
    if args.json:
        print(json.dumps(report))
    else:
        for number, row in enumerate(rounds, 1):
            eighths = "  ".join(f"{s['p50']:.0f}/{s['max']:.0f}" for s in row["by_eighth"])
            print(f"round {number}: {row['records']} records, p50 {row['latency_ms_p50']} ms,"
                  f" p99 {row['latency_ms_p99']} ms; p50/max per eighth: {eighths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
