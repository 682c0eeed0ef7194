"""Progress display: a rich bar per epoch, or nothing in quiet mode."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class Reporter:
    """Prints progress bars and lines to stderr unless quiet."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)

    def line(self, text: str) -> None:
        if not self.quiet:
            # plain text (a "[task]" is no markup tag), never wrapped at rich's 80 columns
            self.console.print(text, soft_wrap=True, markup=False, highlight=False)

    @contextlib.contextmanager
    def bar(self, description: str, total: int):
        """Yields ``advance(n, **fields)``; the bar shows loss/acc/images per second."""
        if self.quiet or total <= 0 or not self.console.is_terminal:
            yield lambda n=1, **_: None
            return
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with progress:
            task = progress.add_task(description, total=total, info="")

            def advance(n: int = 1, **fields) -> None:
                info = "  ".join(f"{k} {v}" for k, v in fields.items())
                progress.update(task, advance=n, info=info)

            yield advance
