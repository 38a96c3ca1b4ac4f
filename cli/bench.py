"""``deconv bench``: how fast each backend runs a model here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from deconv.cli.app import app, parse_numbers


@app.command("bench")
def bench_command(
    model: Annotated[str, typer.Option(help="rl, a pretrained name, a run directory or .zip.")],
    shape: Annotated[str | None, typer.Option(help="Volume 'z,y,x' or 'y,x'.")] = None,
    backend: Annotated[str, typer.Option(help="all, torch, onnx or tensorrt.")] = "all",
    precision: Annotated[str | None, typer.Option(help="Only this precision.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    tile: Annotated[str | None, typer.Option(help="Tile core (default: whole volume).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Tiles per batch.")] = 1,
    psf: Annotated[Path | None, typer.Option(help="rl: the PSF TIFF.")] = None,
    iterations: Annotated[int, typer.Option(min=1, help="rl: iterations per run.")] = 20,
    back_projector: Annotated[str, typer.Option(help="rl: back projector.")] = "traditional",
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs (median).")] = 3,
    as_json: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Voxels per second per backend and precision (and ms per RL iteration vs the FFT floor)."""
    from deconv.errors import DeconvError
    from deconv.runtime import benchmark
    from deconv.runtime.run import resolve_device

    dev = resolve_device(device)
    if model == "rl":
        from deconv.psf import load_psf

        if psf is None:
            raise DeconvError("benchmarking rl needs --psf PSF.tif")
        data = load_psf(psf).data
        size = parse_numbers(shape, int, "--shape") or ((64, 256, 256) if data.ndim == 3
                                                         else (1024, 1024))  # fmt: skip
        rows = [benchmark.bench_rl(data, size, iterations, dev, back_projector, repeats)]
        r = rows[0]
        typer.echo(f"rl {back_projector} on {r['device']}, {'x'.join(map(str, size))} "
                   f"(padded {'x'.join(map(str, r['padded']))}): {r['ms_per_iteration']:.1f} "
                   f"ms/iteration = {r['ratio_to_floor']:.2f}x the four-FFT floor "
                   f"({r['four_fft_floor_ms']:.1f} ms, {r['fft_engine']} FFTs)")  # fmt: skip
    else:
        from deconv.exporters.sources import resolve_source

        source = resolve_source(model)
        size = parse_numbers(shape, int, "--shape") or (64, 256, 256)[-source.card.ndim :]
        pairs = benchmark.default_backends(dev, backend)
        if precision:
            pairs = list(dict.fromkeys((b, precision) for b, _ in pairs))
        rows = benchmark.bench_network(source, size, dev, pairs, repeats,
                                       parse_numbers(tile, int, "--tile"), batch_size)  # fmt: skip
        typer.echo(f"{model} on {rows[0]['device']}, {'x'.join(map(str, size))}:")
        for r in rows:
            if "unavailable" in r:
                typer.echo(f"  {r['backend']:28s} {r['precision']:5s}  unavailable: "
                           f"{r['unavailable']}")  # fmt: skip
            else:
                rate = f"{r['mvoxel_per_s']:8.2f} Mvoxel/s  ({r['seconds']:.2f} s)"
                typer.echo(f"  {r['backend']:28s} {r['precision']:5s}  {rate}")
    if as_json:
        as_json.parent.mkdir(parents=True, exist_ok=True)
        as_json.write_text(json.dumps(rows, indent=2, default=float) + "\n")
