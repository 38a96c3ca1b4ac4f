"""``deconv models`` and ``deconv info``: what the zoo holds and what a model is."""

from __future__ import annotations

from typing import Annotated

import typer

from deconv.cli.app import app


@app.command("models")
def models_command(
    pattern: Annotated[str, typer.Argument(help="Shell-style pattern, e.g. 'rln*'.")] = "*",
) -> None:
    """List the registered models (built in and from plugins)."""
    from deconv.zoo import get_model_card, list_models

    for name in list_models(pattern):
        card = get_model_card(name)
        dims = f"{card.ndim}D" if card.ndim else "2D/3D"
        params = f"{card.parameters:,}" if card.parameters is not None else "?"
        summary = card.description.split(". ")[0].split(": ")[0]
        typer.echo(f"{name:18s} {dims:6s} {params:>11s} params  {summary}")
    from deconv.zoo.pretrained import pretrained_record

    tagged = list_models(pattern, pretrained=True)
    column = max((len(name) for name in tagged), default=0)
    for name in tagged:
        record = pretrained_record(name)
        built_in = record.config.get("flip_axes")
        note = f", equivariant to flips of axes {list(built_in)}" if built_in else ""
        typer.echo(f"{name:{column}s}  weights for a {_psf_summary(record.psf)}{note}")


def _psf_summary(psf) -> str:
    vox = ", ".join(f"{v:g}" for v in psf.voxel_size)
    return (
        f"{psf.generator} PSF: NA {psf.na}, {psf.wavelength_emission} µm emission, "
        f"voxels ({vox}) µm"
    )


@app.command("info")
def info_command(name: Annotated[str, typer.Argument(help="Model name, e.g. rln3d.")]) -> None:
    """Show a model's card: parameters, input sizes, halo, normalisation, loss, citation."""
    from deconv.zoo import create_model, get_model_card

    card = get_model_card(name)
    params = f"{card.parameters:,}" if card.parameters is not None else "unknown"
    lines = [
        f"{card.name}: {card.description}",
        f"architecture      {card.architecture}",
        f"dimensions        {f'{card.ndim}D' if card.ndim else 'as the PSF (2D or 3D)'}",
        f"parameters        {params} trainable",
        f"input sizes       min {card.min_size}, step {card.step}",
        f"halo (tiling)     {card.halo}",
        f"normalisation     {card.normalization.kind} "
        f"({card.normalization.low}, {card.normalization.high})",
        f"loss              {card.loss}",
    ]
    if card.normalization.reference_floor is not None:
        floor = card.normalization.reference_floor
        lines.insert(-1, f"reference floor   {floor:.4g} (floor matching for sparse samples; "
                     "deconv run --no-match-floor: off)")  # fmt: skip
    if card.trainable:  # what `deconv train --set KEY=VALUE` can change
        fields = create_model(name).config.model_dump(exclude={"architecture"})
        lines.append("config            " + ", ".join(f"{k}={v}" for k, v in fields.items()))
    if "." in name:  # shipped weights: what they were trained for and how to run them best
        from deconv.zoo.pretrained import pretrained_record

        record = pretrained_record(name)
        lines.append(f"trained for       a {_psf_summary(record.psf)}")
        if record.rl_refine:
            lines.append(f"--rl-refine auto  {record.rl_refine} RL iterations from its output")
    lines += [
        f"cite              {c.text}" + (f" doi:{c.doi}" if c.doi else "") for c in card.citation
    ]
    typer.echo("\n".join(lines))
