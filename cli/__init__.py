"""The ``deconv`` command line: thin Typer commands over library functions.

User mistakes (:class:`deconv.DeconvError`, invalid option values) end with one line on
stderr and exit code 2; anything else is a bug and says so in one line (set DECONV_DEBUG=1
for the traceback).
"""

from __future__ import annotations

import os
import sys

from pydantic import ValidationError

from deconv.cli import (  # noqa: F401  (registers the commands)
    bench,
    demo,
    fft_plan,
    info,
    package,
    psf,
    run,
    synth,
    train,
)
from deconv.cli.app import app
from deconv.errors import DeconvError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="deconv")
    except (DeconvError, ValidationError) as exc:
        _fail(_one_line(exc), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("DECONV_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (set DECONV_DEBUG=1 for details)", 1)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"invalid value for {where}: {first['msg']}"
    return str(exc)


def _fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
