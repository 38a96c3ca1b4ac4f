"""How long work talks to the user: one-line messages and progress bars on stderr.

Library functions take a :class:`Reporter` instead of printing, so the CLI decides what is
shown (``--quiet`` silences everything but errors) and results on stdout stay clean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    def progress(self, total: int, description: str) -> Iterator[Callable[[int], None]]:
        """Yields ``advance(n)``; the bar shows steps done, elapsed time and ETA."""
        if self.quiet or total <= 0 or not self.console.is_terminal:  # no bars in logs
            yield lambda n=1: None
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)


SILENT = Reporter(quiet=True)
