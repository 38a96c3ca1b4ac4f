"""``deconv fft-plan``: measure FFTW plans for one image geometry once, before many runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from deconv.cli.app import app, parse_numbers
from deconv.cli.run import Boundary


class Effort(str, Enum):
    measure = "measure"
    patient = "patient"
    exhaustive = "exhaustive"


@app.command("fft-plan")
def fft_plan_command(
    psf: Annotated[Path, typer.Option(help="PSF TIFF the runs will use.")],
    shape: Annotated[str, typer.Option(help="Image size 'z,y,x' (or 'y,x').")],
    effort: Annotated[
        Effort, typer.Option(help="FFTW planning effort: patient takes minutes, runs ~15% faster.")
    ] = Effort.patient,
    boundary: Annotated[Boundary, typer.Option(help="Edge handling of the runs.")] = (
        Boundary.noncirculant
    ),
    batch: Annotated[int, typer.Option(min=1, help="Images deconvolved together.")] = 1,
) -> None:
    """Measure and cache FFTW plans so `deconv run --model rl` on this geometry runs faster.

    Plans are cached per machine (see DECONV_CACHE_DIR); `--fft auto` then uses FFTW for
    images of this shape at any iteration count.
    """
    from deconv.errors import DeconvError
    from deconv.fftw_transforms import wisdom_path
    from deconv.psf import load_psf
    from deconv.richardson_lucy import RichardsonLucy, RLConfig
    from deconv.rl_transforms import fftw_available

    if not fftw_available():
        raise DeconvError("fft-plan needs pyFFTW: pip install 'deconv[fftw]'")
    sizes = parse_numbers(shape, int, "--shape")
    kernel = load_psf(psf).data
    if len(sizes) != kernel.ndim:
        raise DeconvError(f"--shape has {len(sizes)} sizes but the PSF is {kernel.ndim}D")
    model = RichardsonLucy(kernel, RLConfig(boundary=boundary.value))
    grid = "x".join(map(str, model.plan(sizes).padded))
    typer.echo(f"measuring FFTW plans ({effort.value}) for the {grid} grid ...")
    seconds = model.measure_fft_plans(sizes, batch=batch, effort=effort.value)
    typer.echo(f"planned in {seconds:.1f} s; wisdom saved to {wisdom_path()}")
