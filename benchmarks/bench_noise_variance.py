"""How much of a restoration's error is the noise's doing, and how much its bias?

    python benchmarks/bench_noise_variance.py --model rln3d.widefield-synthetic
    python benchmarks/bench_noise_variance.py --model rln3d.widefield-synthetic --rl 800

The held-out test phantoms of ``bench_quality.py`` (same seeds, same classes) are imaged
``--realizations`` times with fresh Poisson and read noise, and once without noise. For each
method the table gives the PSNR of one noisy realization (averaged over them), of the mean
of the restorations of all realizations (what the method would give if it could average the
noise away), and of the noise-free image. With K realizations, MSE(one) = bias + variance
and MSE(mean of K) = bias + variance / K, so the variance's share of one restoration's
error is (MSE(one) - MSE(mean)) * K / (K - 1) / MSE(one). A large share says the method is
limited by what it does with the noise (a better estimator could gain), a small one by what
it assumes about the object. MSE here is 10^(-PSNR / 10) per volume, after the metric's
affine fit.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import deconv  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import numpy as np
from bench_quality import TEST_SEED

from deconv.exporters.sources import resolve_source
from deconv.metrics import evaluate
from deconv.normalization import network_input
from deconv.richardson_lucy import RichardsonLucy, RLConfig
from deconv.runtime.predict import predict
from deconv.synth import SynthConfig, add_noise, draw_phantom

NOISE_SEED = 424_242  # the extra realizations' own stream, disjoint from the test seeds


def decompose(one: list[float], mean: list[float], realizations: int) -> dict[str, float]:
    """Mean PSNRs and the variance share of the MSE, from per-volume PSNRs."""
    mse_one = np.array([10 ** (-p / 10) for p in one])
    mse_mean = np.array([10 ** (-p / 10) for p in mean])
    variance = (mse_one - mse_mean) * realizations / (realizations - 1)
    return {
        "psnr_one": float(np.mean(one)),
        "psnr_mean": float(np.mean(mean)),
        "variance_share": float(np.mean(variance / mse_one)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained name, run dir or package")
    parser.add_argument("--count", type=int, default=3, help="held-out phantoms")
    parser.add_argument("--realizations", type=int, default=4, help="noise draws per phantom")
    parser.add_argument("--rl", type=int, default=None, metavar="ITERATIONS",
                        help="also decompose RL at this iteration count")  # fmt: skip
    parser.add_argument("--structures", default="shells", help="test classes (comma list)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.realizations < 2:
        raise SystemExit("--realizations must be at least 2 to separate variance from bias")

    source = resolve_source(args.model)
    psf = source.psf.data
    shape = (64, 128, 128) if source.card.ndim == 3 else (256, 256)
    synth = SynthConfig(structures=tuple(args.structures.split(",")))

    def network(x: np.ndarray) -> np.ndarray:
        return predict(source.model, source.card, network_input(x, source.normalization))

    methods = {"network": network}
    if args.rl:
        rl = RichardsonLucy(psf, RLConfig(background=synth.background))
        methods[f"rl{args.rl}"] = lambda x: rl(x, iterations=args.rl).numpy()

    scores = {name: {"one": [], "mean": [], "noise_free": []} for name in methods}
    for i in range(args.count):
        rng = np.random.default_rng(TEST_SEED + i)  # the phantom bench_quality draws
        truth, expected = draw_phantom(shape, psf, rng, synth)
        noise = np.random.default_rng([NOISE_SEED, i])
        raws = [add_noise(expected, noise, synth) for _ in range(args.realizations)]
        for name, method in methods.items():
            outputs = [method(raw) for raw in raws]
            s = scores[name]
            s["one"].append(float(np.mean([evaluate(o, truth)["psnr"] for o in outputs])))
            s["mean"].append(evaluate(np.mean(outputs, axis=0), truth)["psnr"])
            s["noise_free"].append(evaluate(method(expected.astype(np.float32)), truth)["psnr"])

    results = {
        "model": args.model,
        "test": f"{args.count} x {shape} {args.structures}, {args.realizations} noise draws",
        "date": date.today().isoformat(),
    }
    print(f"| method ({results['test']}) | one draw | mean of the draws | noise-free | "
          "variance share of the MSE |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for name, s in scores.items():
        row = decompose(s["one"], s["mean"], args.realizations)
        row["psnr_noise_free"] = float(np.mean(s["noise_free"]))
        results[name] = row
        print(f"| {name} | {row['psnr_one']:.2f} | {row['psnr_mean']:.2f} | "
              f"{row['psnr_noise_free']:.2f} | {row['variance_share']:.0%} |")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
