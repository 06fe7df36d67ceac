"""``fvc calibrate``: choose thresholds (and the improved mode) for a model from a labelled sample.

The work is done by :mod:`app.offline.calibrate`; this module parses arguments, prints and
writes files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.errors import FvcError

DESCRIPTION = """\
Choose the clustering settings for your embedding model from a sample of its vectors.

With labels (y), the engine clusters the sample in file order exactly as `fvc evaluate`
does, for a grid of reg_threshold values and for each family of settings: plain, the
merge timer at a few merge thresholds (with --improved off), and the improved mode
(clustering_config.improved_mode) with a few size discounts. It keeps the setting with
the most recall whose precision, extrapolated to the size the config will run at
(--expected-size), reaches --target-precision. Precision falls as more people are seen:
the labels tell how many distinct people a stream of that size will hold (few more when
the same people keep coming back), and the impurity is extrapolated in proportion to
them and to the 0.4th power of the images per person. Recall is extrapolated from the
sample's halves and quarters. The expected precision comes with a 90% range: a sample
shows only a few misplaced observations, and a count of a few is known only roughly;
calibrate says how many labelled vectors would narrow it to 0.01.
With --deferral-ms (deferred decisions, docs/deferral.md)
only the improved mode is tried, each setting deciding windows of that much event time
together, as the deployment will. One misplaced observation costs about 2/n of a
sample's precision: a sample too small to show the target at the expected size, or
able to only with no mistake at all, is reported with the number of vectors to label.

With --unlabelled, labels are ignored: each vector's nearest neighbours are other
images of the same person or strangers. Their similarities (10, 20, 40, ... neighbours,
until most are strangers) are split by a two-component mixture, and the threshold keeps
the most similar stranger out for the target share of vectors at --expected-size, with a
bootstrap interval and a confidence. It sets the plain rules only.

DATA.npz holds X (n x d vectors), y (labels), and optionally t (event times in ms,
default 250 ms apart) and s (stream ids, default camera_0), the layout `fvc synth`
writes and `fvc evaluate` reads. The config written with --out covers every stream id
of the file (or extends --config).
"""

EPILOG = """\
examples:
  fvc calibrate sample.npz --target-precision 0.98
  fvc calibrate sample.npz --expected-size 500000 --out config.json --plot curve.png
  fvc calibrate sample.npz --json | jq .config
  fvc calibrate unlabelled.npz --unlabelled --expected-size 100000
  fvc calibrate sample.npz --config config/four-cameras.json --out tuned.json
  fvc calibrate sample.npz --deferral-ms 2500 --out deferred.json
"""

JSON_KEYS = (
    "target_precision", "expected_precision", "expected_precision_range", "expected_recall",
    "at_sample_size", "at_expected_size", "reached", "sample_needed", "sample_for_band",
    "config",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc calibrate`` to the ``fvc`` parser."""
    parser = subparsers.add_parser(
        "calibrate",
        help="choose reg_threshold, merge settings and the improved mode from a sample",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", metavar="DATA.npz", help="sample vectors: X, y[, t, s]")
    parser.add_argument(
        "--target-precision", type=_fraction, default=0.98, metavar="P",
        help="B-cubed precision the config must reach at the expected size (default 0.98)",
    )
    parser.add_argument(
        "--expected-size", type=int, metavar="N",
        help="vectors the config will cluster (within one retention period); "
        "default ten times the sample",
    )
    parser.add_argument(
        "--unlabelled", action="store_true",
        help="ignore labels: estimate from nearest-neighbour similarities alone",
    )
    parser.add_argument(
        "--improved", choices=("auto", "on", "off"), default="auto",
        help="auto: use the improved mode when it gives more recall (default); on; off",
    )
    parser.add_argument(
        "--merge-interval-ms", type=int, default=5000, metavar="MS",
        help="cluster_merging.time_interval_ms of the configs tried (default 5000)",
    )
    parser.add_argument(
        "--deferral-ms", type=int, metavar="MS",
        help="decide windows of this much event time together (improved_mode.deferral_ms, "
        "docs/deferral.md): the configs tried use it, and so the improved mode; it must divide "
        "--merge-interval-ms (default: the --config's, else 0, no deferral)",
    )
    parser.add_argument(
        "--config", metavar="BASE.json",
        help="start from this config (realization, retention, topics) and set the thresholds",
    )
    parser.add_argument("--out", metavar="CONFIG.json", help="write the chosen config here")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the curve (needs matplotlib)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.set_defaults(func=handler)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        message = f"must be between 0 and 1 (exclusive), got {text}"
        raise argparse.ArgumentTypeError(message)
    return value


def handler(args: argparse.Namespace) -> int:
    """Load, calibrate (or estimate), print, write."""
    from app.offline.calibrate import load_sample

    if args.expected_size is not None and args.expected_size < 1:
        message = f"--expected-size must be a positive number of vectors, got {args.expected_size}"
        raise FvcError(message)
    sample = load_sample(args.data, labelled=not args.unlabelled)
    base = _base(args.config)
    args.deferral_ms = _deferral(args, base)
    if args.unlabelled:
        result = _unlabelled(sample, args, base)
    else:
        result = _labelled(sample, args, base)
    if args.out:
        Path(args.out).write_text(json.dumps(result["config"], indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    return 0


def _deferral(args: argparse.Namespace, base: dict[str, Any] | None) -> int:
    """The deferral window the configs tried use: the option's, else the base config's."""
    deferral = args.deferral_ms
    if deferral is None:
        mode = (base or {}).get("clustering_config", {}).get("improved_mode", {})
        deferral = int(mode.get("deferral_ms", 0)) if mode.get("enabled") else 0
    if deferral < 0 or (deferral and args.merge_interval_ms % deferral):
        message = (f"--deferral-ms must be 0 or a positive divisor of --merge-interval-ms "
                   f"({args.merge_interval_ms}), got {deferral}")
        raise FvcError(message)
    if deferral and args.improved == "off":
        message = "--deferral-ms needs the improved mode; it cannot go with --improved off"
        raise FvcError(message)
    return int(deferral)


def _base(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    from app.config import load_config

    return load_config(path).to_dict()


def _progress(args: argparse.Namespace):  # noqa: ANN202 - a callback or None
    if args.json or not sys.stderr.isatty():
        return None
    return lambda line: print(line, file=sys.stderr)


def _labelled(sample: Any, args: argparse.Namespace, base: dict[str, Any] | None) -> dict:
    from app.offline.calibrate import calibrate

    cal = calibrate(
        sample, args.target_precision, args.expected_size,
        interval_ms=args.merge_interval_ms, improved=args.improved, progress=_progress(args),
        deferral_ms=args.deferral_ms,
    )
    chosen = cal.chosen
    config = chosen.setting.config_dict(
        sample.stream_ids, interval_ms=args.merge_interval_ms, base=base
    )
    _validate(config)
    if not args.json:
        _print_labelled(cal)
    if args.plot:
        _plot_labelled(cal, args.plot)
    return {
        "target_precision": args.target_precision,
        "expected_precision": round(chosen.expected_precision, 4),
        "expected_precision_range": [round(v, 4) for v in cal.precision_range],
        "expected_recall": round(chosen.expected_recall, 4),
        "at_sample_size": _figures(cal.sample_size, chosen.precision, chosen.recall),
        "at_expected_size": _figures(
            cal.expected_size, chosen.expected_precision, chosen.expected_recall
        ),
        "reached": cal.reached,
        "sample_needed": cal.needed,
        "sample_for_band": cal.band_sample,
        "config": config,
    }


def _figures(size: int, precision: float, recall: float) -> dict[str, float | int]:
    """The chosen setting's B-cubed figures at one size: measured (sample) or extrapolated."""
    return {"vectors": size, "precision": round(precision, 4), "recall": round(recall, 4)}


def _unlabelled(sample: Any, args: argparse.Namespace, base: dict[str, Any] | None) -> dict:
    from app.offline.calibrate import Setting
    from app.offline.unlabelled import estimate_unlabelled

    estimate = estimate_unlabelled(sample, args.target_precision, args.expected_size)
    config = Setting.make("plain", estimate.threshold).config_dict(sample.stream_ids, base=base)
    _validate(config)
    if not args.json:
        print(estimate.describe())
        print(f"for {estimate.expected_size} vectors at target precision "
              f"{args.target_precision}; expected recall is unknown without labels")
    if args.plot:
        _plot_unlabelled(sample, estimate, args.plot)
    return {
        "target_precision": args.target_precision,
        "expected_precision": estimate.expected_precision,
        "expected_recall": None,
        "config": config,
        "estimate": {
            "threshold": estimate.threshold,
            "interval": list(estimate.interval),
            "confidence": estimate.confidence,
            "separation": estimate.separation,
            "neighbours": estimate.neighbours,
            "strangers_found": estimate.strangers_found,
        },
    }


def _validate(config: dict[str, Any]) -> None:
    from app.config import parse_config

    parse_config(config)  # a ConfigError here would be a bug: never write an invalid file


def _print_labelled(cal: Any) -> None:
    from app.offline.calibrate import BAND_WIDTH, RANGE_LEVEL

    chosen = cal.chosen
    family = chosen.setting.family
    rows = [p for p in cal.points if p.setting.family == family and _same_share(p, chosen)]
    print(f"sample {cal.sample_size} vectors, expected size {cal.expected_size}, "
          f"target precision {cal.target_precision}")
    seen, expected = cal.people
    if seen:
        print(f"people: {seen} in the sample, about {expected:.0f} expected at "
              f"{cal.expected_size} vectors")
    print(f"{'setting':>22} {'threshold':>9} {'P sample':>9} {'R sample':>9} "
          f"{'P expected':>10} {'R expected':>10}")
    for p in sorted(rows, key=lambda p: p.setting.threshold):
        mark = "  <- chosen" if p is chosen else ""
        print(f"{p.setting.label:>22} {p.setting.threshold:9.4f} {p.precision:9.4f} "
              f"{p.recall:9.4f} {p.expected_precision:10.4f} {p.expected_recall:10.4f}{mark}")
    if cal.reached and cal.sample_size < cal.needed:
        print(f"the sample is small: one misplaced observation costs about "
              f"{2 / cal.sample_size:.3f} of its precision, more at {cal.expected_size} vectors, "
              f"so only a setting with no mistake on the sample shows precision "
              f"{cal.target_precision} there, and recall is given away for it. Label at least "
              f"{cal.needed} vectors to choose more finely")
    elif not cal.reached and cal.sample_size < cal.needed:
        print(f"the sample is too small to tell: one misplaced observation costs about "
              f"{2 / cal.sample_size:.3f} of its precision, more at {cal.expected_size} vectors, "
              f"so no setting shows precision {cal.target_precision} there; the most precise "
              f"one is given. Label at least {cal.needed} vectors (or try --unlabelled)")
    elif not cal.reached:
        print(f"no setting reaches precision {cal.target_precision} at {cal.expected_size} "
              "vectors; the most precise one is given: use a better model or a smaller scope")
    print(f"chosen: {chosen.setting.label}, reg_threshold {chosen.setting.threshold}: expected "
          f"precision {chosen.expected_precision:.4f}, recall {chosen.expected_recall:.4f}")
    low, high = cal.precision_range
    print(f"precision at {cal.expected_size} vectors: {low:.4f}-{high:.4f} ({RANGE_LEVEL:.0%} "
          f"range): the sample shows about {cal.mistakes:.0f} misplaced "
          f"observation(s) at this setting, and a count that small is known only roughly")
    if cal.band_sample > cal.sample_size:
        print(f"a range {BAND_WIDTH} wide (a band such as [{cal.target_precision}, "
              f"{cal.target_precision + BAND_WIDTH:g}]) needs about {cal.band_sample} labelled "
              f"vectors like these, not {cal.sample_size}")


def _same_share(point: Any, chosen: Any) -> bool:
    """Whether a row has the chosen setting's discount or merge offset."""
    return bool(point.setting.share == chosen.setting.share)


def _plot_labelled(cal: Any, path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[Any]] = {}
    for p in cal.points:
        groups.setdefault(_group(p), []).append(p)
    for name, pts in groups.items():
        pts = sorted(pts, key=lambda p: p.setting.threshold)
        ts = [p.setting.threshold for p in pts]
        line, = ax.plot(ts, [p.recall for p in pts], label=f"{name}: recall")
        ax.plot(ts, [p.expected_precision for p in pts], linestyle="--", color=line.get_color(),
                label=f"{name}: precision at {cal.expected_size}")
    ax.axhline(cal.target_precision, color="grey", linewidth=0.8)
    ax.axvline(cal.chosen.setting.threshold, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel("reg_threshold")
    ax.set_ylabel("B-cubed")
    ax.set_title(f"fvc calibrate: {cal.sample_size} vectors, expected {cal.expected_size}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _group(p: Any) -> str:
    """The curve a point belongs to: its family and share of ``1 - T``."""
    if p.setting.family == "improved":
        return f"improved d={p.setting.share:.1f}(1-T)"
    if p.setting.family == "merge":
        return f"merge at T+{p.setting.share:.1f}(1-T)"
    return "plain"


def _plot_unlabelled(sample: Any, estimate: Any, path: str) -> None:
    import numpy as np

    from app.offline.neighbours import nearest_similarities

    plt = _pyplot()
    nn = nearest_similarities(sample.X, estimate.neighbours).ravel()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    label = f"similarity to the {estimate.neighbours} nearest neighbours"
    ax.hist(nn, bins=60, density=True, alpha=0.5, label=label)
    grid = np.linspace(float(nn.min()), float(nn.max()), 400)
    for name, (w, mu, sd) in (("impostor", estimate.impostor), ("genuine", estimate.genuine)):
        dens = w * np.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
        ax.plot(grid, dens, label=name)
    ax.axvline(estimate.threshold, color="black", linestyle=":", label="threshold")
    ax.axvspan(*estimate.interval, color="grey", alpha=0.2)
    ax.set_xlabel("cosine similarity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pyplot():  # noqa: ANN202 - matplotlib.pyplot
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        message = "--plot needs matplotlib: pip install matplotlib"
        raise FvcError(message) from exc
    return plt
