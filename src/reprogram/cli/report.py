"""``reprogram explain``: the report as a command (registered by ``reprogram.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to the main application."""

    @app.command("explain")
    def explain_command(
        runs: Annotated[list[Path], typer.Argument(help="run folders, or folders holding runs")],
        out: Annotated[
            Path, typer.Option("--out", help="folder for index.html and its images")
        ] = Path("report"),
        examples: Annotated[
            int, typer.Option(help="test images shown with each prompt applied")
        ] = 4,
        max_classes: Annotated[
            int,
            typer.Option("--max-classes", help="class-wise figures beyond this show a selection"),
        ] = 40,
        top_descriptions: Annotated[
            int, typer.Option("--top-descriptions", help="descriptions listed per class")
        ] = 5,
        max_per_class: Annotated[
            int | None,
            typer.Option("--max-per-class", help="cap on test images per class (default: all)"),
        ] = None,
        reference: Annotated[
            str | None,
            typer.Option(help="method the others are compared with (default: the first run's)"),
        ] = None,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1")] = "auto",
        weights: Annotated[
            str | None, typer.Option("--weights", help="the runs' weights file, if it moved")
        ] = None,
        root: Annotated[
            str | None, typer.Option("--root", help="the runs' dataset folder, if it moved")
        ] = None,
        batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    ) -> None:
        """Write an interpretability report (HTML + PNG) for finished runs."""
        from reprogram.report.explain import explain

        path = explain(
            list(runs),
            out,
            examples=examples,
            max_classes=max_classes,
            top_descriptions=top_descriptions,
            max_per_class=max_per_class,
            device=device,
            batch_size=batch_size,
            reference=reference,
            weights=weights,
            root=root,
            log=None if quiet else lambda message: typer.echo(message, err=True),
        )
        typer.echo(str(path))
