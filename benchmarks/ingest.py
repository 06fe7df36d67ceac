"""Ingest overhead: records/s a Faust agent and a librdkafka batch consumer read, doing nothing.

The two ways a worker can read camera topics (``FVC_INGEST=faust|bulk``), measured on the same
topic in the same run against the local Kafka (``fvc local up``): records of ``--size`` bytes
(2,100 is a msgpack record of a 512-d vector) are produced once, then each reader consumes all
of them in batches of ``--batch`` and does nothing else. What is left is each path's own cost
per record, which a worker pays on top of decoding, the engine and the store::

    .venv/bin/python benchmarks/ingest.py            # 60,000 records, 8 partitions
    .venv/bin/python benchmarks/ingest.py --json

The Faust reader runs as ``fvc worker`` runs its agent (``stream.take_events``, the same app
options), in a child process; the bulk reader is ``consume(n)`` as in ``app/worker/ingest.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.kafka_client import ensure_topics, make_admin, make_consumer, make_producer  # noqa: E402
from app.settings import Settings  # noqa: E402

CHILD = "--faust-child"


def produce(settings: Settings, topic: str, n: int, size: int, partitions: int) -> None:
    """``n`` records of ``size`` random bytes, spread over the partitions by key."""
    ensure_topics(settings, [topic], partitions=partitions)
    producer = make_producer(settings)
    value = os.urandom(size)
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value, key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)


def bulk_rate(settings: Settings, topic: str, n: int, batch: int) -> float:
    """Records/s of ``consume(batch)`` from the first record to the ``n``-th."""
    consumer = make_consumer(settings, from_beginning=True)
    consumer.subscribe([topic])
    seen, began = 0, None
    try:
        while seen < n:
            messages = consumer.consume(batch, timeout=0.05)
            if messages and began is None:
                began = time.perf_counter()
            seen += sum(1 for m in messages if m.error() is None)
    finally:
        consumer.close()
    return n / (time.perf_counter() - (began or time.perf_counter()))


def faust_rate(topic: str, n: int, batch: int) -> float:
    """Records/s of a Faust agent's ``take_events(batch)``, from a child process."""
    env = {**os.environ, "INGEST_TOPIC": topic, "INGEST_N": str(n), "INGEST_BATCH": str(batch)}
    done = subprocess.run(  # noqa: S603 - fixed argv: this python running this file
        [sys.executable, __file__, CHILD], env=env, capture_output=True, text=True, timeout=600,
        check=True,
    )
    # Faust routes print() through its logging, so the figure may come with a log prefix
    found = re.search(r'\{"records_per_second": [^}]*\}', done.stdout + done.stderr)
    if found is None:
        raise RuntimeError(f"the Faust reader reported nothing:\n{done.stderr[-2000:]}")
    return float(json.loads(found.group(0))["records_per_second"])


def faust_child() -> None:
    """The Faust side: an app configured like the worker's, one agent, exit when done."""
    import faust

    from agents.app import broker_urls

    topic_name, n = os.environ["INGEST_TOPIC"], int(os.environ["INGEST_N"])
    batch = int(os.environ["INGEST_BATCH"])
    settings = Settings.from_env()
    app = faust.App(
        f"fvc-ingest-bench-{uuid.uuid4().hex[:8]}", broker=broker_urls(settings),
        store="memory://", web_enabled=False, consumer_auto_offset_reset="earliest",
        stream_wait_empty=False, broker_commit_interval=1.0, autodiscover=False,
        datadir=tempfile.mkdtemp(prefix="fvc-ingest-bench-"),  # not a guessable /tmp path
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    state = {"seen": 0, "began": 0.0}

    @app.agent(topic, concurrency=1)
    async def read(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batch, within=0.05):
            state["began"] = state["began"] or time.perf_counter()
            state["seen"] += len(events)
            if state["seen"] >= n:
                rate = n / (time.perf_counter() - state["began"])
                print(json.dumps({"records_per_second": rate}), flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def main() -> None:
    """Produce the records once, time both readers on them, print; the topic is deleted after."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60_000, help="records (default 60000)")
    parser.add_argument("--size", type=int, default=2_100, help="bytes per record")
    parser.add_argument("--batch", type=int, default=512, help="records per batch")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    settings = Settings.from_env()
    topic = f"fvc-ingest-bench-{uuid.uuid4().hex[:8]}"
    print(f"[ingest] producing {args.n:,} records of {args.size} bytes to {topic}",
          file=sys.stderr)
    produce(settings, topic, args.n, args.size, args.partitions)
    try:
        faust_vps = faust_rate(topic, args.n, args.batch)
        print(f"[ingest] faust agent: {faust_vps:,.0f} records/s", file=sys.stderr)
        bulk_vps = bulk_rate(settings, topic, args.n, args.batch)
        print(f"[ingest] bulk consume: {bulk_vps:,.0f} records/s", file=sys.stderr)
    finally:
        make_admin(settings).delete_topics([topic])
    report = {
        "records": args.n, "bytes_per_record": args.size, "batch": args.batch,
        "faust_records_per_second": round(faust_vps, 1),
        "bulk_records_per_second": round(bulk_vps, 1),
        "faust_us_per_record": round(1e6 / faust_vps, 1),
        "bulk_us_per_record": round(1e6 / bulk_vps, 1),
        "bulk_to_faust_ratio": round(bulk_vps / faust_vps, 2),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>26}  {value}")


if __name__ == "__main__":
    if CHILD in sys.argv:
        faust_child()
    else:
        main()
