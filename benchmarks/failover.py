"""How long a killed worker's partitions sit unprocessed before another worker takes them.

Two local workers share a 4-partition camera topic that receives a steady stream; one is
SIGKILLed (it cannot leave the group politely). Every 0.1 s the store's applied offsets are
read; the figure is the longest time any partition's offset stood still after the kill while
records kept arriving. Both ingest modes, each with the given consumer session timeouts::

    fvc local up
    .venv/bin/python benchmarks/failover.py                    # FVC_GROUP_SESSION_TIMEOUT_S=10
    .venv/bin/python benchmarks/failover.py --sessions 10 45 --json

A SIGTERMed worker leaves the group at once; this measures the worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.dev.localrun import LocalRun  # noqa: E402
from app.offline.produce import produce_scene  # noqa: E402
from app.offline.synth import make_scene  # noqa: E402
from app.store import store_for  # noqa: E402

PARTITIONS = 4
RATE = 200.0  # records/s
CONFIG = {
    "clustering_config": {"method": "SIMPLE_AVERAGE"},
    "input_stream_configs": [
        {
            "stream_id": "camera_0",
            "fv_field_selector": {"feature_vector_path": "features"},
            "reg_stream_config": {"reg_threshold": 0.5},
        }
    ],
}


async def _offsets(run: LocalRun) -> dict[str, int]:
    store = store_for(run.settings)
    await store.start()
    try:
        return await store.offsets()
    finally:
        await store.close()


def one_run(ingest: str, session_s: float, workdir: Path) -> dict[str, float | str]:
    """Kill one of two workers mid-stream; the longest stall of any partition after it."""
    run = LocalRun(
        f"failover-{ingest}", workdir, json.loads(json.dumps(CONFIG)),
        FVC_INGEST=ingest, FVC_GROUP_SESSION_TIMEOUT_S=str(session_s),
        FVC_TOPIC_PARTITIONS=str(PARTITIONS),
    )
    duration = 20 + 3 * session_s
    scene = make_scene(int(RATE * duration), seed=3, dim=48, cameras=1)
    with run.workers(2):
        feeding = threading.Thread(
            target=produce_scene, args=(run.settings, scene),
            kwargs={"config": run.config, "rate": RATE, "partitions": PARTITIONS},
        )
        feeding.start()
        time.sleep(8)
        run.processes[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        moved: dict[str, float] = {}
        last = asyncio.run(_offsets(run))
        stall = 0.0
        while feeding.is_alive():
            time.sleep(0.1)
            now, offsets = time.monotonic(), asyncio.run(_offsets(run))
            for partition, offset in offsets.items():
                if offset != last.get(partition):
                    stall = max(stall, now - moved.get(partition, killed))
                    moved[partition] = now
            last = offsets
        feeding.join()
    return {"ingest": ingest, "session_s": session_s, "longest_stall_s": round(stall, 1)}


def main() -> None:
    """Print the stall per ingest mode and session timeout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=float, nargs="+", default=[10.0])
    parser.add_argument("--ingest", nargs="+", default=["faust", "bulk"])
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fvc-failover-") as work:
        for session_s in args.sessions:
            for ingest in args.ingest:
                figures = one_run(ingest, session_s, Path(work))
                if args.json:
                    print(json.dumps(figures), flush=True)
                else:
                    print(f"{ingest:6} session {session_s:5.1f} s: a killed worker's partitions "
                          f"stood still for {figures['longest_stall_s']:5.1f} s", flush=True)


if __name__ == "__main__":
    main()
