"""What a step sends to Kafka, as outbox records stored with the step itself.

Events go to the downstream topic, bad input records to the dead-letter topic (original bytes
as the value, the reason and source position in headers), and, with ``save_internal_state``,
every cluster change to the compacted internal-state topic (an empty value is a tombstone).
With ``FVC_OUTPUT_PROFILE=uvap`` events are UVAP's records, keyed by the input record they are
about, and what fvc adds to them travels in headers (docs/uvap.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson

from app.codec.encode import (
    CLUSTER_ID_HEADER,
    COHERENCE_HEADER,
    EVENT_ID_HEADER,
    UVAP,
    encode_event,
)
from app.engine import Event, Observation, StepResult
from app.engine.rules import coherence
from app.errors import DecodeError
from app.settings import Settings
from app.store.base import OutboxRecord
from app.store.codec import encode_cluster
from app.worker.input_keys import NO_KEY, input_keys
from app.worker.internal_state import offset_key

if TYPE_CHECKING:
    from app.config import ClusteringConfig
    from app.worker.pipeline import RawRecord

EVENT_TYPE_HEADER = "fvc.event_type"


class OutboxWriter:
    """Turns a step's events, dead letters and cluster changes into outbox records.

    The clustering config says whether changes are mirrored (``save_internal_state``) and how
    to read a cluster's coherence (its method); without one, neither.
    """

    def __init__(self, settings: Settings, config: ClusteringConfig | None = None) -> None:
        self.settings = settings
        self.epoch = ""  # tags event ids of a store rebuilt by replay (Pipeline.use_generation)
        self.save_internal_state = False
        self.method: str | None = None
        if config is not None:
            self.reconfigure(config)

    def reconfigure(self, config: ClusteringConfig) -> None:
        """Follow a new clustering config from the next record on."""
        self.save_internal_state = config.save_internal_state
        self.method = config.method

    def records(
        self,
        result: StepResult,
        dead_letters: Sequence[tuple[RawRecord, DecodeError]] = (),
        offsets: Mapping[str, int] | None = None,
        observations: Sequence[Observation] = (),
    ) -> list[OutboxRecord]:
        """Every record the step must publish, in order."""
        out = [self.dead_letter(record, error) for record, error in dead_letters]
        if self.settings.assignments_topic and observations:
            out += self._assignments(result, observations)
        uvap = self.settings.output_profile == UVAP
        out += self.event_records(result.events, input_keys(result) if uvap else ())
        if self.save_internal_state:
            out += self._state_records(result, offsets or {})
        return out

    def event_records(
        self, events: Sequence[Event], keys: Sequence[bytes] = ()
    ) -> list[OutboxRecord]:
        """Events for the downstream topic, keyed by cluster id (uvap: by input record).

        The event type also travels as the header ``fvc.event_type``, so consumers (and the
        publisher's metrics) can route on it without decoding the value. ``keys`` are the uvap
        profile's, one an event (``input_keys``); without them its events have no key.
        """
        fmt, method = self.settings.output_format, self.method
        topic = self.settings.output_topic
        if self.epoch:
            events = [replace(e, event_id=f"{e.event_id}~{self.epoch}") for e in events]
        if self.settings.output_profile == UVAP:
            keys = keys or [NO_KEY] * len(events)
            return [
                OutboxRecord(e.event_id, key, encode_event(e, fmt, profile=UVAP), e.time, topic,
                             self._uvap_headers(e))
                for e, key in zip(events, keys, strict=True)
            ]
        return [
            OutboxRecord(
                e.event_id, e.key.encode(), encode_event(e, fmt, method), e.time, topic,
                ((EVENT_TYPE_HEADER, e.type.value.encode()),),
            )
            for e in events
        ]

    def _uvap_headers(self, event: Event) -> tuple[tuple[str, bytes], ...]:
        """What the default profile's record holds and UVAP's has no field for."""
        headers = [
            (EVENT_TYPE_HEADER, event.type.value.encode()),
            (EVENT_ID_HEADER, event.event_id.encode()),
        ]
        if event.key:
            headers.append((CLUSTER_ID_HEADER, event.key.encode()))
        cluster = event.cluster
        if cluster is not None and self.method is not None:
            score = coherence(self.method, cluster.norm, cluster.num_observations)
            if score is not None:
                headers.append((COHERENCE_HEADER, repr(score).encode()))
        return tuple(headers)

    def dead_letter(self, record: RawRecord, error: DecodeError) -> OutboxRecord:
        """The original record for the dead-letter topic, with why and where in headers."""
        headers = (
            ("fvc.reason", error.reason.encode()),
            ("fvc.detail", error.detail.encode()[:1000]),
            ("fvc.source.topic", record.topic.encode()),
            ("fvc.source.partition", str(record.partition).encode()),
            ("fvc.source.offset", str(record.offset).encode()),
        )
        return OutboxRecord(
            event_id=f"dead:{record.topic}:{record.partition}:{record.offset}",
            key=record.key or b"",
            value=record.value or b"",
            timestamp=record.timestamp,
            topic=self.settings.dead_letter_topic,
            headers=headers,
        )

    def _assignments(
        self, result: StepResult, observations: Sequence[Observation]
    ) -> list[OutboxRecord]:
        """Which cluster took each observation: an audit trail, and what live scoring needs."""
        topic = self.settings.assignments_topic
        out = []
        for obs, decision in zip(observations, result.decisions, strict=True):
            key = f"{obs.stream_id}:{obs.key}"
            similarity = float(decision.similarity)
            body = {
                "stream_id": obs.stream_id,
                "key": obs.key,
                "time": obs.time,
                "cluster_id": decision.cluster_key,
                "similarity": round(similarity, 6) if similarity > -2 else None,
                "created": decision.created,
            }
            value = orjson.dumps(body)
            out.append(OutboxRecord(f"assign:{key}", key.encode(), value, obs.time, topic))
        return out

    def _state_records(self, result: StepResult, offsets: Mapping[str, int]) -> list[OutboxRecord]:
        topic = self.settings.internal_state_topic
        time = result.watermark
        out = [
            OutboxRecord(
                f"state:{c.key}@{c.version}", c.key.encode(), encode_cluster(c), time, topic
            )
            for c in result.upserts
        ]
        out += [
            OutboxRecord(f"state:{key}@deleted", key.encode(), b"", time, topic)
            for key in result.deletions
        ]
        out += [
            OutboxRecord(
                f"state:offset:{p}@{o}", offset_key(p).encode(), str(o).encode(), time, topic
            )
            for p, o in offsets.items()
        ]
        return out
