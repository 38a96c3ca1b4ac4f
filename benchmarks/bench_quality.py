"""Does a network trained only on synthetic data beat the best classical RL?

    python benchmarks/bench_quality.py --model rln3d.widefield-synthetic
    python benchmarks/bench_quality.py --model rln2d.widefield-synthetic
    python benchmarks/bench_quality.py --model runs/candidate --classical-from old.json
    python benchmarks/bench_quality.py --model rln3d.widefield-synthetic --rl-consensus 800
    python benchmarks/bench_quality.py --model rln3d.widefield-synthetic --rl-refine 200

``--model`` takes anything ``deconv run`` takes (pretrained name, run directory, package).
``--classical-from`` reuses the RL sweeps of an earlier result for the same PSF, test set
and seeds (they do not depend on the network), which saves minutes per candidate on a CPU.
``--structures spheres,dots,...`` swaps the test classes, to compare the gap on classes the
network was trained on with the gap on the unseen one.

Held-out test data: synthetic samples imaged through the model's own PSF whose structure
class (ellipsoidal shells / rings) was NOT used in training, from seeds never used in
training or validation. Classical baselines get every advantage: traditional RL at its
best iteration count (chosen on the test data itself, up to 1000 iterations) and
Wiener-Butterworth RL at its best count (1-40). PSNR/SSIM follow deconv.metrics (GT
normalised by percentiles, prediction fitted affinely).

``--rl-consensus N`` scores the mean of the network and N RL iterations instead of the
network alone, ``--rl-refine N`` N RL iterations started from the network's output. Choose
N without the test images (e.g. the best count on ``--structures`` of the training classes
and another ``--seed``), or the hybrid borrows the baseline's oracle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import date
from pathlib import Path

import deconv  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import numpy as np

from deconv.exporters.sources import resolve_source
from deconv.metrics import evaluate
from deconv.normalization import network_input
from deconv.richardson_lucy import RichardsonLucy, RLConfig
from deconv.runtime.flip_averaging import flip_averaged
from deconv.runtime.predict import predict
from deconv.runtime.rl_consensus import rl_consensus
from deconv.runtime.rl_refine import fit_start
from deconv.synth import SynthConfig, simulate_pair

TEST_SEED = 987_654  # disjoint from training (seed 0 streams) and validation (+1e6)


def mean_scores(predictions, truths) -> dict[str, float]:
    scores = [evaluate(p, t) for p, t in zip(predictions, truths)]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("psnr", "ssim")}


def best_over_iterations(raws, truths, psf, config: RLConfig, counts) -> dict:
    """Mean PSNR/SSIM at each iteration count in ``counts``, and the best count (by PSNR)."""
    model = RichardsonLucy(psf, config)
    table = {
        n: mean_scores([model(raw, iterations=n).numpy() for raw in raws], truths) for n in counts
    }
    best = max(table, key=lambda n: table[n]["psnr"])
    return {"iterations": best, **table[best], "by_iterations": table}


def classical(raws, truths, psf, background: float) -> dict:
    """Raw data and both RL flavours at their best iteration counts."""
    results = {"raw": mean_scores(raws, truths)}
    results["rl"] = best_over_iterations(
        raws, truths, psf, RLConfig(background=background),
        [20, 50, 100, 200, 300, 400, 600, 800, 1000],
    )  # fmt: skip
    results["rl_wiener_butterworth"] = best_over_iterations(
        raws, truths, psf, RLConfig(background=background, back_projector="wiener-butterworth"),
        [1, 2, 3, 5, 8, 12, 20, 30, 40],
    )  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained name, run dir or package")
    parser.add_argument("--count", type=int, default=3, help="held-out samples")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--classical-from", type=Path, default=None,
                        help="reuse the raw/RL results of this earlier JSON")  # fmt: skip
    parser.add_argument("--tta", action="store_true",
                        help="flip averaging, as `deconv run --tta`")  # fmt: skip
    parser.add_argument("--rl-consensus", type=int, default=None, metavar="ITERATIONS",
                        help="score the mean of the network and RL at this count, as "
                        "`deconv run --rl-consensus`")  # fmt: skip
    parser.add_argument("--rl-refine", type=int, default=None, metavar="ITERATIONS",
                        help="score RL started from the network's output, as "
                        "`deconv run --rl-refine`")  # fmt: skip
    parser.add_argument("--seed", type=int, default=TEST_SEED,
                        help="first test seed; another one picks a hybrid's iteration count "
                        "without the test images")  # fmt: skip
    parser.add_argument("--no-match-floor", action="store_true",
                        help="percentile normalisation alone, as `deconv run "
                        "--no-match-floor`")  # fmt: skip
    parser.add_argument("--structures", default="shells",
                        help="test classes (comma list); another set than the default "
                        "shells measures the gap on classes the model did see")  # fmt: skip
    parser.add_argument("--beyond-field", choices=("nothing", "specimen"), default="nothing",
                        help="what lies past the test volumes' faces (deconv.synth): nothing "
                        "(the tables before session 47) or the specimen, whose blur reaches "
                        "into the field as in a real one")  # fmt: skip
    args = parser.parse_args()

    source = resolve_source(args.model)
    if args.no_match_floor:
        plain = source.normalization.percentiles_only()
        source = dataclasses.replace(source, normalization=plain)
    model, card, psf = source.model, source.card, source.psf.data
    shape = (64, 128, 128) if card.ndim == 3 else (256, 256)
    synth = SynthConfig(
        structures=tuple(args.structures.split(",")), beyond_field=args.beyond_field
    )
    if args.rl_consensus and args.rl_refine:
        raise SystemExit("--rl-consensus and --rl-refine score different hybrids: pick one")
    pairs = [simulate_pair(shape, psf, args.seed + i, synth) for i in range(args.count)]
    raws, truths = [p[0] for p in pairs], [p[1] for p in pairs]

    classes = "shells-only, unseen class" if synth.structures == ("shells",) else args.structures
    seeds = "" if args.seed == TEST_SEED else f" from seed {args.seed}"
    seeds += ", specimen beyond the field" if args.beyond_field == "specimen" else ""
    results = {"model": args.model, "test": f"{args.count} x {shape} {classes}{seeds}",
               "match_floor": not args.no_match_floor}  # fmt: skip
    if args.classical_from:
        earlier = json.loads(args.classical_from.read_text())
        if earlier["test"] != results["test"]:
            raise SystemExit(f"{args.classical_from} measured another test: {earlier['test']}")
        results.update({k: earlier[k] for k in ("raw", "rl", "rl_wiener_butterworth")})
    else:
        results.update(classical(raws, truths, psf, synth.background))

    def plain(x: np.ndarray) -> np.ndarray:
        return predict(model, card, x)

    network = plain
    if args.tta:  # the runtime's flip averaging, on whole volumes as (1, 1, *shape) batches
        averaged = flip_averaged(lambda b: plain(b[0, 0])[None, None], source)
        results["tta_flips"] = len(averaged.flips)

        def network(x: np.ndarray) -> np.ndarray:
            return averaged(x[None, None])[0, 0]

    outputs = [network(network_input(r, source.normalization)) for r in raws]
    if args.rl_consensus:
        results["rl_consensus_iterations"] = args.rl_consensus
        rl = RichardsonLucy(psf, RLConfig(background=synth.background))
        outputs = [
            rl_consensus(out, rl(raw, iterations=args.rl_consensus).numpy())
            for out, raw in zip(outputs, raws)
        ]
    if args.rl_refine:
        results["rl_refine_iterations"] = args.rl_refine
        rl = RichardsonLucy(psf, RLConfig(background=synth.background))
        outputs = [
            rl(raw, iterations=args.rl_refine,
               start=fit_start(out, raw, psf, synth.background)).numpy()
            for out, raw in zip(outputs, raws)
        ]  # fmt: skip
    results["network"] = mean_scores(outputs, truths)
    best_rl = max(results["rl"]["psnr"], results["rl_wiener_butterworth"]["psnr"])
    results["gain_over_best_rl_db"] = results["network"]["psnr"] - best_rl
    results["date"] = date.today().isoformat()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    print(f"| method ({results['test']}) | PSNR (dB) | SSIM |")
    print("| --- | --- | --- |")
    print(f"| raw | {results['raw']['psnr']:.2f} | {results['raw']['ssim']:.3f} |")
    for key, label in (
        ("rl", "RL traditional"),
        ("rl_wiener_butterworth", "RL Wiener-Butterworth"),
    ):
        r = results[key]
        print(f"| {label}, best at {r['iterations']} it. | {r['psnr']:.2f} | {r['ssim']:.3f} |")
    n = results["network"]
    label = args.model + (" with --tta" if args.tta else "")
    label += " with --no-match-floor" if args.no_match_floor else ""
    if args.rl_consensus:
        label += f" with --rl-consensus {args.rl_consensus}"
    if args.rl_refine:
        label += f" with --rl-refine {args.rl_refine}"
    print(f"| {label} | {n['psnr']:.2f} | {n['ssim']:.3f} |")
    print(f"gain over the best RL: {results['gain_over_best_rl_db']:+.2f} dB")


if __name__ == "__main__":
    main()
