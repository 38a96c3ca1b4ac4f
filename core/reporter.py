"""How long work talks to the user: one-line messages and progress bars on stderr.

Library functions take a :class:`Reporter` instead of printing, so the CLI decides what is
shown (``--quiet`` silences everything but errors) and results on stdout stay clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Messages and progress bars for one command; silent when ``quiet``."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    @contextmanager
    def progress(self, total: int, description: str) -> Iterator[ProgressBar]:
        """Yields a :class:`ProgressBar`: call it to advance, ``.status(text)`` to annotate."""
        if self.quiet or total <= 0 or not self.console.is_terminal:  # no bars in logs
            yield ProgressBar(None, None)
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total, status="")
            yield ProgressBar(bar, task)


class ProgressBar:
    """Steps done, elapsed time, ETA and a free status text (e.g. loss and PSNR)."""

    def __init__(self, bar: Progress | None, task) -> None:
        self._bar, self._task = bar, task

    def __call__(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def status(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, status=text)


SILENT = Reporter(quiet=True)
