"""``fvc bench``: end-to-end throughput and latency through the real local Kafka and Redis."""

from __future__ import annotations

import argparse

import orjson

DESCRIPTION = """\
Measure one worker end to end on this machine: Kafka and Redis are started if they are
not running (and stopped again after), a worker runs on topics of its own, and in one run:

  * the engine alone on the same vectors (the reference);
  * sustained vectors/s with msgpack and with JSON input, sent as fast as possible;
  * produce-to-event latency p50/p95/p99 at half the msgpack rate;
  * time per vector in each stage of the worker (decode, engine incl. search, store, apply,
    publish).

Every measured vector is searched against --clusters representatives (registered first)
and updates one of them.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc bench``."""
    parser = subparsers.add_parser(
        "bench", help="end-to-end throughput and latency through real Kafka and Redis",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clusters", type=int, default=10_000, help="clusters (default 10000)")
    parser.add_argument("--n", type=int, default=20_000, help="vectors per throughput phase")
    parser.add_argument("--dim", type=int, default=512, help="vector dimension (default 512)")
    parser.add_argument("--latency-n", type=int, default=4_000, help="vectors in latency phase")
    parser.add_argument("--seed", type=int, default=1, help="scene seed")
    parser.add_argument("--workers", type=int, default=1, help="workers in one group (default 1)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Run the benchmark inside the local stack and print its figures."""
    from app.bench import BenchOptions, run_bench
    from app.localrun import local_stack

    options = BenchOptions(args.clusters, args.n, args.dim, args.latency_n, args.seed, args.workers)
    with local_stack():
        figures = run_bench(options)
    if args.json:
        print(orjson.dumps(figures).decode())
        return 0
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for stage, us in value.items():
                print(f"  {stage:>22}  {us}")
        else:
            print(f"{key:>26}  {value}")
    return 0
