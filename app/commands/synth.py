"""``fvc synth``: write a synthetic, labelled multi-camera scene to an ``.npz`` file.

The scene is for measuring and load-testing the clusterer without private face data; the work is
done by :mod:`app.offline.synth`, this module only parses arguments and reports.
"""

from __future__ import annotations

import argparse

import numpy as np

from app.errors import FvcError
from app.offline.modern import make_modern_scene
from app.offline.synth import Scene, make_scene, measure_cosines

MODELS = ("isotropic", "modern")
ISOTROPIC_DEFAULTS = {"intra_cosine": (0.6, 0.75), "distractors": 0.2}

DESCRIPTION = """\
Write a synthetic scene: labelled feature vectors as a camera network sees them.

The scene models people walking past cameras. Each person is a random direction
in D-dimensional space (different people are nearly orthogonal, cosine about 0);
each detection is that direction plus Gaussian noise, tuned so that two
detections of one person have a cosine drawn per person from --intra-cosine.
People come in bursts (consecutive frames on one camera, while other visits go
on at the same time), a few come back often (Zipf-distributed visits), and a
share of them (--distractors) is seen exactly once. Vectors are not unit length,
as from a real embedding model.

--model modern makes vectors that behave like FaceNet/ArcFace-style embeddings
instead (app/offline/modern.py, docs/quality.md): anisotropic identities around a
direction common to all faces (different people about 0.1 apart in cosine),
images varying along a few shared nuisance directions (pose, light, quality),
a shift per visit, 2% outliers; two images of one person about 0.65; 20 to 60
images per person (default N/40 people), no one seen only once. On such vectors
one image can look more like a stranger than like the same person, which is
what separates online from offline clustering methods.

The file holds X (float32 vectors), y (int64 identity), t (int64 event time in
ms, in order) and s (stream id camera_0 ...), the layout of
shared/data/lfw_dev.npz: cluster it and score the result against y with
`fvc evaluate OUT.npz` (B-cubed precision/recall, pairwise P/R, NMI), or send it
to camera topics with `fvc produce`. The same --seed always gives the same file.
"""

EPILOG = """\
examples:
  fvc synth scene.npz --n 50000 --seed 1         # easy scene: 512-d, 4 cameras
  fvc synth hard.npz --n 50000 --seed 1 --intra-cosine 0.55 0.65
  fvc synth faces.npz --n 4000 --seed 1 --model modern   # 100 people, FaceNet-like
  fvc evaluate scene.npz                          # cluster it, score against y
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fvc synth`` to the ``fvc`` parser."""
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic labelled multi-camera scene (.npz) for fvc evaluate / produce",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", metavar="OUT.npz", help="file to write (overwritten if present)")
    parser.add_argument(
        "--n", type=int, required=True, metavar="N", help="number of vectors (detections)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="random seed; the same seed gives the same scene (default 0)",
    )
    parser.add_argument(
        "--dim", type=int, default=512, metavar="D", help="vector dimension (default 512)"
    )
    parser.add_argument(
        "--cameras",
        type=int,
        default=4,
        metavar="C",
        help="number of cameras, streams camera_0 .. camera_{C-1} (default 4)",
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="isotropic",
        help="isotropic: random directions plus isotropic noise (default); modern: vectors "
        "that behave like FaceNet/ArcFace-style face embeddings",
    )
    parser.add_argument(
        "--identities",
        type=int,
        default=None,
        metavar="K",
        help="number of distinct people (default about N/10; N/40 with --model modern)",
    )
    parser.add_argument(
        "--intra-cosine",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="isotropic model: range of the mean cosine between two detections of one person, "
        "drawn per person (default 0.6 0.75; 0.55 0.65 makes a hard scene)",
    )
    parser.add_argument(
        "--distractors",
        type=float,
        default=None,
        metavar="F",
        help="isotropic model: fraction of the people seen exactly once (default 0.2)",
    )
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Make the scene, save it, print a one-line summary; bad arguments become an FvcError."""
    try:
        scene = _make(args)
    except ValueError as exc:
        raise FvcError(str(exc)) from exc
    try:
        path = scene.save(args.out)
    except OSError as exc:
        raise FvcError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(summary(scene, str(path)))
    return 0


def _make(args: argparse.Namespace) -> Scene:
    """The scene of the chosen model; the isotropic model's options are refused for the other."""
    common = {
        "seed": args.seed,
        "dim": args.dim,
        "cameras": args.cameras,
        "identities": args.identities,
    }
    if args.model == "modern":
        given = [key for key in ISOTROPIC_DEFAULTS if getattr(args, key) is not None]
        if given:
            flags = ", ".join("--" + key.replace("_", "-") for key in given)
            message = f"{flags}: only for --model isotropic"
            raise ValueError(message)
        return make_modern_scene(args.n, **common)
    intra = args.intra_cosine or ISOTROPIC_DEFAULTS["intra_cosine"]
    distractors = (
        ISOTROPIC_DEFAULTS["distractors"] if args.distractors is None else args.distractors
    )
    return make_scene(args.n, intra_cosine=tuple(intra), distractor_fraction=distractors, **common)


def summary(scene: Scene, path: str) -> str:
    """One line: size, people, cameras, dimension and the measured cosine separation."""
    same, diff = measure_cosines(scene.X, scene.y)
    people = np.unique(scene.y).size
    cameras = np.unique(scene.s).size
    return (
        f"{scene.n} vectors, {people} identities, {cameras} cameras, dim {scene.dim}; "
        f"mean cosine same identity {same:.3f}, different {diff:.3f} -> {path}"
    )
