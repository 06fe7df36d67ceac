"""``fvc clusters list | show | duplicates | merge | delete``: inspect and tidy clusters."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime

import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from app.errors import FvcError, StoreUnavailable

DESCRIPTION = """\
Inspect the clusters a deployment keeps in Redis (FVC_REDIS_URL, FVC_NAMESPACE), find
near-duplicate identities, merge two on request, and delete one on request, e.g. to honour
a person's right to be forgotten.

Coherence is the mean cosine of a cluster's members to its representative (1 = all
alike; low values suggest two people in one cluster). It depends on the clustering
method, so it is shown when the deployment's config is given (--config or FVC_CONFIG);
USE_LAST has none. `duplicates` lists pairs of realized clusters whose representatives
are more similar than --threshold, from a kNN search of an index (never all pairs).

A merge follows the merge pass's rules: the older id survives, counts add up, and a
MERGE_EVENT naming the absorbed id goes downstream; it needs the config. A deletion emits
DELETE_EVENT with reason REMOVED. Both are published by the workers' leader, every worker
updates its index, and both are safe while workers run.
"""

EPILOG = """\
examples:
  fvc clusters list --realized --limit 20
  fvc clusters --config config/demo.json show camera_1:1571138183912_0 --json
  fvc clusters --config config/demo.json duplicates --threshold 0.9 --k 10
  fvc clusters --config config/demo.json merge camera_1:1571138183912_0 camera_2:1571138190211_3
  fvc clusters delete camera_1:1571138183912_0
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc clusters``."""
    parser = subparsers.add_parser(
        "clusters", help="list, show, find duplicates of, merge and delete stored clusters",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--redis", dest="redis_url", help="Redis URL (FVC_REDIS_URL)")
    parser.add_argument("--namespace", help="deployment's key prefix (FVC_NAMESPACE)")
    parser.add_argument("--config", help="the deployment's clustering config (FVC_CONFIG); "
                        "needed for coherence and merge")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="clusters, largest first")
    listing.add_argument("--realized", action="store_true", help="only realized clusters")
    listing.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    listing.add_argument("--json", action="store_true", help="one JSON object per cluster")
    show = actions.add_parser("show", help="one cluster in full, with its coherence")
    show.add_argument("cluster_id", help="cluster id, e.g. camera_1:1571138183912_0")
    show.add_argument("--json", action="store_true", help="print JSON")
    delete = actions.add_parser("delete", help="delete a cluster (DELETE_EVENT, reason REMOVED)")
    delete.add_argument("cluster_id", help="cluster id")
    dupes = actions.add_parser("duplicates", help="pairs of realized clusters more similar "
                               "than a threshold (near-duplicate identities)")
    dupes.add_argument("--threshold", type=float, required=True,
                       help="list pairs whose representatives' cosine is above this")
    dupes.add_argument("--k", type=int, default=10,
                       help="neighbours searched per cluster (default 10)")
    dupes.add_argument("--json", action="store_true", help="one JSON object per pair")
    merge = actions.add_parser("merge", help="merge two clusters (MERGE_EVENT); the older "
                               "id survives")
    merge.add_argument("cluster_a", help="cluster id")
    merge.add_argument("cluster_b", help="cluster id")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Open the store, run the action, close."""
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from app.config import load_config
    from app.settings import Settings
    from app.store import store_for

    settings = Settings.from_env(redis_url=args.redis_url, namespace=args.namespace)
    config_path = args.config or settings.config_path
    config = None
    if config_path and args.action == "delete":
        config = _config_for_delete(config_path)
    elif config_path:  # a merge's event follows the workers' emission rules
        config = load_config(config_path).for_output_profile(settings.output_profile)
    store = store_for(settings)
    # A Redis outage (a restart, a failover) is waited out as a worker waits it out.
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(StoreUnavailable),
        stop=stop_after_delay(settings.store_outage_s),
        wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.2),
        before_sleep=_say_waiting,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                await store.start()
                await _act(args, store, settings, config)
    finally:
        await store.close()
    return 0


async def _act(args: argparse.Namespace, store, settings, config) -> None:  # noqa: ANN001
    """Run the asked action against the started store."""
    from app.worker import clusters as operations

    method = config.method if config else None
    if args.action == "list":
        clusters = await operations.all_clusters(store)
        if args.realized:
            clusters = [c for c in clusters if c.realized]
        _print_list(clusters, method, args.limit, args.json)
    elif args.action == "show":
        _print_one(await operations.get_cluster(store, args.cluster_id), method, args.json)
    elif args.action == "duplicates":
        pairs = await operations.near_duplicates(store, settings, args.threshold, args.k)
        _print_pairs(pairs, method, args.threshold, args.json)
    elif args.action == "merge":
        if config is None:
            message = ("merge needs the deployment's clustering config (method and "
                       "realization rules): pass --config FILE or set FVC_CONFIG")
            raise FvcError(message)
        result = await operations.merge_clusters(
            store, settings, config, args.cluster_a, args.cluster_b)
        _print_merge(result, method)
    else:
        now = int(time.time() * 1000)
        gone = await operations.delete_cluster(
            store, settings, args.cluster_id, now, config)
        print(f"deleted {gone.key} ({gone.num_observations} observations); "
              "DELETE_EVENT REMOVED queued for the downstream topic")


def _say_waiting(state: RetryCallState) -> None:
    """One line on stderr per wait, so a user knows why nothing happens yet."""
    error = state.outcome.exception() if state.outcome else None
    print(f"store unavailable, retrying in {state.upcoming_sleep:.1f}s: {error}", file=sys.stderr)


def _coherence(c, method: str | None) -> float | None:  # noqa: ANN001 - a Cluster
    """The cluster's coherence, rounded; None when the method is unknown or has none."""
    from app.engine.rules import coherence

    value = None if method is None else coherence(method, c.norm, c.num_observations)
    return None if value is None else round(value, 6)


def _coherence_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _config_for_delete(path: str):  # noqa: ANN202 - a ClusteringConfig or None
    """The config for a deletion's internal-state tombstone, or None when it cannot be read.

    A deletion (a right to be forgotten) goes ahead without the tombstone rather than fail.
    """
    from app.config import load_config

    try:
        return load_config(path)
    except FvcError as exc:
        print(f"fvc clusters delete: warning: config {path} unreadable ({exc}); deleting "
              "without a tombstone on the internal-state topic", file=sys.stderr)
        return None


def _summary(c, method: str | None) -> dict:  # noqa: ANN001 - a Cluster
    return {
        "cluster_id": c.key, "num_observations": c.num_observations, "is_realized": c.realized,
        "coherence": _coherence(c, method),
        "streams": list(c.streams), "first_time": _iso(c.first_time),
        "last_time": _iso(c.last_time), "version": c.version,
        "retention_ms": c.retention_ms, "model_id": c.model_id, "type": c.type,
    }


def _print_list(clusters: list, method: str | None, limit: int, as_json: bool) -> None:
    shown = clusters[:limit]
    if as_json:
        for c in shown:
            print(orjson.dumps(_summary(c, method)).decode())
        return
    print(f"{len(clusters)} clusters" + (f", showing {len(shown)}" if len(shown) < len(clusters)
                                        else ""))
    print(f"  {'cluster id':<36} {'n':>6} {'realized':>8} {'coh.':>6}  {'last seen':<24} streams")
    for c in shown:
        realized = "yes" if c.realized else "no"
        coh = _coherence_text(_coherence(c, method))
        print(f"  {c.key:<36} {c.num_observations:>6} {realized:>8} {coh:>6}  "
              f"{_iso(c.last_time):<24} {','.join(c.streams)}")


def _print_one(cluster, method: str | None, as_json: bool) -> None:  # noqa: ANN001 - a Cluster
    body = _summary(cluster, method) | {
        "representative": cluster.representative.round(6).tolist()}
    if as_json:
        print(orjson.dumps(body).decode())
        return
    for key, value in body.items():
        shown = value
        if key == "representative":
            shown = f"[{', '.join(f'{v:.4f}' for v in value[:8])}, ...] (d={len(value)})"
        elif key == "coherence" and value is None:
            shown = ("none: USE_LAST keeps no members" if method else
                     "unknown: it depends on the method; pass --config or set FVC_CONFIG")
        print(f"{key:>18}  {shown}")


def _print_pairs(pairs: list, method: str | None, threshold: float, as_json: bool) -> None:
    if as_json:
        for sim, older, younger in pairs:
            members = [{"cluster_id": c.key, "num_observations": c.num_observations,
                        "coherence": _coherence(c, method)} for c in (older, younger)]
            print(orjson.dumps({"similarity": round(sim, 6), "clusters": members}).decode())
        return
    plural = "" if len(pairs) == 1 else "s"
    print(f"{len(pairs)} pair{plural} of realized clusters more similar than {threshold}")
    if not pairs:
        return
    print(f"  {'similarity':>10}  {'older (kept by a merge)':<36} {'n':>6} {'coh.':>6}  "
          f"{'younger':<36} {'n':>6} {'coh.':>6}")
    for sim, older, younger in pairs:
        cells = "  ".join(f"{c.key:<36} {c.num_observations:>6} "
                          f"{_coherence_text(_coherence(c, method)):>6}" for c in (older, younger))
        print(f"  {sim:>10.4f}  {cells}")
    print("merge a pair with: fvc clusters merge OLDER YOUNGER")


def _print_merge(result, method: str | None) -> None:  # noqa: ANN001 - a StepResult
    ((absorbed, survivor),) = result.merged
    kept = result.upserts[0] if result.upserts else None
    line = f"merged {absorbed} into {survivor}"
    if kept is not None:
        line += (f" ({kept.num_observations} observations, coherence "
                 f"{_coherence_text(_coherence(kept, method))})")
    kinds = [e.type.value for e in result.events]
    if "MERGE_EVENT" in kinds:
        line += "; MERGE_EVENT queued for the downstream topic"
    else:
        line += "; no event: consumers had seen neither cluster"
    if kept is None:
        line += "; the merged cluster realized and left (realized_cluster_action REMOVE)"
    print(line)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
