"""``fvc clusters list | show | delete``: inspect the stored clusters and remove one."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import orjson

DESCRIPTION = """\
Inspect the clusters a deployment keeps in Redis (FVC_REDIS_URL, FVC_NAMESPACE), and
delete one on request, e.g. to honour a person's right to be forgotten. A deletion
emits DELETE_EVENT with reason REMOVED (published by the workers' leader) and every
worker drops the cluster from its index; it is safe while workers run.
"""

EPILOG = """\
examples:
  fvc clusters list --realized --limit 20
  fvc clusters show camera_1:1571138183912_0 --json
  fvc clusters delete camera_1:1571138183912_0
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc clusters``."""
    parser = subparsers.add_parser(
        "clusters", help="list, show and delete stored clusters",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--redis", dest="redis_url", help="Redis URL (FVC_REDIS_URL)")
    parser.add_argument("--namespace", help="deployment's key prefix (FVC_NAMESPACE)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="clusters, largest first")
    listing.add_argument("--realized", action="store_true", help="only realized clusters")
    listing.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    listing.add_argument("--json", action="store_true", help="one JSON object per cluster")
    show = actions.add_parser("show", help="one cluster in full")
    show.add_argument("cluster_id", help="cluster id, e.g. camera_1:1571138183912_0")
    show.add_argument("--json", action="store_true", help="print JSON")
    delete = actions.add_parser("delete", help="delete a cluster (DELETE_EVENT, reason REMOVED)")
    delete.add_argument("cluster_id", help="cluster id")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Open the store, run the action, close."""
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from app import operations
    from app.settings import Settings
    from app.store import store_for

    settings = Settings.from_env(redis_url=args.redis_url, namespace=args.namespace)
    store = store_for(settings)
    await store.start()
    try:
        if args.action == "list":
            clusters = await operations.all_clusters(store)
            if args.realized:
                clusters = [c for c in clusters if c.realized]
            _print_list(clusters, args.limit, args.json)
        elif args.action == "show":
            _print_one(await operations.get_cluster(store, args.cluster_id), args.json)
        else:
            now = int(time.time() * 1000)
            gone = await operations.delete_cluster(store, settings, args.cluster_id, now)
            print(f"deleted {gone.key} ({gone.num_observations} observations); "
                  "DELETE_EVENT REMOVED queued for the downstream topic")
    finally:
        await store.close()
    return 0


def _summary(c) -> dict:  # noqa: ANN001 - a Cluster
    return {
        "cluster_id": c.key, "num_observations": c.num_observations, "is_realized": c.realized,
        "streams": list(c.streams), "first_time": _iso(c.first_time),
        "last_time": _iso(c.last_time), "version": c.version,
        "retention_ms": c.retention_ms, "model_id": c.model_id, "type": c.type,
    }


def _print_list(clusters: list, limit: int, as_json: bool) -> None:
    shown = clusters[:limit]
    if as_json:
        for c in shown:
            print(orjson.dumps(_summary(c)).decode())
        return
    print(f"{len(clusters)} clusters" + (f", showing {len(shown)}" if len(shown) < len(clusters)
                                        else ""))
    print(f"  {'cluster id':<36} {'n':>6} {'realized':>8}  {'last seen':<24} streams")
    for c in shown:
        realized = "yes" if c.realized else "no"
        print(f"  {c.key:<36} {c.num_observations:>6} {realized:>8}  {_iso(c.last_time):<24} "
              f"{','.join(c.streams)}")


def _print_one(cluster, as_json: bool) -> None:  # noqa: ANN001 - a Cluster
    body = _summary(cluster) | {"representative": cluster.representative.round(6).tolist()}
    if as_json:
        print(orjson.dumps(body).decode())
        return
    for key, value in body.items():
        shown = f"[{', '.join(f'{v:.4f}' for v in value[:8])}, ...] (d={len(value)})" if (
            key == "representative") else value
        print(f"{key:>18}  {shown}")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
