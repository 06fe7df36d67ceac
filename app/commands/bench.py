"""``fvc bench``: end-to-end throughput and latency through the real local Kafka and Redis."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import orjson

DESCRIPTION = """\
Measure one worker end to end on this machine: Kafka and Redis are started if they are
not running (and stopped again after), a worker runs on topics of its own, and in one run:

  * the engine alone on the same vectors (the reference);
  * sustained vectors/s with msgpack and with JSON input, sent as fast as possible and
    timed until every event they caused is published;
  * produce-to-event latency p50/p95/p99 at half the msgpack rate;
  * time per vector in each stage of the worker (decode, engine incl. search, store, apply,
    publish).

Every measured vector is searched against --clusters representatives (registered first)
and updates one of them. Several --clusters values run the whole benchmark once each.
--improved runs the workers (and the engine alone) in the improved mode; --deferral-ms MS
with deferred decisions too: each window of MS event time decided at once, so latency
includes waiting for the window (compare with --improved, measured the same way). The
figures include Redis round trips per committed batch (all of the worker's store calls during
the msgpack phase, divided by its batches), and the CPU time the worker, Redis, Kafka and the
producer (this process) used in that phase: on a small machine they share the cores.
--plot DIR writes PNG charts there: the latency distribution, and throughput against
clusters when several counts were run (needs the plot extra: pip install 'fvc[plot]').
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc bench``."""
    parser = subparsers.add_parser(
        "bench", help="end-to-end throughput and latency through real Kafka and Redis",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clusters", type=int, nargs="+", default=[10_000], metavar="N",
                        help="clusters; several values run once each (default 10000)")
    parser.add_argument("--n", type=int, default=20_000, help="vectors per throughput phase")
    parser.add_argument("--dim", type=int, default=512, help="vector dimension (default 512)")
    parser.add_argument("--latency-n", type=int, default=4_000, help="vectors in latency phase")
    parser.add_argument("--seed", type=int, default=1, help="scene seed")
    parser.add_argument("--workers", type=int, default=1, help="workers in one group (default 1)")
    parser.add_argument("--ingest", choices=("faust", "bulk"),
                        default=os.environ.get("FVC_INGEST", "bulk"),
                        help="the workers' input path, FVC_INGEST (default $FVC_INGEST, else"
                             " bulk, the faster one)")
    parser.add_argument("--output-format", choices=("msgpack", "json"), default="msgpack",
                        help="the workers' event format, FVC_OUTPUT_FORMAT (default msgpack)")
    parser.add_argument("--improved", action="store_true",
                        help="run the improved mode, its merge pass every 5 s of event time")
    parser.add_argument("--deferral-ms", type=int, default=0, metavar="MS",
                        help="decide windows of MS event time at once (improved_mode."
                             "deferral_ms, docs/deferral.md; implies --improved); latency then "
                             "includes the window")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.add_argument("--plot", type=Path, metavar="DIR",
                        help="write latency.png (and throughput.png) into DIR")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Run the benchmark inside the local stack and print its figures."""
    from app.dev.bench import BenchOptions, run_bench
    from app.dev.localrun import local_stack

    if args.plot:
        from app.dev.bench_plot import pyplot

        pyplot()  # fail before the run, not after it, when matplotlib is missing
    runs, latencies = [], []
    with local_stack():
        for clusters in args.clusters:
            options = BenchOptions(clusters, args.n, args.dim, args.latency_n, args.seed,
                                   args.workers, args.ingest, args.output_format,
                                   args.improved, args.deferral_ms)
            figures, latency = run_bench(options)
            runs.append(figures)
            latencies.append(latency)
    figures = runs[0]
    if len(runs) > 1:
        figures = {**figures, "by_clusters": runs}
    if args.plot:
        from app.dev.bench_plot import write_charts

        figures["charts"] = [str(p) for p in write_charts(args.plot, runs, latencies)]
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
