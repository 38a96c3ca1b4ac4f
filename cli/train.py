"""``deconv train``: train a zoo network from a PSF (synthetic data) or from paired TIFFs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from deconv.cli.app import Quiet, app, parse_numbers, reporter

DEFAULT_STEPS = 1000


@app.command("train")
def train_command(
    model: Annotated[str, typer.Argument(help="Zoo model to train, e.g. rln3d.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Run directory to create.")
    ] = None,
    psf: Annotated[Path | None, typer.Option(help="PSF TIFF: train on synthetic pairs.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder with raw/ and gt/ TIFFs matched by name.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this directory (its own options and --steps)."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Total optimisation steps (default 1000). With --resume the run's own total, "
            "and only a larger one counts; a cosine schedule then stretches to it, so the rate "
            "rises again (a warm restart).",
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    patch: Annotated[str | None, typer.Option(help="Patch 'z,y,x' or 'y,x'.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate; default the model's.")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same run (on CPU).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    val_every: Annotated[int, typer.Option(min=1, help="Validate every N steps.")] = 100,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps.")] = 50,
    volume_shape: Annotated[
        str | None, typer.Option(help="Synthetic volume size (default: from the patch).")
    ] = None,
    train_structures: Annotated[
        str | None, typer.Option(help="Synthetic structure classes to train on (comma list).")
    ] = None,
    val_structures: Annotated[
        str | None, typer.Option(help="Validation structure classes (default: the training ones).")
    ] = None,
    init_weights: Annotated[
        str | None,
        typer.Option(help="Fine-tune: start from a pretrained name or a run directory."),
    ] = None,
    ema: Annotated[
        float | None,
        typer.Option(help="Keep, validate and ship an EMA of the weights (decay, e.g. 0.999)."),
    ] = None,
    intensity_scale: Annotated[
        str | None,
        typer.Option(help="Scale each patch and its truth by a random factor in 'LO,HI'."),
    ] = None,
    flips: Annotated[
        str,
        typer.Option(
            help="Random flips of training patches: symmetric (only along axes the PSF is "
            "mirror-symmetric about; paired data: lateral axes) or all."
        ),
    ] = "symmetric",
    noise: Annotated[
        str,
        typer.Option(
            help="Synthetic data: fresh (new noise for every patch) or fixed (one noisy "
            "realization per pool volume)."
        ),
    ] = "fresh",
    lr_schedule: Annotated[
        str,
        typer.Option(help="step (the model's published decay) or cosine (down to 1% at the end)."),
    ] = "step",
    precision: Annotated[
        str,
        typer.Option(
            help="auto (float16 autocast on CUDA, float32 on CPU), float32, or bfloat16 "
            "(faster steps on CPUs with AVX512-BF16/AMX; less learned per step)."
        ),
    ] = "auto",
    photon_scale: Annotated[
        str | None,
        typer.Option(help="Synthetic data: photons per unit truth, log-uniform in 'LO,HI'."),
    ] = None,
    percentiles: Annotated[
        str | None,
        typer.Option(
            help="Normalise raw images by these 'LOW,HIGH' percentiles instead of the model's "
            "(RLN: 0.01,99.8); the run records them for inference."
        ),
    ] = None,
    refresh_every: Annotated[
        int,
        typer.Option(help="Synthetic data: steps between new pool volumes (2D: 1 is cheap)."),
    ] = 50,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a model config field, KEY=VALUE (repeatable), e.g. --set width=8.",
        ),
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Minutes: stop cleanly after the step that reaches them, with a checkpoint "
            "there, ready for --resume (a lent GPU's or a queue slot's budget).",
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Train MODEL; checkpoints, metrics and a training curve go to the run directory."""
    from deconv.errors import DeconvError
    from deconv.synth import STRUCTURE_CLASSES
    from deconv.training import TrainConfig, train

    if (output is None) == (resume is None):
        raise DeconvError("give -o RUN_DIR for a new run, or --resume RUN_DIR to continue one")

    def classes(text: str | None) -> tuple[str, ...] | None:
        return tuple(s.strip() for s in text.split(",")) if text else None

    scale_range = parse_numbers(intensity_scale, float, "--intensity-scale", (2,))
    photons = parse_numbers(photon_scale, float, "--photon-scale", (2,))
    percentile_pair = parse_numbers(percentiles, float, "--percentiles", (2,))
    config = TrainConfig(
        model=model, model_overrides=parse_overrides(set_ or []),
        # resuming keeps the larger of this and the run's total, so 1 keeps the run's own
        steps=steps if steps is not None else (1 if resume else DEFAULT_STEPS),
        batch_size=batch_size, patch=parse_numbers(patch, int, "--patch"),
        learning_rate=lr, seed=seed, device=device, val_every=val_every,
        checkpoint_every=checkpoint_every, psf=str(psf) if psf else None,
        data=str(data) if data else None,
        volume_shape=parse_numbers(volume_shape, int, "--volume-shape"),
        train_structures=classes(train_structures) or STRUCTURE_CLASSES,
        validation_structures=classes(val_structures), init_weights=init_weights,
        intensity_scale=scale_range or (1.0, 1.0), ema_decay=ema,
        lr_schedule=lr_schedule, flips=flips, noise=noise, refresh_every=refresh_every,
        photon_scale=photons, precision=precision,
        percentiles=percentile_pair,
    )  # fmt: skip
    run_dir = resume or output
    limit = None if time_limit is None else time_limit * 60
    result = train(config, run_dir, reporter(quiet), resume=resume is not None, time_limit=limit)
    if result.get("stopped"):
        typer.echo(
            f"{run_dir}: stopped at step {result['step']} of {result['steps']} (--time-limit); "
            f"continue with: deconv train {model} --resume {run_dir}"
        )
        return
    typer.echo(
        f"{run_dir}: step {result['step']}, validation PSNR {result.get('psnr', float('nan')):.2f} "
        f"dB, SSIM {result.get('ssim', float('nan')):.3f} (best {result['best_psnr']:.2f} dB)"
    )


def parse_overrides(items: list[str]) -> dict[str, object]:
    """['width=8', 'ndim=2'] -> {'width': 8, 'ndim': 2}: values are read as JSON (numbers,
    booleans, lists) and fall back to plain strings, so `--set architecture=rln` needs no
    quotes. Whether a key exists is the model config's business (one clear error there)."""
    from deconv.errors import DeconvError

    overrides: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise DeconvError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides[key.strip()] = value
    return overrides
