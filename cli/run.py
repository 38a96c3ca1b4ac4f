"""``deconv run``: deconvolve an image file with a zoo model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from deconv.back_projectors import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_ORDER
from deconv.cli.app import Quiet, app, parse_numbers, reporter


class BackProjector(str, Enum):
    traditional = "traditional"
    gaussian = "gaussian"
    butterworth = "butterworth"
    wiener = "wiener"
    wiener_butterworth = "wiener-butterworth"


class Boundary(str, Enum):
    noncirculant = "noncirculant"
    reflect = "reflect"
    zero = "zero"
    periodic = "periodic"


class FFTEngine(str, Enum):
    auto = "auto"
    scipy = "scipy"
    fftw = "fftw"
    torch = "torch"


class OutputType(str, Enum):
    float32 = "float32"
    uint16 = "uint16"


@app.command("run")
def run_command(
    input_path: Annotated[
        str, typer.Argument(metavar="INPUT", help="TIFF, OME-TIFF or Zarr; or a folder or glob.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output image (.tif/.zarr), or a folder.")
    ],
    psf: Annotated[Path | None, typer.Option(help="PSF TIFF (for rl).")] = None,
    model: Annotated[
        str, typer.Option(help="rl, a pretrained name, a run directory or a package (.zip).")
    ] = "rl",
    iterations: Annotated[int, typer.Option(min=1, help="RL iterations.")] = 30,
    background: Annotated[
        str, typer.Option(help="Camera offset in input units, or 'auto' (0.5 percentile).")
    ] = "0",
    back_projector: Annotated[
        BackProjector, typer.Option(help="RL back projector.")
    ] = BackProjector.traditional,
    alpha: Annotated[float, typer.Option(help="Wiener regularisation.")] = DEFAULT_ALPHA,
    beta: Annotated[float, typer.Option(help="Back projector gain at the cutoff.")] = DEFAULT_BETA,
    order: Annotated[int, typer.Option(help="Butterworth order.")] = DEFAULT_ORDER,
    boundary: Annotated[Boundary, typer.Option(help="Edge handling.")] = Boundary.noncirculant,
    acceleration: Annotated[
        bool, typer.Option("--acceleration/--no-acceleration", help="Biggs-Andrews.")
    ] = False,
    fft: Annotated[
        FFTEngine,
        typer.Option(help="RL FFT engine; auto: FFTW if installed and planned, else scipy."),
    ] = FFTEngine.auto,
    stack: Annotated[
        bool, typer.Option(help="The first axis is a stack of independent images.")
    ] = False,
    voxel_size: Annotated[
        str | None, typer.Option(help="Input voxel size 'dz,dy,dx' µm (overrides metadata).")
    ] = None,
    psf_voxel_size: Annotated[
        str | None, typer.Option(help="PSF voxel size 'dz,dy,dx' µm (measured PSFs).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    output_dtype: Annotated[OutputType, typer.Option(help="Output pixel type.")] = (
        OutputType.float32
    ),
    uint16_scale: Annotated[
        float | None, typer.Option(help="uint16 = value x scale (default: fit the range).")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Array name inside a Zarr group.")] = None,
    backend: Annotated[
        str, typer.Option(help="Networks: auto, torch, onnx or tensorrt (auto says which).")
    ] = "auto",
    precision: Annotated[
        str | None, typer.Option(help="Networks: fp32, fp16 or bf16 (default fp16 on GPUs).")
    ] = None,
    tile: Annotated[
        str | None, typer.Option(help="Networks: tile core 'z,y,x' (default 96,256,256).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Networks: tiles per batch.")] = 1,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta/--no-tta",
            help="Networks: average over the flips the model's PSF is symmetric under "
            "(~+0.4-0.6 dB on held-out data, 4x slower).",
        ),
    ] = False,
    rl_consensus: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="ITERATIONS",
            help="Networks: write the mean of the network's output and this many RL "
            "iterations with the model's PSF (--background and the RL options apply); "
            "+1.2 dB over the best RL on 3D held-out shells at 800.",
        ),
    ] = None,
    rl_refine: Annotated[
        str | None,
        typer.Option(
            metavar="ITERATIONS|auto",
            help="Networks: run this many RL iterations with the model's PSF, started from "
            "the network's output (--background and the RL options apply); 'auto': the "
            "count recorded with shipped weights (200 for rln3d.widefield-synthetic: +1.3 dB "
            "over the best RL on 3D held-out shells).",
        ),
    ] = None,
    percentiles: Annotated[
        str | None,
        typer.Option(
            metavar="LOW,HIGH",
            help="Networks: normalise the input by these percentiles instead of the model's "
            "(deconv info MODEL); turns floor matching off, which was calibrated at the "
            "model's own.",
        ),
    ] = None,
    match_floor: Annotated[
        bool,
        typer.Option(
            "--match-floor/--no-match-floor",
            help="Networks: scale a sparse sample (beads, puncta, sparse filaments) down "
            "until its background sits where the training data's did, for models that record "
            "that level (deconv info MODEL: reference floor). Dense samples are left alone.",
        ),
    ] = True,
    dask: Annotated[
        str | None,
        typer.Option(help="Networks into .zarr: local:N workers or tcp://scheduler:8786."),
    ] = None,
    output_format: Annotated[
        str | None, typer.Option(help="Batches: write 'zarr' or 'tif' (default: as the input).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Batches: recompute outputs that already exist.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Deconvolve INPUT with Richardson-Lucy and a PSF, or with a trained network."""
    from deconv.errors import DeconvError
    from deconv.richardson_lucy import RLConfig
    from deconv.runtime.run import RunOptions, deconvolve_file

    if background != "auto":
        try:
            background = float(background)
        except ValueError:
            raise DeconvError(f"--background: a number or 'auto', not {background!r}") from None
    if rl_refine is not None and rl_refine != "auto":
        try:
            rl_refine = int(rl_refine)
        except ValueError:
            rl_refine = 0
        if rl_refine < 1:
            raise DeconvError("--rl-refine: a number of iterations >= 1 or 'auto'")
    options = RunOptions(
        model=model,
        rl=RLConfig(
            iterations=iterations, back_projector=back_projector.value, alpha=alpha, beta=beta,
            order=order, boundary=boundary.value, acceleration=acceleration,
        ),
        fft=fft.value, background=background, stack=stack,
        voxel_size=parse_numbers(voxel_size, float, "--voxel-size"),
        psf_voxel_size=parse_numbers(psf_voxel_size, float, "--psf-voxel-size"),
        device=device, output_dtype=output_dtype.value,
        uint16_scale=uint16_scale, key=key, backend=backend, precision=precision,
        tile=parse_numbers(tile, int, "--tile"), batch_size=batch_size, dask=dask, tta=tta,
        rl_consensus=rl_consensus, rl_refine=rl_refine,
        percentiles=parse_numbers(percentiles, float, "--percentiles", (2,)),
        match_floor=match_floor,
    )  # fmt: skip
    from deconv.runtime.batch import batch_inputs, batch_output, is_batch

    if not is_batch(input_path):
        summary = deconvolve_file(Path(input_path), output, psf, options, reporter(quiet))
        typer.echo(f"wrote {summary['output']} ({'x'.join(map(str, summary['shape']))}, "
                   f"{summary['device']})")  # fmt: skip
        return
    if output_format not in (None, "zarr", "tif"):
        raise DeconvError(f"--output-format must be zarr or tif, got {output_format!r}")
    if output.suffix.lower() in (".tif", ".tiff", ".zarr"):
        raise DeconvError(f"a batch of inputs needs an output folder, not {output}")
    inputs = batch_inputs(input_path)
    output.mkdir(parents=True, exist_ok=True)
    done = skipped = 0
    for path in inputs:
        target = batch_output(path, output, f".{output_format}" if output_format else None)
        if target.exists() and not overwrite:
            skipped += 1
            continue
        deconvolve_file(path, target, psf, options, reporter(quiet))
        done += 1
    typer.echo(f"{done} written, {skipped} already done (--overwrite recomputes) in {output}")
