"""``fvc evaluate``: cluster a labelled ``.npz`` offline with the engine and print its quality."""

from __future__ import annotations

import argparse
import sys

import orjson

from app.errors import FvcError

DESCRIPTION = """\
Cluster a labelled file of vectors offline with the same engine, pipeline timers and
event time as the workers, and score the result against the labels. Rows are taken in
event-time order (time, then stream, then file order), as `fvc run` replays a recording,
so `fvc run` over the records `fvc produce` sends for the file gives the same clusters.

DATA.npz holds X (float32, n x d), y (int labels) and optionally t (event times in ms),
s (stream ids) and k (tracker track ids); `fvc synth` writes such files and
shared/data/lfw_dev.npz is one (without tracks). Track ids are used by streams that
link tracks: see --track-threshold, or track_linking in a config.
State is kept in memory unless --redis points at a Redis server.

Prints B-cubed precision, recall and F1 (per item, averaged), pairwise precision and
recall, NMI, the number of clusters, seconds and vectors per second.
"""

EPILOG = """\
examples:
  fvc synth scene.npz --n 20000 --seed 1 && fvc evaluate scene.npz
  fvc evaluate scene.npz --threshold 0.55 --json
  fvc evaluate scene.npz --threshold 0.55 --track-threshold 0.35
  fvc evaluate faces.npz --config config/four-cameras.json --realized-only
  fvc evaluate scene.npz --redis redis://127.0.0.1:6379/0 --namespace eval
  fvc evaluate scene.npz --config config/four-cameras.json --assignments out.jsonl
"""

DEFAULT_THRESHOLD = 0.5
KEYS = (
    "n", "clusters", "bcubed_precision", "bcubed_recall", "bcubed_f1",
    "pairwise_precision", "pairwise_recall", "nmi", "seconds", "vectors_per_second",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc evaluate`` to the ``fvc`` parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="cluster a labelled .npz offline and print B-cubed/pairwise/NMI quality",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", metavar="DATA.npz", help="labelled vectors: X, y[, t, s]")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--config", metavar="FILE", help="clustering config (JSON, as for workers)")
    how.add_argument(
        "--threshold", type=float, metavar="T",
        help=f"quick config: reg_threshold T for every stream in s (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--method", default="SIMPLE_AVERAGE",
        choices=("SIMPLE_AVERAGE", "EXP_AVERAGE", "USE_LAST"), help="method with --threshold",
    )
    parser.add_argument(
        "--track-threshold", type=float, metavar="T",
        help="with --threshold: link tracks (array k), joining a track's cluster at similarity T",
    )
    parser.add_argument(
        "--track-window-ms", type=int, default=5000, metavar="MS",
        help="with --track-threshold: how long a track's link holds (default 5000)",
    )
    parser.add_argument("--batch-size", type=int, default=512, help="vectors per engine batch")
    parser.add_argument(
        "--index", default="exact", choices=("exact", "ivf", "ivfpq", "hnsw"),
        help="representative index (default exact)",
    )
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "gpu"),
        help="where FAISS searches (auto: a GPU when one is present)",
    )
    parser.add_argument("--redis", metavar="URL", help="keep state in this Redis instead of memory")
    parser.add_argument(
        "--namespace", default="fvc-evaluate", help="Redis key prefix with --redis (cleared first)"
    )
    parser.add_argument(
        "--realized-only", action="store_true",
        help="score only realized clusters; items of unrealized ones count as singletons",
    )
    parser.add_argument(
        "--assignments", metavar="OUT.jsonl",
        help='write {"stream", "key", "cluster_id"} per row, in file order: each '
        "observation's cluster at the end of the run, after merges",
    )
    parser.add_argument(
        "--allowed-lateness-ms", type=int, metavar="MS",
        help="how far the watermark stays behind the newest event time, as a worker's "
        "FVC_ALLOWED_LATENESS_MS (default: that variable, else 0)",
    )
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Load, build the engine and store, run, print."""
    from app.config import ClusteringConfig, load_config
    from app.engine import Engine
    from app.index import make_index
    from app.offline.evaluate import evaluate
    from app.offline.synth import load_scene
    from app.store import MemoryStore, create_store

    try:
        scene = load_scene(args.data)
    except (OSError, ValueError, KeyError) as exc:
        message = f"cannot read {args.data}: {exc}"
        raise FvcError(message) from exc
    if args.track_threshold is not None and (args.config or scene.k is None):
        message = ("--track-threshold needs --threshold (not --config) and a DATA.npz with "
                   "track ids k (fvc synth writes them)")
        raise FvcError(message)
    if args.config:
        config = load_config(args.config)
    else:
        threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        streams = sorted({str(s) for s in scene.s.tolist()})
        tracks = None if args.track_threshold is None else {
            "track_id_path": "track_id", "track_threshold": args.track_threshold,
            "time_window_ms": args.track_window_ms,
        }
        config = ClusteringConfig.for_threshold(
            threshold, streams, method=args.method, track_linking=tracks
        )
    store = create_store(args.redis, args.namespace) if args.redis else MemoryStore()
    if args.redis:
        _clear(store)
    engine = Engine(config, make_index(args.index, args.device))
    with _progress(scene.n, enabled=not args.json) as bar:
        figures = evaluate(
            scene, config, engine, store, batch_size=args.batch_size,
            realized_only=args.realized_only, progress=bar.update,
            lateness_ms=_lateness(args.allowed_lateness_ms), assignments=args.assignments,
        )
    _print(figures, args.json)
    return 0


def _lateness(given: int | None) -> int:
    """``--allowed-lateness-ms``, else the worker setting, so both read time alike."""
    if given is not None:
        if given < 0:
            raise FvcError(f"--allowed-lateness-ms must be 0 or more, got {given}")
        return given
    from app.settings import Settings

    return Settings.from_env().allowed_lateness_ms


def _clear(store: object) -> None:
    import asyncio

    async def go() -> None:
        await store.start()
        await store.clear()
        await store.close()

    asyncio.run(go())


def _progress(total: int, enabled: bool):  # noqa: ANN202 - a tqdm context manager
    from tqdm import tqdm

    return tqdm(
        total=total, unit="vec", unit_scale=True, disable=not (enabled and sys.stderr.isatty()),
        desc="clustering",
    )


def _print(figures: dict, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps({k: figures[k] for k in KEYS}).decode())
        return
    for key in KEYS:
        value = figures[key]
        shown = f"{value:.4f}" if isinstance(value, float) and key not in ("seconds",) else value
        print(f"{key:>20}  {shown}")
