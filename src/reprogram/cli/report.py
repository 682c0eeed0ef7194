"""``reprogram explain`` and ``reprogram table``: the reports as commands (registered by
``reprogram.cli``)."""

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


# ``table``'s options: each a field of TableOptions (its types, defaults).
TABLE_HELP = {
    "outlier_std": "flag a seed this many stds of the other seeds from their mean",
    "min_spread": "the other seeds' std counts as at least this (points)",
    "zero_shot_margin": "flag a seed below zero-shot when another beats zero-shot by this (points)",
}


def register(app: typer.Typer) -> None:
    """Add the ``explain`` and ``table`` commands to the main application."""
    from reprogram.report.load import Options
    from reprogram.report.table import TableOptions

    options = options_of(EXPLAIN_HELP, {"": Options})
    app.command("explain")(with_options(explain_command, options))
    app.command("table")(with_options(table_command, options_of(TABLE_HELP, {"": TableOptions})))


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


def table_command(
    runs: Annotated[list[Path], typer.Argument(help="run folders, or folders holding runs")],
    out: Annotated[
        Path, typer.Option("--out", help="folder for table.md, .csv, .json and the figures")
    ] = Path("table"),
    **values: Any,
) -> None:
    """The table users publish: methods × datasets, mean ± std over seeds, beside the published
    numbers (DVP and RVP papers), with collapsed seeds flagged."""
    from reprogram.report.table import TableOptions, make_table, table_markdown

    options = TableOptions(**arguments_for(TableOptions, values))
    table, written = make_table(list(runs), out, options)
    typer.echo(table_markdown(table), nl=False)
    typer.echo("written: " + ", ".join(str(p) for p in written), err=True)
