"""``fvc produce``: send feature vectors to camera topics from a file or a synthetic scene.

This module reads the sources named on the command line into
:class:`app.offline.produce.Rows` (so each file kind is parsed in one place, and tested
without Kafka) and reports; sending is :func:`app.offline.produce.produce_scene`.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from app.codec.decode import DEFAULT_SELECTOR, Selector, decode
from app.errors import DecodeError, FvcError
from app.offline.produce import (
    DEFAULT_MODEL_ID,
    ProduceReport,
    Rows,
    as_rows,
    detection_keys,
    routes_for,
)

if TYPE_CHECKING:
    from app.config import ClusteringConfig

DEFAULT_STREAM = "camera_0"
DEFAULT_INTERVAL_MS = 100
_KEY_TIME = re.compile(r"^(\d+)_\d+$")

DESCRIPTION = """\
Send feature-vector records to camera topics, the way detectors would.

SOURCE is one of:
  scene.npz    X (vectors) and optionally t (event times, ms), s (stream ids), y (labels),
               as `fvc synth` writes
  vectors.npy  vectors only: one stream (--stream), times now + i * --interval-ms
  file.jsonl   one JSON object per line: a FeatureVectorRecord (its "features" object, or any
               top-level FeatureVector / FVCluster) with optional "stream_id", "key" and
               "timestamp" beside it, or {"stream_id", "feature": [...], "timestamp", "key"}
or --synthetic N generates a scene like `fvc synth` (--seed, --dim, --cameras).

Each record's key is its detection key "<time>_<index in frame>", its Kafka timestamp the
event time in ms; records go out in source (event-time) order. With --config each stream
goes to its configured topic, the vector at its field selector path (an FVCluster of count 1
for fv_cluster_path); without, to <stream_id>.FeatureVectorRecord.json at "features".
Missing topics are created (--partitions); existing ones are left alone. Exits non-zero if
any record was not delivered.

Kafka deletes records whose timestamps are older than the topic's retention.ms (7 days by
default) within minutes, whatever their offsets: synthetic scenes therefore start now, and an
old file replayed live needs --start-ms now.
"""

EPILOG = """\
examples:
  fvc produce --synthetic 20000 --seed 1 --rate 2000            # 4 cameras, 2000 records/s
  fvc produce scene.npz --config config/four-cameras.json --labels-out truth.npz
  fvc produce vectors.npy --stream camera_1 --format msgpack --end-of-frame
  fvc produce detections.jsonl --bootstrap kafka:9092 --limit 100
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc produce`` to the ``fvc`` parser."""
    p = subparsers.add_parser(
        "produce", help="send feature vectors (.npz/.npy/JSONL or synthetic) to camera topics",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", nargs="?", metavar="SOURCE", help=".npz, .npy or .jsonl file")
    p.add_argument("--synthetic", type=int, metavar="N", help="generate N synthetic detections")
    p.add_argument("--seed", type=int, default=0, help="--synthetic seed (default 0)")
    p.add_argument("--dim", type=int, default=512, help="--synthetic dimension (default 512)")
    p.add_argument(
        "--cameras", type=int,
        help="--synthetic cameras (default 4, named camera_0...; with --config, its streams)",
    )
    p.add_argument("--config", metavar="FILE", help="clustering config: stream -> topic, path")
    p.add_argument(
        "--stream", default=DEFAULT_STREAM, metavar="ID",
        help=f"stream of rows whose source names none (.npy, ...) (default {DEFAULT_STREAM})",
    )
    p.add_argument(
        "--interval-ms", type=int, default=DEFAULT_INTERVAL_MS, metavar="MS",
        help=f"time step where the source has no times (default {DEFAULT_INTERVAL_MS})",
    )
    p.add_argument(
        "--start-ms", metavar="MS|now",
        help="move event times so the first is at MS (epoch ms) or now, gaps kept (default: "
        "now for --synthetic, the file's own times otherwise)",
    )
    p.add_argument("--format", default="json", choices=("json", "msgpack"), help="default json")
    p.add_argument(
        "--model-id", default=DEFAULT_MODEL_ID, help=f"model_id field (default {DEFAULT_MODEL_ID})"
    )
    p.add_argument(
        "--rate", type=float, default=0.0, metavar="R",
        help="records per second (default 0: as fast as possible)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="send only the first N detections")
    p.add_argument(
        "--end-of-frame", action="store_true", help="close each frame with an end_of_frame record"
    )
    p.add_argument(
        "--partitions", type=int, metavar="P",
        help="partitions of created topics (default FVC_TOPIC_PARTITIONS, 8)",
    )
    p.add_argument(
        "--labels-out", metavar="FILE.npz",
        help="write the ground truth (y, keys, s, t, topics in send order) for later scoring",
    )
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka (default FVC_KAFKA_BOOTSTRAP)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Read the source, send it, write the labels, print one line; failures exit non-zero."""
    from tqdm import tqdm

    from app.config import load_config
    from app.kafka_client import quiet_client_logs
    from app.offline.produce import produce_scene
    from app.settings import Settings

    quiet_client_logs()
    settings = Settings.from_env(kafka_bootstrap=args.bootstrap)
    config = load_config(args.config) if args.config else None
    rows = _rows(args, config).head(args.limit).starting_at(_start_ms(args))
    bar = tqdm(total=rows.n, unit="rec", desc="producing", disable=not sys.stderr.isatty())
    with bar:
        report = produce_scene(
            settings, rows, config=config, fmt=args.format, rate=args.rate,
            end_of_frame=args.end_of_frame, model_id=args.model_id,
            partitions=args.partitions, progress=bar.update,
        )
    if args.labels_out:
        write_labels(args.labels_out, rows, config=config)
    print(summary(report))
    if report.failed:
        shown = "; ".join(report.errors[:3])
        message = f"{report.failed} of {report.sent} records were not delivered: {shown}"
        raise FvcError(message)
    return 0


def summary(report: ProduceReport) -> str:
    """One line: records, topics, seconds, records/s."""
    extra = f" (+{report.end_of_frame_records} end-of-frame)" if report.end_of_frame_records else ""
    created = f", {len(report.created_topics)} created" if report.created_topics else ""
    return (
        f"sent {report.records} records{extra} to {len(report.topics)} topic(s){created} "
        f"in {report.seconds:.2f} s, {report.records_per_second:.0f} records/s"
    )


def _start_ms(args: argparse.Namespace) -> int | None:
    """Where ``--start-ms`` puts the first record; synthetic scenes start now by default."""
    text = args.start_ms or ("now" if args.synthetic is not None else None)
    if text is None:
        return None
    if text == "now":
        return int(time.time() * 1000)
    if not text.isdigit():
        raise FvcError(f"--start-ms must be epoch milliseconds or now, got {text!r}")
    return int(text)


def _rows(args: argparse.Namespace, config: ClusteringConfig | None = None) -> Rows:
    """The rows of the source the arguments name: exactly one of SOURCE and --synthetic.

    A synthetic scene for a config has its cameras named after the config's streams.
    """
    if (args.source is None) == (args.synthetic is None):
        raise FvcError("give exactly one of SOURCE (a .npz, .npy or .jsonl file) and --synthetic N")
    if args.rate < 0 or (args.limit is not None and args.limit < 0):
        raise FvcError("--rate and --limit must not be negative")
    if args.synthetic is not None:
        streams = list(config.stream_ids) if config is not None else []
        cameras = args.cameras or len(streams) or 4
        rows = synthetic_rows(args.synthetic, seed=args.seed, dim=args.dim, cameras=cameras)
        if streams and cameras <= len(streams):
            names = {f"camera_{i}": stream for i, stream in enumerate(streams)}
            rows = replace(rows, s=np.array([names[s] for s in rows.s.tolist()]))
        return rows
    return read_rows(args.source, stream=args.stream, interval_ms=args.interval_ms)


def synthetic_rows(n: int, *, seed: int, dim: int = 512, cameras: int = 4) -> Rows:
    """Rows of ``make_scene``; its argument errors become FvcErrors."""
    from app.offline.synth import make_scene

    try:
        return as_rows(make_scene(n, seed=seed, dim=dim, cameras=cameras))
    except ValueError as exc:
        raise FvcError(str(exc)) from exc


def read_rows(
    path: str | Path,
    *,
    stream: str = DEFAULT_STREAM,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    now_ms: int | None = None,
) -> Rows:
    """Rows of a ``.npz``, ``.npy`` or JSONL file (by suffix); times default to now onwards."""
    path = Path(path)
    start = int(time.time() * 1000) if now_ms is None else now_ms
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            return _npz_rows(path, stream, start, interval_ms)
        if suffix == ".npy":
            X = _matrix(np.load(path, allow_pickle=False), path)
            return _rows_of(X, None, np.full(len(X), stream), start, interval_ms, None)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return _jsonl_rows(path, stream, start, interval_ms)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FvcError(f"cannot read {path}: {exc}") from exc
    raise FvcError(f"{path}: unknown source kind {suffix!r}: use .npz, .npy or .jsonl")


def _npz_rows(path: Path, stream: str, start: int, interval_ms: int) -> Rows:
    """X, and t / s / y / k (track ids) where present; arrays must have one entry per vector."""
    with np.load(path, allow_pickle=False) as data:
        if "X" not in data.files:
            raise FvcError(f"{path}: no X array (found {', '.join(data.files) or 'nothing'})")
        X = _matrix(data["X"], path)
        arrays = {k: data[k] for k in ("t", "s", "y", "k") if k in data.files}
    for name, array in arrays.items():
        if len(array) != len(X):
            raise FvcError(f"{path}: {name} has {len(array)} entries, X has {len(X)} rows")
    s = arrays["s"].astype(str) if "s" in arrays else np.full(len(X), stream)
    rows = _rows_of(X, arrays.get("t"), s, start, interval_ms, arrays.get("y"))
    return rows if "k" not in arrays else replace(rows, tracks=np.asarray(arrays["k"]))


def _matrix(X: np.ndarray, path: Path) -> np.ndarray:
    if X.ndim != 2 or X.shape[0] == 0:
        raise FvcError(f"{path}: expected a non-empty 2-d array of vectors, got shape {X.shape}")
    return X.astype(np.float32, copy=False)


def _rows_of(
    X: np.ndarray, t: np.ndarray | None, s: np.ndarray, start: int, interval_ms: int,
    y: np.ndarray | None,
) -> Rows:
    """Rows with computed keys; missing times count up from ``start`` by ``interval_ms``."""
    times = start + np.arange(len(X), dtype=np.int64) * interval_ms if t is None else t
    times = np.asarray(times, dtype=np.int64)
    keys = detection_keys(s.tolist(), times.tolist())
    return Rows(X, times, s.astype(str), keys, None if y is None else np.asarray(y))


def _jsonl_rows(path: Path, stream: str, start: int, interval_ms: int) -> Rows:
    """One row per line with a vector; end-of-frame lines are skipped, blank lines ignored."""
    found: list[tuple[str, str | None, int | None, np.ndarray, str, str]] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                row = _jsonl_row(line, f"{path}:{number}", stream)
                if row is not None and found and len(row[3]) != len(found[0][3]):
                    dims = f"{len(row[3])} values, the first vector has {len(found[0][3])}"
                    raise FvcError(f"{path}:{number}: feature has {dims}")
                if row is not None:
                    found.append(row)
    if not found:
        raise FvcError(f"{path}: no feature vectors found")
    streams, given, stamps, vectors, models, types = (list(col) for col in zip(*found, strict=True))
    times = [start + i * interval_ms if ms is None else ms for i, ms in enumerate(stamps)]
    keys = [k or auto for k, auto in zip(given, detection_keys(streams, times), strict=True)]
    meta = list(zip(models, types, strict=True))
    return Rows(np.stack(vectors), np.array(times, np.int64), np.array(streams), keys, None, meta)


def _jsonl_row(
    line: bytes, where: str, stream: str
) -> tuple[str, str | None, int | None, np.ndarray, str, str] | None:
    """(stream, key, time, vector, model_id, type) of one line; None for an end-of-frame."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise FvcError(f"{where}: not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise FvcError(f"{where}: expected a JSON object per line")
    try:
        observation = decode(line, "json", _selector(record))
    except DecodeError as exc:
        raise FvcError(f"{where}: {exc}") from None
    if observation is None:
        return None
    stream_id = _field(record, "stream_id", str, where) or stream
    key = _field(record, "key", str, where)
    ms = _field(record, "timestamp", int, where)
    if ms is None and key and _KEY_TIME.match(key):
        ms = int(key.split("_", 1)[0])
    if ms is not None and ms < 0:
        raise FvcError(f"{where}: timestamp {ms} is negative")
    return stream_id, key, ms, observation.vector, observation.model_id, observation.type


def _selector(record: dict) -> Selector:
    """Where a line's vector is: the line itself, else the first FeatureVector/FVCluster in it."""
    if "feature" in record:
        return Selector(())
    for name, value in record.items():
        if isinstance(value, dict) and "feature" in value:
            return Selector((name,))
        if isinstance(value, dict) and "representative_fv" in value:
            return Selector((name,), cluster=True)
    return DEFAULT_SELECTOR


def _field(record: dict, name: str, kind: type, where: str) -> object:
    value = record.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise FvcError(f"{where}: {name} must be a {kind.__name__}, got {value!r}")
    return value


def write_labels(
    path: str | Path, rows: Rows, *, config: ClusteringConfig | None = None
) -> Path:
    """Ground truth of a run in produce order: y, keys, streams, times and topics, as ``.npz``.

    With it a live run's output can be scored later: a cluster id names its first detection's
    stream and key, and every observation is found again by (stream, key).
    """
    routes = routes_for(rows.streams, config)
    y = rows.y if rows.y is not None else np.full(rows.n, -1, dtype=np.int64)
    target = Path(path)
    with open(target, "wb") as handle:
        np.savez(
            handle, y=y, keys=np.array(rows.keys, dtype=str), s=rows.s, t=rows.t,
            topics=np.array([routes[s].topic for s in rows.s.tolist()], dtype=str),
        )
    return target
