"""``reprogram explain``: the report as a command (registered by ``reprogram.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reprogram.cli.options import QuietOpt, arguments_for, options_of, with_options

# The report's options, in --help order: each a field of report Options (its types, defaults).
EXPLAIN_HELP = {
    "examples": "test images shown with each prompt applied",
    "max_classes": "class-wise figures beyond this show a selection (at least 4)",
    "top_descriptions": "descriptions listed per class",
    "max_per_class": "cap on test images per class (none: all)",
    "reference": "method the others are compared with (none: the first run's)",
    "device": "auto, cpu, cuda, cuda:1",
    "weights": "the runs' weights file, if it moved",
    "root": "the runs' dataset folder, if it moved",
    "batch_size": "images per forward pass",
}


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to the main application."""
    from reprogram.report.load import Options

    options = options_of(EXPLAIN_HELP, {"": Options})
    app.command("explain")(with_options(explain_command, options))


def explain_command(
    runs: Annotated[list[Path], typer.Argument(help="run folders, or folders holding runs")],
    out: Annotated[Path, typer.Option("--out", help="folder for index.html and its images")] = Path(
        "report"
    ),
    quiet: QuietOpt = False,
    **values: Any,
) -> None:
    """Write an interpretability report (HTML + PNG) for finished runs."""
    from reprogram.report.explain import Options, explain

    options = Options(**arguments_for(Options, values))
    log = None if quiet else lambda message: typer.echo(message, err=True)
    typer.echo(str(explain(list(runs), out, options, log=log)))
