"""``deconv psf``: generate a PSF TIFF that carries its metadata."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from deconv.cli.app import app, parse_numbers


class PSFModel(str, Enum):
    vectorial = "vectorial"
    scalar = "scalar"
    gaussian = "gaussian"


@app.command("psf")
def psf_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="PSF TIFF to write.")],
    model: Annotated[PSFModel, typer.Option(help="Optical model.")] = PSFModel.vectorial,
    na: Annotated[float, typer.Option("--na", help="Numerical aperture.")] = 1.4,
    wavelength: Annotated[float, typer.Option(help="Emission wavelength, µm.")] = 0.52,
    ni: Annotated[float, typer.Option("--ni", help="Immersion refractive index.")] = 1.515,
    ns: Annotated[float, typer.Option("--ns", help="Sample refractive index.")] = 1.33,
    dxy: Annotated[float, typer.Option("--dxy", help="Lateral pixel size, µm.")] = 0.065,
    dz: Annotated[float, typer.Option("--dz", help="Axial step, µm.")] = 0.2,
    shape: Annotated[str, typer.Option(help="Odd sizes 'z,y,x' (or 'y,x' for 2D).")] = "33,65,65",
    depth: Annotated[float, typer.Option(help="Emitter depth above the coverslip, µm.")] = 0.0,
) -> None:
    """Generate a widefield PSF (psfmodels) normalised to sum 1, with its metadata."""
    from deconv.psf import fwhm, generate_psf, save_psf

    sizes = parse_numbers(shape, int, "--shape")
    psf = generate_psf(
        model=model.value, shape=sizes, na=na, wavelength=wavelength, ni=ni, ns=ns, dxy=dxy,
        dz=dz, depth=depth,
    )  # fmt: skip
    save_psf(psf, output)
    widths = ", ".join(f"{w * v:.3f}" for w, v in zip(fwhm(psf.data), psf.voxel_size, strict=True))
    typer.echo(f"wrote {output}: {model.value} PSF {'x'.join(map(str, psf.data.shape))}, "
               f"FWHM ({widths}) µm")  # fmt: skip
