"""The Typer application and the option parsing shared by every command."""

from __future__ import annotations

from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from deconv import __version__
from deconv.errors import DeconvError
from deconv.reporter import Reporter

# `deconv --help` lists commands in the order of a user's day (try, deconvolve, make inputs,
# train, share, tune), not in the order their modules happen to be imported.
WORKFLOW_ORDER = (
    "demo", "run", "psf", "synth", "train", "models", "info",
    "package", "validate", "export", "bench", "fft-plan",
)  # fmt: skip


class WorkflowOrderedGroup(TyperGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(WORKFLOW_ORDER)}
        return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


app = typer.Typer(
    name="deconv",
    cls=WorkflowOrderedGroup,
    help="Deconvolution for fluorescence microscopy: PSFs, synthetic data, Richardson-Lucy "
    "and trained networks (RLN, RCAN, m-rBCR), bioimage.io packages, ONNX/TensorRT export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deconv {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """deconv: fluorescence-microscopy deconvolution."""


def parse_numbers(text: str | None, kind: type, name: str, count: tuple[int, ...] = (2, 3)):
    """'33,65,65' -> (33, 65, 65), with a one-line error naming the option."""
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise DeconvError(f"{name}: expected comma-separated numbers, got {text!r}") from None
    if len(values) not in count:
        raise DeconvError(f"{name}: expected {' or '.join(map(str, count))} values, got {text!r}")
    return values


def reporter(quiet: bool) -> Reporter:
    return Reporter(quiet=quiet)
