"""``deconv demo``: simulate, deconvolve and show, on built-in defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deconv.cli.app import Quiet, app, reporter


@app.command("demo")
def demo_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for results.")] = Path(
        "deconv-demo"
    ),
    quiet: Quiet = False,
) -> None:
    """Deconvolve a synthetic widefield sample and write TIFFs, a figure and metrics."""
    from deconv.demo import run_demo

    summary = run_demo(output, reporter(quiet))
    for name, m in summary["metrics"].items():
        typer.echo(f"{name:24s} PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.3f}  "
                   f"{m['seconds']:6.2f} s")  # fmt: skip
    typer.echo(f"figure: {summary['files']['figure']}")
    names = ", ".join(f"{k}.tif" for k in summary["metrics"])
    typer.echo(f"images: {output}/ ({names}, ground_truth.tif, psf.tif)")
