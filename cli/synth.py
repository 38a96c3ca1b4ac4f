"""``deconv synth``: paired raw/ground-truth volumes for training and testing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deconv.cli.app import Quiet, app, parse_numbers


@app.command("synth")
def synth_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for raw/ and gt/.")],
    psf: Annotated[Path, typer.Option(help="PSF TIFF (its voxel size is the data's).")],
    n: Annotated[int, typer.Option("--n", help="Number of pairs.")] = 8,
    shape: Annotated[str, typer.Option(help="'z,y,x' or 'y,x'.")] = "64,128,128",
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same data.")] = 0,
    structures: Annotated[
        str | None,
        typer.Option(
            help="Comma list of structure classes (default: the paper's six; membranes and "
            "filaments are opt-in)."
        ),
    ] = None,
    photons: Annotated[float, typer.Option(help="Photons per ground-truth unit.")] = 5.0,
    background: Annotated[float, typer.Option(help="Background offset, counts.")] = 30.0,
    read_noise: Annotated[float, typer.Option(help="Gaussian read noise sigma, counts.")] = 0.5,
    beyond_field: Annotated[
        str,
        typer.Option(
            help="What lies past the faces: nothing (objects cut by a face send no light from "
            "beyond it) or specimen (drawn and imaged past the faces, then cropped)."
        ),
    ] = "nothing",
    psf_voxel_size: Annotated[
        str | None, typer.Option(help="PSF voxel size 'dz,dy,dx' µm (measured PSFs).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Simulate "mixed structure" samples blurred by a PSF, with Poisson and read noise."""
    from deconv.psf import load_psf
    from deconv.synth import STRUCTURE_CLASSES, SynthConfig, write_synthetic_dataset

    sizes = parse_numbers(shape, int, "--shape")
    classes = tuple(s.strip() for s in structures.split(",")) if structures else STRUCTURE_CLASSES
    config = SynthConfig(
        structures=classes, photon_scale=photons, background=background,
        read_noise=read_noise, beyond_field=beyond_field,
    )  # fmt: skip
    kernel = load_psf(psf, voxel_size=parse_numbers(psf_voxel_size, float, "--psf-voxel-size"))
    paths = write_synthetic_dataset(
        output, kernel.data, n=n, shape=sizes, seed=seed, voxel_size=kernel.voxel_size,
        config=config, progress=not quiet,
    )  # fmt: skip
    typer.echo(f"wrote {len(paths)} pairs to {output}/raw and {output}/gt")
