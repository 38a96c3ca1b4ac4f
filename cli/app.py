"""The Typer application and the option parsing shared by every command."""

from __future__ import annotations

from typing import Annotated

import typer

from deconv import __version__
from deconv.errors import DeconvError
from deconv.reporter import Reporter

app = typer.Typer(
    name="deconv",
    help="Deconvolution for fluorescence microscopy: PSFs, synthetic data, Richardson-Lucy, "
    "and (soon) trained networks.",
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
