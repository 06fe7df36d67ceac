"""Workers join, leave and are killed again and again while records arrive: counts stay exact.

Every membership change is a rebalance; Faust seeks back to the committed offsets after each
one and may hand over again records a batch already holds. Whatever it redelivers, every
observation must be counted exactly once, and no worker may die of a rebalance. The schedule
is drawn from a seed (``FVC_TORTURE_SEED`` replays one); the failure message names it.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from worker_support import Deployment, wait_for

from app.offline.synth import make_scene

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORDS = 9000
RATE = 200  # records/s: about 45 s of arrivals
CHANGES = 12  # membership changes (each one a rebalance) while records arrive
SEED = int(os.environ.get("FVC_TORTURE_SEED", "20261204"))


def _alive(deployment: Deployment) -> list[int]:
    return [i for i, proc in enumerate(deployment.workers) if proc.poll() is None]


def _exact(deployment: Deployment) -> bool:
    """True once every record is counted; fails at once on a count above the records sent."""
    stored = deployment.observations_stored()
    assert stored <= RECORDS, f"{stored} observations stored for {RECORDS} records"
    return stored == RECORDS


@pytest.mark.parametrize("ingest", ["faust", "bulk"])
@pytest.mark.parametrize("deployment", [{"cameras": 1, "partitions": 4}], indirect=True)
def test_rebalance_torture_counts_every_record_once(deployment: Deployment, ingest: str) -> None:
    rng = random.Random(f"{SEED}-{ingest}")
    scene = make_scene(RECORDS, seed=SEED % 1000, dim=48, cameras=1)
    ended_by_us: set[int] = set()
    deployment.start_worker(FVC_INGEST=ingest)
    producing = threading.Thread(target=deployment.produce, args=(scene,), kwargs={"rate": RATE})
    producing.start()
    schedule = []
    for _ in range(CHANGES):
        time.sleep(rng.uniform(2.0, 4.5))
        alive = _alive(deployment)
        assert set(range(len(deployment.workers))) - set(alive) <= ended_by_us, (
            f"seed {SEED}: a worker exited on its own"
        )
        action = "join" if len(alive) < 2 else rng.choice(["join", "stop", "kill"])
        if len(alive) >= 3:
            action = rng.choice(["stop", "kill"])
        if action == "join":
            deployment.start_worker(wait=False, FVC_INGEST=ingest)
        else:
            victim = rng.choice(alive)
            ended_by_us.add(victim)
            deployment.kill(victim, signal.SIGTERM if action == "stop" else signal.SIGKILL)
        schedule.append(action)
    producing.join()
    if not _alive(deployment):
        deployment.start_worker(FVC_INGEST=ingest)
    wait_for(lambda: _exact(deployment), 240, f"seed {SEED}, {schedule}: every record counted")
    crashed = [
        (i, proc.returncode)
        for i, proc in enumerate(deployment.workers)
        if i not in ended_by_us and proc.poll() is not None
    ]
    assert crashed == [], f"seed {SEED}, {schedule}: workers exited on their own"
    assert len(schedule) >= 10
    assert deployment.observations_stored() == RECORDS
