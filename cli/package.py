"""``deconv package``, ``deconv validate`` and ``deconv export``: models leaving the project."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from deconv.cli.app import Quiet, app, parse_numbers, reporter

SourceArg = Annotated[
    str, typer.Argument(help="Pretrained name (rln3d.widefield-synthetic), run directory or .zip.")
]
TrustCode = Annotated[
    bool, typer.Option("--trust-code", help="Allow running architecture code from the package.")
]


def _agreement_table(rows) -> str:
    lines = []
    for r in rows:
        size = "x".join(map(str, r.shape))
        verdict = "ok  " if r.passed else "FAIL"
        lines.append(
            f"  {verdict} {r.check:20s} {size:>14s}  max abs. error {r.max_abs_error:.2e}"
            f"  (tol. {r.absolute:g} + {r.relative:g}|ref|) {r.detail}".rstrip()
        )
    return "\n".join(lines)


@app.command("package")
def package_command(
    source: SourceArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Package to write (.zip).")],
    name: Annotated[str | None, typer.Option(help="Model name shown on bioimage.io.")] = None,
    weights: Annotated[
        str, typer.Option(help="Comma list of weights formats to include.")
    ] = "pytorch_state_dict,torchscript,onnx",
    psf: Annotated[
        Path | None, typer.Option(help="rl only: the PSF TIFF to bake into the graph.")
    ] = None,
    back_projector: Annotated[
        str, typer.Option(help="rl only: traditional, gaussian, butterworth, wiener, ...")
    ] = "wiener-butterworth",
    iterations: Annotated[
        int | None, typer.Option(min=1, help="rl only (default 3, traditional 30).")
    ] = None,
    tile: Annotated[str | None, typer.Option(help="rl only: fixed tile 'z,y,x' or 'y,x'.")] = None,
    background: Annotated[float, typer.Option(help="rl only: camera offset (counts).")] = 0.0,
    psf_voxel_size: Annotated[
        str | None, typer.Option(help="rl only: PSF voxel size if its TIFF has none.")
    ] = None,
    trust_code: TrustCode = False,
    quiet: Quiet = False,
) -> None:
    """Write a bioimage.io model (format 0.5) with PSF metadata, tested before it is written.

    SOURCE is a pretrained name, a run directory, a package, or `rl` with --psf for
    classical Richardson-Lucy / Wiener-Butterworth with the PSF baked in.
    """
    from deconv.errors import DeconvError
    from deconv.exporters.bioimageio_package import package_model
    from deconv.exporters.sources import resolve_source

    formats = tuple(w.strip() for w in weights.split(",") if w.strip())
    report = reporter(quiet)
    if source == "rl":
        from deconv.exporters.rl_source import rl_source
        from deconv.psf import load_psf

        if psf is None:
            raise DeconvError("packaging rl needs --psf PSF.tif (the PSF is the model)")
        voxel = parse_numbers(psf_voxel_size, float, "--psf-voxel-size")
        model = rl_source(load_psf(psf, voxel), back_projector, iterations,
                          parse_numbers(tile, int, "--tile"), background)  # fmt: skip
    elif psf is not None:
        raise DeconvError("--psf is for packaging rl; trained models carry their own PSF")
    else:
        model = resolve_source(source, trust_code=trust_code)
    path, checks = package_model(model, output, name=name, formats=formats, reporter=report)
    if not quiet:
        typer.echo(_agreement_table(checks))
    typer.echo(f"wrote {path} (bioimageio.core test passed)")


@app.command("validate")
def validate_command(
    package: Annotated[Path, typer.Argument(help="bioimage.io package (.zip or rdf.yaml).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
    trust_code: TrustCode = False,
) -> None:
    """Test a package: bioimageio.core's test plus PSF, weights-format and client checks."""
    from deconv.exporters.package_checks import validate_package

    rows = validate_package(package, trust_code=trust_code)
    passed = all(r.passed for r in rows)
    if as_json:
        typer.echo(
            json.dumps(
                {"package": str(package), "passed": passed, "checks": [r.__dict__ for r in rows]},
                indent=2,
            )
        )
    else:
        width = max(len(r.check) for r in rows)
        for r in rows:
            typer.echo(f"{'PASS' if r.passed else 'FAIL'}  {r.check:{width}s}  {r.detail}")
        typer.echo(f"{package}: {'all checks passed' if passed else 'FAILED'}")
    if not passed:
        raise typer.Exit(1)


@app.command("export")
def export_command(
    source: SourceArg,
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx, torchscript or tensorrt.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    precision: Annotated[str, typer.Option(help="fp32, fp16 (onnx, tensorrt) or bf16.")] = "fp32",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    min_shape: Annotated[str | None, typer.Option(help="TensorRT profile minimum.")] = None,
    opt_shape: Annotated[str | None, typer.Option(help="TensorRT profile optimum.")] = None,
    max_shape: Annotated[str | None, typer.Option(help="TensorRT profile maximum.")] = None,
    trust_code: TrustCode = False,
    quiet: Quiet = False,
) -> None:
    """Export to ONNX, TorchScript or a TensorRT engine; verified against PyTorch first."""
    from deconv.exporters.export import export_model
    from deconv.exporters.sources import resolve_source

    shapes = [
        parse_numbers(s, int, f"--{n}-shape", count=(2, 3, 4, 5))
        for s, n in ((min_shape, "min"), (opt_shape, "opt"), (max_shape, "max"))
    ]
    model = resolve_source(source, trust_code=trust_code)
    path, rows = export_model(
        model,
        fmt,
        output,
        precision=precision,
        opset=opset,
        min_shape=shapes[0],
        opt_shape=shapes[1],
        max_shape=shapes[2],
    )
    if not quiet:
        typer.echo(_agreement_table(rows))
    typer.echo(f"wrote {path} ({fmt}, {precision}; matches PyTorch on {len(rows)} sizes)")
