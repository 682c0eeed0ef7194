"""``reprogram descriptions check`` and ``descriptions list``: inspect description files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from reprogram.cli.options import ClassListOpt, PublishedDatasetOpt
from reprogram.text.describe.check import (
    DEFAULT_MIN_VALID,
    DEFAULT_TARGET,
    CheckReport,
    FileReport,
    check_descriptions,
    expected_classes,
)


def register(app: typer.Typer) -> None:
    """Add the ``descriptions`` group (``check``, ``list``) to ``app``."""
    group = typer.Typer(help="Inspect class-description files.", no_args_is_help=True)
    group.command("check")(check_command)
    group.command("list")(list_command)
    app.add_typer(group, name="descriptions")


def _details(report: FileReport, limit: int = 10) -> list[str]:
    def shown(items: list[str]) -> str:
        more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    lines = []
    if report.missing:
        lines.append(f"missing: {shown(report.missing)}")
    for missing, near in report.near_misses.items():
        lines.append(f"'{missing}' is missing but the file has '{near}'")
    if report.too_few:
        lines.append(
            f"too few valid sentences: {shown([f'{c} ({k})' for c, k in report.too_few.items()])}"
        )
    if report.duplicate_keys:
        lines.append(f"class keys repeated in the JSON: {shown(report.duplicate_keys)}")
    if report.extra:
        lines.append(f"not in the class list: {shown(report.extra)}")
    if report.below_target:
        items = [f"{c} ({k})" for c, k in report.below_target.items()]
        lines.append(f"below the target count: {shown(items)}")
    return lines


def print_check_report(report: CheckReport) -> None:
    """One line per file, then the details of what is wrong."""
    for file in report.files:
        problems = file.problems(report.strict)
        warnings = [w for w in file.warnings() if w not in problems]
        status = typer.style("FAIL", fg="red") if problems else typer.style("ok", fg="green")
        summary = "; ".join(problems) if problems else f"{file.classes} classes"
        note = f" (warnings: {'; '.join(warnings)})" if warnings else ""
        typer.echo(f"{status}  {file.path}: {summary}{note}")
        for line in _details(file):
            typer.echo(f"      {line}")
    verdict = "all files pass" if report.ok else "problems found"
    typer.echo(
        f"{verdict} (valid = at least 20 characters; min {report.min_valid} valid per class, "
        f"target {report.target})"
    )


def check_command(
    files: Annotated[list[Path], typer.Argument(help="Description files to check.")],
    dataset: PublishedDatasetOpt = None,
    classes: ClassListOpt = None,
    min_valid: Annotated[
        int, typer.Option("--min-valid", help="Fewer valid sentences than this is a problem.")
    ] = DEFAULT_MIN_VALID,
    target: Annotated[
        int, typer.Option("--target", help="Fewer than this is a warning (m, sampled per class).")
    ] = DEFAULT_TARGET,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as problems.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check description files: missing classes, too few valid sentences, duplicates.

    Exits 1 when a problem is found. Without --dataset/--classes the dataset is taken from
    published-style file names (dtd_cse_1.json -> dtd).
    """
    names = expected_classes(files, dataset, classes)
    report = check_descriptions(files, names, min_valid=min_valid, target=target, strict=strict)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print_check_report(report)
    if not report.ok:
        raise typer.Exit(1)


def list_command(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="One dataset's files (dtd, fgvc, imagenet, …).")
    ] = None,
) -> None:
    """List the description sets packaged with reprogram (DVP and AttrVR releases, MIT)."""
    from reprogram.text.packaged import summary_lines

    for line in summary_lines(dataset):
        typer.echo(line)
