"""Score several models on one common validation set of the training classes.

    python benchmarks/compare_checkpoints.py rln3d.widefield-synthetic runs/a runs/b
    python benchmarks/compare_checkpoints.py runs/a runs/b --seed 1000 --count 4

Each training run validates on images drawn from its own ``--seed``, so the validation
figures of two runs (or of warm restarts with new seeds) are not comparable: the images
differ by more than the checkpoints do. This scores every model on the same validation
images (the loop's own ``synthetic_validation`` with ``--seed``, pick one no run used), of
the training classes only, so choosing between checkpoints with it never looks at the
held-out class that ``bench_quality.py`` measures. Models are anything ``deconv run`` takes;
the first one's PSF draws the images (all must share it), and each model gets them
normalised its own way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import deconv  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import numpy as np

from deconv.exporters.sources import resolve_source
from deconv.training.data import synthetic_validation
from deconv.training.loop import validation_scores

TRAINING_CLASSES = "spheres,dots,lines,sheets,boxes,membranes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="pretrained names, run dirs or packages")
    parser.add_argument("--seed", type=int, default=1000, help="validation seed (unused by runs)")
    parser.add_argument("--count", type=int, default=4, help="validation volumes / images")
    parser.add_argument("--structures", default=TRAINING_CLASSES, help="comma list of classes")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    sources = [resolve_source(m) for m in args.models]
    first = sources[0]
    for name, source in zip(args.models, sources):
        if source.psf is None or not np.array_equal(source.psf.data, first.psf.data):
            raise SystemExit(f"{name}: not trained for the PSF of {args.models[0]}")
    shape = (64, 128, 128) if first.card.ndim == 3 else (256, 256)
    classes = tuple(args.structures.split(","))
    drawn: dict[str, list] = {}  # the same images, normalised the way each model expects

    def pairs_for(source) -> list:
        key = source.normalization.model_dump_json()
        if key not in drawn:
            drawn[key] = synthetic_validation(
                first.psf.data, shape, source.normalization, args.seed, args.count, classes
            )
        return drawn[key]

    results = {"seed": args.seed, "count": args.count, "shape": shape, "structures": classes}
    print(f"| model ({args.count} x {shape}, seed {args.seed}) | PSNR (dB) | SSIM |")
    print("| --- | --- | --- |")
    for name, source in zip(args.models, sources):
        results[name] = scores = validation_scores(source.model, source.card, pairs_for(source))
        print(f"| {name} | {scores['psnr']:.3f} | {scores['ssim']:.4f} |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
