"""Streaming mode: every camera record matched against the view, one match record out for each.

The camera topics are read exactly as the workers read them (same record formats, same field
selector per stream, same limits), in a consumer group of their own, so re-identification scales
like the workers: run more services with the same ``--group``. Matching starts only once the
view has caught up, so early records are not matched against a partial view. Offsets are stored
only after the batch's match records are delivered: at-least-once, like the workers' events.
A record that cannot be read is counted by reason and logged, and produces no match record.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, Producer

from app.background import Background
from app.codec.decode import decode
from app.codec.encode import pack
from app.config import ClusteringConfig
from app.downstream.reid.metrics import ReidMetrics
from app.downstream.reid.state import Answer, ReidState
from app.errors import DecodeError, FvcError
from app.kafka_client import make_consumer, make_producer, records_of
from app.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.2
FLUSH_S = 30.0


class StreamMatcher(Background):
    """Consumes the config's camera topics and writes a match record per input record."""

    stop_timeout = 30.0  # the batch in hand is finished and committed first

    def __init__(
        self, settings: Settings, config: ClusteringConfig, state: ReidState,
        metrics: ReidMetrics, view_ready: threading.Event, *, output_topic: str, group: str,
        k: int, threshold: float, start_at: str = "earliest", batch: int = 500,
    ) -> None:
        self.settings, self.config, self.state, self.metrics = settings, config, state, metrics
        self.view_ready, self.output_topic, self.group = view_ready, output_topic, group
        self.k, self.threshold, self.start_at, self.batch = k, threshold, start_at, batch
        self.streams = {s.topic: s for s in config.streams}
        self.status = "waiting for the view to catch up"
        self.failure = ""
        self._undelivered: list[str] = []
        super().__init__("fvc-reid-stream")

    def _run(self) -> None:
        try:
            self._match()
        except Exception as exc:  # noqa: BLE001 - reported by /health, which makes it restart
            log.exception("streaming re-identification failed")
            self.failure = f"{type(exc).__name__}: {exc}"
            self.status = "failed"

    def _match(self) -> None:
        while not self.view_ready.wait(POLL_S):
            if self._stop.is_set():
                return
        consumer = make_consumer(
            self.settings, self.group, from_beginning=self.start_at == "earliest",
            **{"enable.auto.offset.store": False},
        )
        producer = make_producer(self.settings)
        try:
            consumer.subscribe(sorted(self.streams))
            self.status = "matching"
            while not self._stop.is_set():
                messages = consumer.consume(self.batch, timeout=POLL_S)
                if messages:
                    self._handle(consumer, producer, messages)
                else:
                    producer.poll(0)
        finally:
            producer.flush(FLUSH_S)
            consumer.close()  # commits the offsets stored so far

    def _handle(self, consumer: Consumer, producer: Producer, messages: list) -> None:
        """Match a batch, send its records, and store its offsets once they are delivered."""
        records = records_of(messages)
        good: list[tuple[Any, np.ndarray, str]] = []
        for message in records:
            read = self._read(message)
            if read is not None:
                good.append((message, *read))
        if good:
            answers = self._identify([vector for _, vector, _ in good])
            self.metrics.count_answers("stream", answers)
            for (message, _, stream_id), answer in zip(good, answers, strict=True):
                self._send(producer, message, stream_id, answer)
        if producer.flush(FLUSH_S) > 0 or self._undelivered:
            raise FvcError(f"match records not delivered to {self.output_topic!r}: "
                           f"{(self._undelivered or ['flush timed out'])[0]}")
        for message in records:
            consumer.store_offsets(message=message)

    def _read(self, message: Any) -> tuple[np.ndarray, str] | None:
        """The record's vector and stream, or None (end of frame, or unreadable and counted)."""
        stream = self.streams[message.topic()]
        kind, stamp = message.timestamp()
        time = 0 if kind == TIMESTAMP_NOT_AVAILABLE else stamp
        try:
            observation = decode(
                message.value() or b"", self.settings.input_format, stream,
                stream_id=stream.stream_id, timestamp=time,
                max_bytes=self.settings.max_record_bytes, dimension=self.state.dimension,
            )
        except DecodeError as exc:
            self.metrics.stream_bad_records.labels(exc.reason).inc()
            log.warning("skipped %s partition %d offset %d: %s", message.topic(),
                        message.partition(), message.offset(), exc)
            return None
        if observation is None:
            return None
        self.metrics.stream_records.labels(stream.stream_id).inc()
        return observation.vector, stream.stream_id

    def _identify(self, vectors: list[np.ndarray]) -> list[Answer]:
        """Answers for a batch; one by one when dimensions differ.

        They can differ only while the view is empty, so decoding had no dimension to hold them
        to.
        """
        if len({v.shape[0] for v in vectors}) == 1:
            try:
                return self.state.identify(np.stack(vectors), self.k, self.threshold)
            except ValueError:
                pass
        return [self._identify_one(v) for v in vectors]

    def _identify_one(self, vector: np.ndarray) -> Answer:
        try:
            return self.state.identify(vector[None], self.k, self.threshold)[0]
        except ValueError:  # the first cluster arrived after decoding, with another dimension
            return Answer((), False)

    def _send(self, producer: Producer, message: Any, stream_id: str, answer: Answer) -> None:
        kind, stamp = message.timestamp()
        key = message.key()
        body = {
            "stream_id": stream_id,
            "key": (key or b"").decode("utf-8", "replace"),
            "time": None if kind == TIMESTAMP_NOT_AVAILABLE else stamp,
            **answer.to_dict(),
            "threshold": self.threshold,
            "source": {"topic": message.topic(), "partition": message.partition(),
                       "offset": message.offset()},
        }
        extra = {} if kind == TIMESTAMP_NOT_AVAILABLE else {"timestamp": stamp}
        producer.produce(self.output_topic, key=key, on_delivery=self._delivered,
                         value=pack(body, self.settings.output_format), **extra)
        producer.poll(0)

    def _delivered(self, err: Any, _message: Any) -> None:
        if err is not None:
            self._undelivered.append(str(err))
