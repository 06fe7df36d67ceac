"""What deciding observations a short window late could buy: recall at precision >= 0.98.

fvc decides each observation when it comes, and a wrong early decision (a stranger joined, two
young clusters merged) can never be undone: MERGE is its only repair. The offline two-pass
reference (docs/quality.md) sees the whole stream at once. This measures the ground between:
a **deferral window** of ``w`` observations in event-time order, decided together once the
window is complete, then never changed. Each window:

1. its observations are clustered among themselves by average linkage at threshold ``T``;
2. each of those window clusters joins the held cluster whose members it is most alike on
   average (mean member similarity, from the sums) when that reaches ``M``, else it is held as
   a new cluster;
3. held clusters touched by the window merge, best pair first, while their mean member
   similarity reaches ``M2`` (each merge a MERGE_EVENT, as the merge timer's are).

A window of 1 is an online rule (no deferral). The figures are the best over a grid of ``T``,
``M`` and ``M2``, tuned on the whole stream like the "tuned" columns of docs/quality.md, next
to the two-pass reference and fvc's best method measured in the same run. This is a model of
the decision rule, not the engine: it answers how long a window the product would need before
building one.

    .venv/bin/python benchmarks/deferral.py [--people 100,300] [--windows 1,16,32,64,128] [--lfw]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import LFW, TwoPass, fvc_config, run_fvc  # noqa: E402

from app.offline.modern import make_modern_scene  # noqa: E402
from app.offline.quality import bcubed  # noqa: E402
from app.offline.synth import Scene, load_scene  # noqa: E402

TARGET_P = 0.98


@dataclass(frozen=True)
class Grids:
    """The thresholds searched on one data set: ``T``, ``M``, ``M2``, and the references'."""

    join: tuple[float, ...]  # T: average linkage inside a window
    attach: tuple[float, ...]  # M: a window cluster joins a held one
    merge: tuple[float, ...]  # M2: held clusters merge
    reference: tuple[float, ...]  # fvc's and the two-pass's thresholds


MODERN_GRIDS = Grids(
    join=(0.6, 0.65, 0.7, 0.75, 0.8),
    attach=(0.45, 0.5, 0.55, 0.6, 0.65),
    merge=(0.45, 0.5, 0.55, 0.6, 0.65),
    reference=tuple(np.round(np.arange(0.5, 0.851, 0.025), 3).tolist()),
)
# LFW-dlib: same person 0.950 (sd 0.016), different people 0.841 (docs/quality.md)
LFW_GRIDS = Grids(
    join=(0.93, 0.94, 0.95, 0.96),
    attach=(0.92, 0.93, 0.94, 0.95),
    merge=(0.92, 0.93, 0.94, 0.95),
    reference=tuple(np.round(np.arange(0.935, 0.9751, 0.0025), 4).tolist()),
)
REFERENCES = ("fvc-merge-discounted", "fvc-improved")


class Held:
    """Held clusters as sums of unit vectors and counts; merged ones point to their survivor."""

    def __init__(self, dim: int) -> None:
        self.sums = np.zeros((0, dim))
        self.counts = np.zeros(0)
        self.live = np.zeros(0, dtype=bool)
        self.parent: list[int] = []

    def find(self, i: int) -> int:
        """The cluster ``i`` ended in (itself unless it was merged)."""
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def attach(self, total: np.ndarray, n: int, threshold: float) -> int:
        """Where a window cluster (sum ``total`` of ``n`` unit vectors) goes; its index."""
        if self.live.any():
            mean = (self.sums @ total) / (self.counts * n)
            mean[~self.live] = -np.inf
            best = int(np.argmax(mean))
            if mean[best] >= threshold:
                self.sums[best] += total
                self.counts[best] += n
                return best
        self.sums = np.vstack([self.sums, total])
        self.counts = np.append(self.counts, n)
        self.live = np.append(self.live, True)
        self.parent.append(len(self.parent))
        return len(self.counts) - 1

    def merge(self, touched: set[int], threshold: float) -> None:
        """Merge touched clusters with any held one, best pair first, while alike enough."""
        while touched:
            rows = np.array(sorted(i for i in touched if self.live[i]), dtype=np.int64)
            if not len(rows):
                return
            mean = (self.sums[rows] @ self.sums.T) / np.outer(self.counts[rows], self.counts)
            mean[:, ~self.live] = -np.inf
            mean[np.arange(len(rows)), rows] = -np.inf
            r, c = np.unravel_index(int(np.argmax(mean)), mean.shape)
            if mean[r, c] < threshold:
                return
            a, b = sorted((int(rows[r]), int(c)))  # the older cluster survives
            self.parent[b] = a
            self.sums[a] += self.sums[b]
            self.counts[a] += self.counts[b]
            self.live[b] = False
            touched.discard(b)
            touched.add(a)


def deferred(units: np.ndarray, order: np.ndarray, window: int, t: float, m: float,
             m2: float) -> np.ndarray:
    """Labels of the deferral-window rule (module docstring) with thresholds T, M and M2."""
    held = Held(units.shape[1])
    label = np.full(len(units), -1)
    for lo in range(0, len(order), window):
        rows = order[lo : lo + window]
        if len(rows) > 1:
            tree = linkage(pdist(units[rows], "cosine"), "average")
            local = fcluster(tree, 1.0 - t, "distance") - 1
        else:
            local = np.zeros(1, dtype=np.int64)
        touched = set()
        for c in range(int(local.max()) + 1):
            members = rows[local == c]
            target = held.attach(units[members].sum(axis=0), len(members), m)
            label[members] = target
            touched.add(target)
        held.merge(touched, m2)
    return np.array([held.find(int(i)) for i in label])


def best_recall(points: Sequence[tuple[float, float, Any]]) -> dict[str, Any] | None:
    """The point with the most recall at precision >= 0.98, or None."""
    ok = [p for p in points if p[0] >= TARGET_P]
    if not ok:
        return None
    p, r, setting = max(ok, key=lambda x: x[1])
    return {"recall": round(r, 4), "precision": round(p, 4), "setting": setting}


def window_span_s(times: np.ndarray, window: int) -> float:
    """Median event time, in seconds, that ``window`` consecutive observations span."""
    t = np.sort(times)
    if window <= 1 or window >= len(t):
        return 0.0
    return float(np.median(t[window - 1 :] - t[: len(t) - window + 1])) / 1000.0


def measure(name: str, scene: Scene, grids: Grids, windows: Sequence[int]) -> dict[str, Any]:
    """One data set: each window's best, next to the two-pass and fvc in the same run."""
    units = scene.X / np.linalg.norm(scene.X, axis=1, keepdims=True)
    order = np.argsort(scene.t, kind="stable")
    truth = scene.y.tolist()
    streams = sorted({str(s) for s in scene.s.tolist()})
    out: dict[str, Any] = {"data": name, "n": len(truth), "windows": []}
    for method in REFERENCES:
        points = []
        for t in tqdm(grids.reference, desc=method, leave=False):
            labels, _ = run_fvc(scene, fvc_config(method, t, streams))
            p, r, _ = bcubed(truth, labels)
            points.append((p, r, {"T": t}))
        out[method] = best_recall(points)
    two = TwoPass(units)
    points = []
    for t in grids.reference:
        for offset in (0.02, 0.2):
            p, r, _ = bcubed(truth, two.labels(t, offset).tolist())
            points.append((p, r, {"T": t, "offset": offset}))
    out["two-pass"] = best_recall(points)
    for window in windows:
        began = time.perf_counter()
        grid = [(t, m, m2) for t in grids.join for m in grids.attach for m2 in grids.merge]
        points = []
        for t, m, m2 in tqdm(grid, desc=f"{name}, window {window}", leave=False):
            p, r, _ = bcubed(truth, deferred(units, order, window, t, m, m2).tolist())
            points.append((p, r, {"T": t, "M": m, "M2": m2}))
        out["windows"].append({
            "window": window,
            "span_s": round(window_span_s(scene.t, window), 2),
            "best": best_recall(points),
            "seconds": round(time.perf_counter() - began, 1),
        })
    return out


def table(results: Sequence[dict[str, Any]]) -> str:
    """The figures as a markdown table (docs/quality.md takes it as it is)."""
    lines = [
        "| data | window (observations) | its median event-time span | recall at P >= 0.98 "
        "| P | T / M / M2 |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for res in results:
        for row in res["windows"]:
            best = row["best"] or {"recall": 0.0, "precision": 0.0, "setting": {}}
            s = best["setting"]
            setting = f'{s.get("T")} / {s.get("M")} / {s.get("M2")}' if s else "-"
            lines.append(f'| {res["data"]} | {row["window"]} | {row["span_s"]} s | '
                         f'{best["recall"]:.4f} | {best["precision"]:.4f} | {setting} |')
        for name, key in (("two-pass (offline)", "two-pass"),
                          ("fvc + merge timer (discounted)", "fvc-merge-discounted"),
                          ("fvc improved mode", "fvc-improved")):
            ref = res[key] or {"recall": 0.0, "precision": 0.0}
            lines.append(f'| {res["data"]} | {name} | | {ref["recall"]:.4f} | '
                         f'{ref["precision"]:.4f} | {ref.get("setting", "")} |')
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the data sets given and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", default="100,300", help="modern scenes to run (people)")
    parser.add_argument("--windows", default="1,16,32,64,128", help="window sizes to try")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lfw", action="store_true",
                        help=f"also LFW ({LFW}; file order, so windows hold few repeats)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")]
    sets = [
        (f"modern-{people}-s{args.seed}",
         make_modern_scene(int(people) * 40, seed=args.seed, identities=int(people)),
         MODERN_GRIDS)
        for people in filter(None, args.people.split(","))
    ]
    if args.lfw:
        sets.append(("lfw", load_scene(LFW), LFW_GRIDS))
    results = [measure(name, scene, grids, windows) for name, scene, grids in sets]
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
