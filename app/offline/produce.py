"""Send feature vectors to camera topics, as the detectors of a camera network would.

Every source (a synthetic scene, ``.npz``, ``.npy``, JSONL) becomes ``Rows`` first: vectors with
their stream, detection key and event time, in source (event-time) order. ``plan`` then turns
rows into the exact records to send, so what a run sent can be recomputed without Kafka and a
live run scored later against the labels. Reading files into rows, and the command line, are in
:mod:`app.commands.produce`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from app.codec.decode import FEATURE_PATH
from app.codec.encode import encode_observation
from app.errors import FvcError

if TYPE_CHECKING:  # kept out of import time: every `fvc` run builds this command's parser
    from confluent_kafka import Producer

    from app.config import ClusteringConfig
    from app.offline.synth import Scene
    from app.settings import Settings

DEFAULT_MODEL_ID = "fvc-synthetic"
DEFAULT_TYPE = "PERSON_FACE"
MIN_PAUSE_S = 0.005  # the pacer sleeps only when this far ahead, so records go out in bursts
POLL_EVERY = 1000  # serve delivery callbacks this often while sending
FLUSH_TIMEOUT_S = 60.0
METADATA_TIMEOUT_S = 30.0


@dataclass(frozen=True, eq=False)
class Rows:
    """Detections in send order: row i is vector ``X[i]`` on stream ``s[i]`` at ``t[i]`` ms.

    ``keys`` are detection keys (``<time>_<index in frame>``); ``y`` identity labels when the
    source has them; ``meta`` a (model_id, type) per row when the source names them;
    ``tracks`` a tracker id per row when the source has them (sent as ``track_id``).
    """

    X: np.ndarray
    t: np.ndarray
    s: np.ndarray
    keys: list[str]
    y: np.ndarray | None = None
    meta: list[tuple[str, str]] | None = None
    tracks: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of detections."""
        return len(self.keys)

    @property
    def streams(self) -> list[str]:
        """Stream ids in order of first appearance."""
        return list(dict.fromkeys(self.s.tolist()))

    def head(self, limit: int | None) -> Rows:
        """The first ``limit`` rows (all of them for None)."""
        if limit is None or limit >= self.n:
            return self
        cut = slice(0, max(0, limit))
        y = None if self.y is None else self.y[cut]
        meta = None if self.meta is None else self.meta[cut]
        tracks = None if self.tracks is None else self.tracks[cut]
        return Rows(self.X[cut], self.t[cut], self.s[cut], self.keys[cut], y, meta, tracks)

    def starting_at(self, start_ms: int | None) -> Rows:
        """The rows moved in time so the first is at ``start_ms``; gaps kept, keys follow.

        Kafka deletes records older than a topic's retention (7 days by default) within
        minutes of their arrival, so an old scene replayed live needs current event times.
        """
        if start_ms is None or self.n == 0:
            return self
        delta = int(start_ms) - int(self.t[0])
        keys = [
            f"{t + delta}{k[len(str(t)):]}" if k.startswith(f"{t}_") else k
            for k, t in zip(self.keys, self.t.tolist(), strict=True)
        ]
        return replace(self, t=self.t + delta, keys=keys)

    def tuples(self) -> list[tuple[str, str, int, np.ndarray]]:
        """(stream, key, time, vector) per row: the plain view tests compare against."""
        return [
            (str(s), k, int(t), x)
            for s, k, t, x in zip(self.s, self.keys, self.t, self.X, strict=True)
        ]


def detection_keys(streams: Sequence[str], times: Sequence[int]) -> list[str]:
    """``<time>_<index>`` per row, the index counting earlier rows of the same stream and time."""
    seen: Counter[tuple[str, int]] = Counter()
    keys = []
    for frame in zip(streams, times, strict=True):
        keys.append(f"{frame[1]}_{seen[frame]}")
        seen[frame] += 1
    return keys


def as_rows(scene: Scene | Rows) -> Rows:
    """Rows of a synthetic (or loaded) Scene, with detection keys; Rows pass through."""
    if isinstance(scene, Rows):
        return scene
    s = np.asarray(scene.s).astype(str)
    t = np.asarray(scene.t, dtype=np.int64)
    keys = detection_keys(s.tolist(), t.tolist())
    return Rows(
        np.asarray(scene.X, dtype=np.float32), t, s, keys, np.asarray(scene.y), tracks=scene.k
    )


class Route(NamedTuple):
    """Where one stream's records go: the topic, and the dot path of the vector in a record."""

    topic: str
    path: str
    cluster: bool = False


class Outgoing(NamedTuple):
    """One record to send: ``row`` is the row it carries, or -1 for an end-of-frame record."""

    topic: str
    key: str
    timestamp: int
    row: int


@dataclass
class ProduceReport:
    """What a run sent: counts, topics, time taken and delivery failures."""

    records: int = 0
    end_of_frame_records: int = 0
    topics: tuple[str, ...] = ()
    created_topics: tuple[str, ...] = ()
    seconds: float = 0.0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """Every record sent, end-of-frame records included."""
        return self.records + self.end_of_frame_records

    @property
    def records_per_second(self) -> float:
        """Throughput over the whole run, flush included."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def routes_for(streams: Sequence[str], config: ClusteringConfig | None = None) -> dict[str, Route]:
    """Each stream's Route: from the config's stream when given, else the UVAP default topic.

    A stream the config lacks is an FvcError: the workers would never read its topic.
    """
    from app.config import default_topic

    routes: dict[str, Route] = {}
    for stream in dict.fromkeys(str(s) for s in streams):
        if config is None:
            routes[stream] = Route(default_topic(stream), FEATURE_PATH)
            continue
        try:
            cfg = config.stream(stream)
        except KeyError:
            known = ", ".join(config.stream_ids)
            message = f"stream {stream!r} is not in the config (configured: {known})"
            raise FvcError(message) from None
        if cfg.fv_cluster_path:
            routes[stream] = Route(cfg.topic, cfg.fv_cluster_path, cluster=True)
        else:
            routes[stream] = Route(cfg.topic, cfg.feature_vector_path or FEATURE_PATH)
    return routes


def plan(rows: Rows, routes: dict[str, Route], *, end_of_frame: bool = False) -> Iterator[Outgoing]:
    """The records to send, in source order; with ``end_of_frame`` each frame gets a closing one.

    A frame is one stream at one time; its end-of-frame record follows its last detection and
    takes the next free index as key (``<time>_<detections in the frame>``).
    """
    streams, times = rows.s.tolist(), rows.t.tolist()
    closing = _frame_sizes_at_end(streams, times) if end_of_frame else {}
    for i, (stream, ms) in enumerate(zip(streams, times, strict=True)):
        topic = routes[stream].topic
        yield Outgoing(topic, rows.keys[i], ms, i)
        if i in closing:
            yield Outgoing(topic, f"{ms}_{closing[i]}", ms, -1)


def _frame_sizes_at_end(streams: list[str], times: list[int]) -> dict[int, int]:
    """Row index of each frame's last detection → number of detections in that frame."""
    frames = list(zip(streams, times, strict=True))
    last = {frame: i for i, frame in enumerate(frames)}  # later rows overwrite earlier ones
    sizes = Counter(frames)
    return {i: sizes[frame] for frame, i in last.items()}


def planned_records(
    scene: Scene | Rows,
    *,
    config: ClusteringConfig | None = None,
    end_of_frame: bool = False,
    limit: int | None = None,
    start_ms: int | None = None,
) -> list[tuple[str, str, int]]:
    """The exact (topic, key, timestamp) list ``produce_scene`` sends for the same arguments."""
    rows = as_rows(scene).head(limit).starting_at(start_ms)
    routes = routes_for(rows.streams, config)
    return [(o.topic, o.key, o.timestamp) for o in plan(rows, routes, end_of_frame=end_of_frame)]


class Pacer:
    """Holds a run to ``rate`` records/s by sleeping only when well ahead of the schedule.

    Record k is due at ``start + k / rate``; sleeping in one go once the run is ``MIN_PAUSE_S``
    ahead keeps the average exact without thousands of sub-millisecond sleeps, which the OS
    would round up and so make the run slower than asked.
    """

    def __init__(
        self, rate: float, clock: Callable[[], float] = time.monotonic, start: float | None = None
    ) -> None:
        self.rate, self.clock = rate, clock
        self.start = clock() if start is None else start  # when record 0 is due, clock time

    def pause(self, sent: int) -> float:
        """Seconds to wait before sending record number ``sent`` (0 when not ahead enough)."""
        if self.rate <= 0:
            return 0.0
        ahead = self.start + sent / self.rate - self.clock()
        return ahead if ahead >= MIN_PAUSE_S else 0.0


def produce_scene(
    settings: Settings,
    scene: Scene | Rows,
    *,
    config: ClusteringConfig | None = None,
    fmt: str = "json",
    rate: float = 0.0,
    limit: int | None = None,
    start_ms: int | None = None,
    end_of_frame: bool = False,
    model_id: str = DEFAULT_MODEL_ID,
    partitions: int | None = None,
    create_topics: bool = True,
    progress: Callable[[int], object] | None = None,
    send_from: float | None = None,
) -> ProduceReport:
    """Send ``scene`` (a synthetic Scene or any Rows) to its camera topics; flush; report.

    ``start_ms`` moves event times so the first record is at that time (see Rows.starting_at).
    With a ``rate``, ``send_from`` (a ``time.time()``) holds the first record until then, so
    records stamped with their planned send times leave at those times. Delivery failures are
    counted, not raised: the caller decides how to end the run.
    """
    from app.kafka_client import ensure_topics, make_producer

    rows = as_rows(scene).head(limit).starting_at(start_ms)
    routes = routes_for(rows.streams, config)
    topics = tuple(sorted({r.topic for r in routes.values()}))
    report = ProduceReport(topics=topics)
    if create_topics:
        report.created_topics = tuple(ensure_topics(settings, topics, partitions))
    producer = make_producer(settings)
    for topic in topics:  # connected and knowing every partition's leader before the clock runs:
        producer.list_topics(topic, timeout=METADATA_TIMEOUT_S)  # else the first records wait
    started = time.monotonic()
    encoded = encode_records(rows, routes, fmt, model_id, end_of_frame)
    due = None if send_from is None else time.monotonic() + send_from - time.time()
    _send_all(producer, encoded, report, Pacer(rate, start=due), progress)
    left = producer.flush(FLUSH_TIMEOUT_S)
    if left:
        report.failed += left
        report.errors.append(f"{left} record(s) still undelivered after {FLUSH_TIMEOUT_S:.0f} s")
    report.seconds = time.monotonic() - started
    return report


def encode_records(
    rows: Rows,
    routes: dict[str, Route],
    fmt: str = "json",
    model_id: str = DEFAULT_MODEL_ID,
    end_of_frame: bool = False,
) -> Iterator[tuple[Outgoing, bytes]]:
    """Each planned record with its value.

    The value is the row's vector at its stream's path, or a bare end-of-frame record.
    """
    closing = encode_observation(None, fmt=fmt, end_of_frame=True)
    for out in plan(rows, routes, end_of_frame=end_of_frame):
        if out.row < 0:
            yield out, closing
            continue
        route = routes[rows.s[out.row]]
        meta_model, meta_type = rows.meta[out.row] if rows.meta is not None else ("", "")
        yield out, encode_observation(
            rows.X[out.row], model_id=meta_model or model_id, type=meta_type or DEFAULT_TYPE,
            fmt=fmt, fv_cluster_count=1 if route.cluster else None, path=route.path,
            track_id=None if rows.tracks is None else int(rows.tracks[out.row]),
        )


def _send_all(
    producer: Producer,
    encoded: Iterator[tuple[Outgoing, bytes]],
    report: ProduceReport,
    pacer: Pacer,
    progress: Callable[[int], object] | None,
) -> None:
    """The send loop: pace, produce (waiting out a full queue), serve delivery callbacks."""
    unreported = 0

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            report.failed += 1
            if len(report.errors) < 5:
                report.errors.append(str(err))

    for n, (out, value) in enumerate(encoded):
        while wait := pacer.pause(n):
            producer.poll(wait)  # may return early after serving a callback: check again
        if n % POLL_EVERY == 0:
            producer.poll(0)
        _produce(producer, out, value, delivered)
        if out.row < 0:
            report.end_of_frame_records += 1
            continue
        report.records += 1
        unreported += 1
        if progress is not None and unreported >= 256:
            progress(unreported)
            unreported = 0
    if progress is not None and unreported:
        progress(unreported)


def _produce(producer: Producer, out: Outgoing, value: bytes, callback: Callable) -> None:
    """Produce one record; when the local queue is full, serve deliveries until it has room.

    A record the client refuses outright (too large, a bad topic name) ends the run clearly.
    """
    from confluent_kafka import KafkaException

    while True:
        try:
            producer.produce(
                out.topic, value, key=out.key.encode(), timestamp=out.timestamp,
                on_delivery=callback,
            )
            return
        except BufferError:
            producer.poll(0.1)
        except KafkaException as exc:
            message = f"cannot send {out.key} to {out.topic}: {exc.args[0].str()}"
            raise FvcError(message) from exc
