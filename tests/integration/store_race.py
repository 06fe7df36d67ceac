"""Two processes racing read-modify-write increments through a store's versioned commits.

Run as ``python store_race.py URL NAMESPACE NAME KEYS INCREMENTS``: prints the commits made per
key and the conflicts met, as JSON. ``race(...)`` starts two of them and collects the reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

from app.engine.types import Cluster, ClusterId
from app.errors import VersionConflict
from app.store import Commit, create_store

ROOT = Path(__file__).resolve().parents[2]


def first(key: str) -> Cluster:
    """The cluster as it is before any increment."""
    return Cluster(id=ClusterId(0, key.split(":")[1], "race"), unit=np.zeros(4, np.float32),
                   norm=0.0, num_observations=0, realized=True, first_time=0, last_time=0,
                   streams=(), retention_ms=0, version=0, pending=0, pending_since=0)


async def barrier(store: object, namespace: str) -> None:
    """Both racers start together, however long each took to import and connect."""
    gate = "{%s}:test-gate" % namespace
    await store._redis.incr(gate)
    while int(await store._redis.get(gate)) < 2:
        await asyncio.sleep(0.005)


async def run(url: str, namespace: str, name: str, keys: int, increments: int) -> dict:
    """One racer: ``increments`` increments of random keys, retried on conflicts."""
    store = create_store(url, namespace)
    await store.start()
    await barrier(store, namespace)
    rng = random.Random(name)
    commits: dict[str, int] = {}
    conflicts = 0
    for _ in range(increments):
        key = "race:k%d" % rng.randrange(keys)
        while True:
            old = (await store.get([key])).get(key) or first(key)
            new = dataclasses.replace(old, num_observations=old.num_observations + 1,
                                      version=old.version + 1, unit=old.unit + 1)
            try:
                await store.commit(Commit(expected={key: old.version}, upserts=[new]))
                break
            except VersionConflict:
                conflicts += 1
        commits[key] = commits.get(key, 0) + 1
    await store.close()
    return {"commits": commits, "conflicts": conflicts}


def race(url: str, namespace: str, keys: int, increments: int) -> list[dict]:
    """Two racing processes on one namespace; what each reports."""
    racers = [
        subprocess.Popen(  # noqa: S603 - this interpreter running this file
            [sys.executable, __file__, url, namespace, name, str(keys), str(increments)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        for name in ("left", "right")
    ]
    reports = []
    for racer in racers:
        out, _ = racer.communicate(timeout=180)
        assert racer.returncode == 0
        reports.append(json.loads(out))
    return reports


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    url_, namespace_, name_, keys_, increments_ = sys.argv[1:6]
    report = asyncio.run(run(url_, namespace_, name_, int(keys_), int(increments_)))
    print(json.dumps(report))
