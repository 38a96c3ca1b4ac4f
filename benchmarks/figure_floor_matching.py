"""A picture of what floor matching does to a sparse sample (README, BENCHMARKS session 37).

    python benchmarks/figure_floor_matching.py [--model rln2d.widefield-synthetic]

One held-out image of dots alone (the first test seed of ``bench_quality.py --structures
dots``): raw, RL at its best count on that test set (50), the network on its percentile
normalisation alone and the network with floor matching: the error of each on the central
quarter, titled with its PSNR on the whole image, and the profiles through the brightest dot
away from the edges.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import deconv  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import numpy as np
import scipy.ndimage as ndi
from bench_quality import TEST_SEED

from deconv.exporters.sources import resolve_source
from deconv.figures import pyplot, save_png
from deconv.metrics import evaluate
from deconv.normalization import network_input
from deconv.richardson_lucy import RichardsonLucy, RLConfig
from deconv.runtime.predict import predict
from deconv.synth import SynthConfig, simulate_pair

DEFAULT_OUTPUT = Path(__file__).parent / "results" / "floor_matching_2d_dots.png"
RL_ITERATIONS = 50  # RL's best count on the 2D dots test set (results/quality_rln2d_dots.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rln2d.widefield-synthetic")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    source = resolve_source(args.model)
    synth = SynthConfig(structures=("dots",))
    raw, truth = simulate_pair((256, 256), source.psf.data, TEST_SEED, synth)
    plain = source.normalization.percentiles_only()
    rl = RichardsonLucy(source.psf.data, RLConfig(background=synth.background))
    plain_input = network_input(raw, plain)
    matched_input = network_input(raw, source.normalization)
    results = {
        "raw": raw,
        f"RL, {RL_ITERATIONS} iterations": rl(raw, iterations=RL_ITERATIONS).numpy(),
        "network, percentiles alone": predict(source.model, source.card, plain_input),
        "network, floor matching": predict(source.model, source.card, matched_input),
    }
    results["truth"] = truth
    print(draw(results, truth, args.output, args.model))


def draw(results: dict, truth: np.ndarray, path: Path, model: str) -> Path:
    """Where each result errs (one contrast for all) and the profile through the brightest
    inner dot, each result fitted to the truth as the PSNR metric fits it."""
    plt = pyplot()
    half = 12
    smooth = ndi.gaussian_filter(truth, 2)
    interior = np.zeros_like(smooth)  # a dot the zoom shows whole
    interior[half:-half, half:-half] = smooth[half:-half, half:-half]
    y, x = np.unravel_index(np.argmax(interior), truth.shape)
    cols = slice(x - half, x + half)  # inside: the interior mask keeps x half from the edges
    fitted = {name: fit_to(image, truth) for name, image in results.items()}
    errors = {n: np.abs(fitted[n] - truth) for n in fitted if n not in ("raw", "truth")}
    quarter = (slice(64, 192), slice(64, 192))
    emax = max(float(np.percentile(e[quarter], 99.9)) for e in errors.values())
    fig, axes = plt.subplots(1, len(errors) + 1, figsize=(3.4 * (len(errors) + 1), 3.6))
    for ax, (name, error) in zip(axes, errors.items()):
        psnr = evaluate(results[name], truth)["psnr"]
        ax.imshow(error[quarter], cmap="magma", vmin=0, vmax=emax, interpolation="nearest")
        ax.set_title(f"{name}: {psnr:.1f} dB\n|error|, central quarter, one contrast", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    profile = axes[-1]
    columns = np.arange(cols.start, cols.stop)
    for name, image in fitted.items():
        style = {"color": "black", "lw": 2} if name == "truth" else {"lw": 1.2}
        if name != "raw":
            profile.plot(columns - x, image[y, cols], label=name, **style)
    profile.set_xlabel("pixels from the dot's centre", fontsize=8)
    profile.set_title("profile through the dot", fontsize=9)
    profile.legend(fontsize=6)
    fig.suptitle(f"{model}: a sparse image of dots (held out)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def fit_to(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``a * image + b`` closest to the truth (least squares), as deconv.metrics fits it."""
    design = np.stack([image.ravel(), np.ones(image.size)], 1).astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(design, truth.ravel().astype(np.float64), rcond=None)
    return (a * image + b).astype(np.float32)


if __name__ == "__main__":
    main()
