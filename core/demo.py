"""``deconv demo``: the whole story on built-in defaults, offline, in seconds.

A synthetic 3D sample (mixed structures) is imaged through the default widefield PSF
(NA 1.4 oil, 520 nm emission, 65 nm pixels, 200 nm steps) with Poisson and read noise, then
restored by traditional Richardson-Lucy (30 iterations), by RL with the Wiener-Butterworth
back projector (3 iterations), by the shipped RLN trained for that PSF on synthetic data, and
by RL started from the RLN's output (``deconv run --rl-refine auto``: 200 iterations).
Every input and result is written as a TIFF a microscopist can open in Fiji, with a PNG that
compares them against the ground truth.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from deconv.figures import orthogonal_slices_figure
from deconv.io import write_atomically, write_image
from deconv.metrics import evaluate
from deconv.psf import generate_psf, save_psf
from deconv.reporter import SILENT, Reporter
from deconv.richardson_lucy import RichardsonLucy, RLConfig
from deconv.synth import SynthConfig, simulate_pair
from deconv.zoo import list_models

DEMO_SHAPE = (48, 128, 128)
DEMO_SEED = 0
DEMO_NETWORK = "rln3d.widefield-synthetic"


def _network(raw):
    """The shipped RLN on the raw sample, normalised as it was trained."""
    from deconv.normalization import network_input
    from deconv.runtime.predict import predict
    from deconv.zoo import get_model_card
    from deconv.zoo.pretrained import load_pretrained

    start = time.perf_counter()
    model, record = load_pretrained(DEMO_NETWORK)
    card = get_model_card(DEMO_NETWORK)
    output = predict(model, card, network_input(raw, record.normalization))
    return output, time.perf_counter() - start


def _refine_iterations() -> int:
    """The count the shipped weights record for ``--rl-refine auto``."""
    from deconv.zoo.pretrained import pretrained_record

    return pretrained_record(DEMO_NETWORK).rl_refine or 200


def _refined(raw, network, psf, background: float, reporter: Reporter):
    """RL started from the network's output, as ``deconv run --rl-refine``."""
    from deconv.runtime.rl_refine import fit_start

    iterations = _refine_iterations()
    model = RichardsonLucy(psf, RLConfig(iterations=iterations, background=background))
    with reporter.progress(iterations, "RLN + RL refine") as advance:
        start = time.perf_counter()
        first = fit_start(network, raw, psf, background)
        refined = model(raw, callback=lambda _k: advance(1), start=first).numpy()
    return refined, time.perf_counter() - start


def run_demo(out_dir: str | Path = "deconv-demo", reporter: Reporter = SILENT) -> dict:
    """Simulate, deconvolve twice, write TIFFs, a figure and metrics; returns the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    psf = generate_psf()
    voxel_size = psf.voxel_size
    reporter.info(f"simulating a {'x'.join(map(str, DEMO_SHAPE))} sample (seed {DEMO_SEED})")
    raw, gt = simulate_pair(DEMO_SHAPE, psf.data, seed=DEMO_SEED)
    background = SynthConfig().background
    methods = {
        "rl": RLConfig(iterations=30, background=background),
        "rl_wiener_butterworth": RLConfig(
            iterations=3, back_projector="wiener-butterworth", background=background
        ),
    }
    results = {"raw": {**evaluate(raw, gt), "seconds": 0.0}}
    outputs = {"raw": raw}
    for name, config in methods.items():
        model = RichardsonLucy(psf.data, config)
        with reporter.progress(config.iterations, name.replace("_", " ")) as advance:
            start = time.perf_counter()
            outputs[name] = model(raw, callback=lambda _k: advance(1)).numpy()
            seconds = time.perf_counter() - start
        results[name] = {**evaluate(outputs[name], gt), "seconds": seconds}
    if DEMO_NETWORK in list_models(pretrained=True):
        outputs["rln"], seconds = _network(raw)
        results["rln"] = {**evaluate(outputs["rln"], gt), "seconds": seconds}
        outputs["rln_rl_refine"], more = _refined(raw, outputs["rln"], psf.data, background,
                                                  reporter)  # fmt: skip
        results["rln_rl_refine"] = {**evaluate(outputs["rln_rl_refine"], gt),
                                    "seconds": seconds + more}  # fmt: skip

    files = {"psf": save_psf(psf, out_dir / "psf.tif")}
    for name, volume in [*outputs.items(), ("ground_truth", gt)]:
        files[name] = write_image(out_dir / f"{name}.tif", volume, voxel_size=voxel_size)
    titles = {
        "raw": "raw (widefield, noisy)",
        "rl": "RL, 30 iterations",
        "rl_wiener_butterworth": "RL Wiener-Butterworth, 3 it.",
        "rln": f"RLN ({DEMO_NETWORK})",
        "rln_rl_refine": f"RLN + {_refine_iterations()} RL it. (--rl-refine auto)",
    }
    panels = [
        (f"{titles[k]}\nPSNR {v['psnr']:.2f} dB  SSIM {v['ssim']:.3f}", outputs[k])
        for k, v in results.items()
    ]
    panels.append(("ground truth", gt))
    files["figure"] = orthogonal_slices_figure(
        panels, out_dir / "demo.png", voxel_size=voxel_size,
        title="deconv demo: synthetic mixed structures, NA 1.4 widefield PSF",
    )  # fmt: skip
    summary = {"metrics": results, "files": {k: str(v) for k, v in files.items()}}

    def dump(tmp: Path) -> None:
        tmp.write_text(json.dumps(summary, indent=2))

    files["metrics"] = write_atomically(out_dir / "metrics.json", dump)
    summary["files"]["metrics"] = str(files["metrics"])
    return summary
