"""How reliably ``fvc calibrate`` hits its target: the same check over many streams.

docs/quality.md checks calibration once per data set: ``fvc calibrate`` on the first 30% of the
stream, for the whole stream's size, then the chosen setting run on the whole stream. One run
says little about a rule whose error comes from which people happen to be in the sample. This
repeats the check over several streams of the same kind (modern scenes at several seeds, LFW in
several random orders) and reports, per stream:

* what calibrate chose, and the precision / recall it expected at the whole stream's size;
* what the whole stream gave;
* the best of calibrate's own candidates on the whole stream (most recall at precision >= the
  target): the recall a perfect choice among them would have kept;
* the verdicts of issue-style targets: whole-stream precision in [target, target + 0.01], recall
  within 0.02 of that best candidate;
* whether the whole-stream precision fell in the 90% range calibrate gave for it (how many
  misplaced observations the sample showed, ``precision_range``), and how many labelled
  vectors would have narrowed that range to 0.01 (``sample_for_band``).

::

    .venv/bin/python benchmarks/calibration.py                     # modern-100 x 7, LFW x 5
    .venv/bin/python benchmarks/calibration.py --people 300 --seeds 1,2 --lfw-orders 0 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import (  # noqa: E402
    CAL_FRACTION,
    CAL_PRECISION_BAND,
    CAL_RECALL_GAP,
    INTERVAL_MS,
    LFW,
)

from app.offline.calibrate import Sample, calibrate, measure  # noqa: E402
from app.offline.modern import make_modern_scene  # noqa: E402
from app.offline.synth import load_scene  # noqa: E402


def modern_stream(people: int, seed: int) -> tuple[str, Sample]:
    """A modern scene of ``people`` people, 40 images each on average."""
    scene = make_modern_scene(people * 40, seed=seed, identities=people)
    return f"modern-{people} seed {seed}", _sample(scene.X, scene.y, scene.t, scene.s)


def lfw_stream(order: int) -> tuple[str, Sample]:
    """LFW in the file's order (0) or a random permutation seeded by ``order``.

    The event times stay those of the file: only which face comes when changes.
    """
    scene = load_scene(LFW)
    rows = np.random.default_rng(order).permutation(scene.n) if order else np.arange(scene.n)
    name = "LFW file order" if order == 0 else f"LFW order {order}"
    return name, _sample(scene.X[rows], scene.y[rows], scene.t, scene.s[rows])


def _sample(X: np.ndarray, y: np.ndarray, t: np.ndarray, s: np.ndarray) -> Sample:
    units = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    return Sample(units, y, t, s.astype(str))


def check(name: str, whole: Sample, target: float, deferral_ms: int) -> dict[str, Any]:
    """Calibrate on the stream's first 30%, then score the choice and every candidate on it all."""
    cut = int(CAL_FRACTION * whole.n)
    began = time.perf_counter()
    cal = calibrate(whole.rows(0, cut), target, whole.n, interval_ms=INTERVAL_MS,
                    deferral_ms=deferral_ms)
    seconds = time.perf_counter() - began
    scored = [(p, *measure(whole, p.setting, INTERVAL_MS)) for p in cal.points]
    chosen = next(s for s in scored if s[0] is cal.chosen)
    good = [r for _, p, r in scored if p >= target]
    best = max(good) if good else float("nan")
    _, precision, recall = chosen
    return {
        "stream": name,
        "vectors": whole.n,
        "sample": cut,
        "chosen": f"{cal.chosen.setting.label} T={cal.chosen.setting.threshold:g}",
        "expected_precision": round(cal.chosen.expected_precision, 4),
        "expected_precision_range": [round(v, 4) for v in cal.precision_range],
        "expected_recall": round(cal.chosen.expected_recall, 4),
        "whole_precision": round(precision, 4),
        "whole_recall": round(recall, 4),
        "best_candidate_recall": round(best, 4),
        "in_band": bool(target <= precision <= target + CAL_PRECISION_BAND),
        "recall_kept": bool(recall >= best - CAL_RECALL_GAP),
        "in_range": bool(cal.precision_range[0] <= precision <= cal.precision_range[1]),
        "sample_mistakes": round(cal.mistakes),
        "sample_for_band": cal.band_sample,
        "calibrate_seconds": round(seconds, 1),
    }


def markdown(rows: Sequence[dict[str, Any]], target: float) -> str:
    """The report as a table, with the hit rates under it."""
    lines = ["| stream | chosen | expected P (90% range) / R | mistakes in the sample (labelled "
             "for a 0.01 range) | whole-stream P / R | best candidate R | P in band | R within "
             "0.02 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        low, high = r["expected_precision_range"]
        lines.append(
            f"| {r['stream']} | {r['chosen']} | {r['expected_precision']:.4f} ({low:.3f}-"
            f"{high:.3f}) / {r['expected_recall']:.4f} | {r['sample_mistakes']} "
            f"({r['sample_for_band']}) | {r['whole_precision']:.4f}"
            f"{'' if r['in_range'] else ' (out of range)'} / {r['whole_recall']:.4f}"
            f" | {r['best_candidate_recall']:.4f} | {'yes' if r['in_band'] else '**no**'} | "
            f"{'yes' if r['recall_kept'] else '**no**'} |")
    both = sum(r["in_band"] and r["recall_kept"] for r in rows)
    below = sum(r["whole_precision"] < target for r in rows)
    held = sum(r["in_range"] for r in rows)
    lines += ["", f"Both targets met on {both} of {len(rows)} streams; precision below "
              f"{target} on {below}; in calibrate's 90% range on {held}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Check every stream asked for, then print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100, help="people per modern scene")
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7",
                        help="modern scene seeds ('' for none)")
    parser.add_argument("--lfw-orders", default="0,1,2,3,4",
                        help="LFW orders: 0 is the file's, others random permutations")
    parser.add_argument("--target-precision", type=float, default=0.98)
    parser.add_argument("--deferral-ms", type=int, default=0,
                        help="calibrate for deferred decisions (--deferral-ms of fvc calibrate)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    plan = [("modern", int(s)) for s in filter(None, args.seeds.split(","))]
    if LFW.exists():
        plan += [("lfw", int(o)) for o in filter(None, args.lfw_orders.split(","))]
    elif args.lfw_orders:
        print(f"skipping LFW: {LFW} is absent", file=sys.stderr)
    rows = []
    for kind, number in tqdm(plan, desc="streams", unit="stream", file=sys.stderr):
        name, whole = modern_stream(args.people, number) if kind == "modern" else lfw_stream(
            number)
        rows.append(check(name, whole, args.target_precision, args.deferral_ms))
    if args.json:
        print(json.dumps({"target_precision": args.target_precision,
                          "deferral_ms": args.deferral_ms, "rows": rows}, indent=2))
    else:
        print(markdown(rows, args.target_precision))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
