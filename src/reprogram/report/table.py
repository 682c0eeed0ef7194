"""The table users publish: methods × datasets, mean ± std over seeds, beside the published numbers.

``build_table(run_dirs)`` pools only like runs (the engine's :func:`comparison_table`), one block
per backbone; each cell gets its published number (:mod:`reprogram.report.published`) and the
difference, and each seed is checked by :func:`flag_seeds`. ``write_table`` writes table.md,
table.csv, table.json and one figure per backbone; ``make_table`` does it all from folders.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reprogram.engine.checkpoint import read_results
from reprogram.engine.runs import comparison_table, find_runs, run_identity
from reprogram.errors import ReprogramError
from reprogram.report.common import dataset_name, slug
from reprogram.report.published import published_average, published_backbone, published_cell
from reprogram.storage.files import atomic_write_text, ensure_dir

ZERO_SHOT = "zero-shot"  # the method whose accuracy a trained seed is checked against


@dataclass
class TableOptions:
    """When a seed is flagged (see :func:`flag_seeds`); all in percentage points but the first."""

    outlier_std: float = 3.0  # a seed this many stds of the other seeds from their mean
    min_spread: float = 2.0  # the other seeds' std counts as at least this
    zero_shot_margin: float = 3.0  # below zero-shot while another seed beats it by this


@dataclass
class Seed:
    seed: int
    accuracy: float  # test accuracy, %
    run: str
    flags: list[str] = field(default_factory=list)


@dataclass
class Cell:
    dataset: str
    mean: float
    std: float | None  # None for one seed
    n: int
    shots: int | None
    seeds: list[Seed]
    zero_shot: float | None = None  # of the same dataset and backbone weights, where run
    published: float | None = None
    difference: float | None = None  # mean − published
    source: str | None = None

    @property
    def flagged(self) -> list[Seed]:
        return [s for s in self.seeds if s.flags]


@dataclass
class Row:
    method: str
    variant: str  # the settings that tell this row from another of the same method
    cells: dict[str, Cell]
    average: float | None = None  # over every dataset of the block (None if one is missing)
    published_average: float | None = None
    average_difference: float | None = None
    average_source: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method} [{self.variant}]" if self.variant else self.method


@dataclass
class Block:
    """The rows of one backbone."""

    backbone: str  # the published name where matched, else the run's architecture
    published_backbone: str | None
    datasets: list[str]
    rows: list[Row]


@dataclass
class ResultsTable:
    blocks: list[Block]
    options: TableOptions

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def flag_seeds(
    values: Sequence[float],
    zero_shot: float | None = None,
    options: TableOptions | None = None,
) -> list[list[str]]:
    """Why each seed (test accuracies in %) looks collapsed, [] when it does not:

    * far from the others: more than ``outlier_std`` × the std of the other seeds (counted as at
      least ``min_spread``) from their mean; needs at least two other seeds;
    * below zero-shot: under the zero-shot accuracy of the same dataset and backbone while another
      seed beats zero-shot by ``zero_shot_margin`` or more (training helped there, not here).
    """
    options = options or TableOptions()
    flags: list[list[str]] = []
    for i, value in enumerate(values):
        rest = [v for j, v in enumerate(values) if j != i]
        found = []
        if len(rest) >= 2:
            mean, std = statistics.fmean(rest), statistics.stdev(rest)
            if abs(value - mean) > options.outlier_std * max(std, options.min_spread):
                found.append(f"far from the other seeds ({mean:.1f} ± {std:.1f})")
        if zero_shot is not None and value < zero_shot and rest:
            best = max(rest)
            if best >= zero_shot + options.zero_shot_margin:
                found.append(
                    f"below zero-shot ({zero_shot:.1f}) where another seed reaches {best:.1f}"
                )
        flags.append(found)
    return flags


def _trainable(method: str) -> bool:
    from reprogram.model.methods import get_recipe

    try:
        return get_recipe(method).trainable
    except ReprogramError:  # a method of another installation: assume it trains
        return True


def _zero_shot_accuracies(results: dict[str, dict]) -> dict[tuple[str, str], float]:
    """Mean zero-shot test accuracy (%) per (dataset, backbone fingerprint)."""
    found: dict[tuple[str, str], list[float]] = {}
    for r in results.values():
        if r.get("method") == ZERO_SHOT:
            key = (str(r.get("dataset")), str((r.get("backbone") or {}).get("fingerprint")))
            found.setdefault(key, []).append(100 * float(r["test_accuracy"]))
    return {k: statistics.fmean(v) for k, v in found.items()}


def _block_label(results: dict[str, Any]) -> str:
    return published_backbone(results.get("backbone")) or str(
        (results.get("backbone") or {}).get("arch") or "?"
    )


def build_table(
    run_dirs: Sequence[str | Path], options: TableOptions | None = None
) -> ResultsTable:
    """The table of finished runs: one block per backbone, rows of like runs, published numbers."""
    options = options or TableOptions()
    results = {str(Path(d)): read_results(d) for d in run_dirs}
    zero_shot = _zero_shot_accuracies(results)
    by_block: dict[str, list[Path]] = {}
    for run, r in results.items():
        by_block.setdefault(_block_label(r), []).append(Path(run))
    blocks = []
    for label, runs in by_block.items():
        published = published_backbone(results[str(runs[0])].get("backbone"))
        compared = comparison_table(runs)
        rows = [
            _row(method, variant, cells, results, zero_shot, published, options)
            for (method, variant), cells in _rows_by_settings(compared, results).items()
        ]
        block = Block(label, published, compared["datasets"], rows)
        for row in rows:
            _average(row, block)
        blocks.append(block)
    return ResultsTable(blocks, options)


def _text(value: Any) -> str:
    """A setting's value in a row label (paths by file name)."""
    if isinstance(value, list):
        value = [Path(v).name if isinstance(v, str) and "/" in v else v for v in value]
    if isinstance(value, str):
        return Path(value).name if "/" in value else value
    return json.dumps(value, sort_keys=True, default=str)


def _rows_by_settings(
    compared: dict[str, Any], results: dict[str, dict]
) -> dict[tuple[str, str], dict[str, dict]]:
    """The comparison's cells as rows (method, variant) -> dataset -> cell, where a method's rows
    differ by the settings that tell its like-run groups apart on some dataset, so that the runs
    of one setting share a row over every dataset (``compare`` labels them per dataset)."""
    groups = []
    for row in compared["rows"]:
        for dataset, cell in row["cells"].items():
            run = cell["runs"][0]
            identity = run_identity(Path(run), results[run])
            groups.append((row["method"], row["variant"], dataset, identity, cell))
    per_cell: dict[tuple[str, str], list[dict]] = {}
    for method, _, dataset, identity, _ in groups:
        per_cell.setdefault((method, dataset), []).append(identity)
    varying: dict[str, set[str]] = {}
    for (method, _), identities in per_cell.items():
        keys = varying.setdefault(method, set())
        for key in {k for identity in identities for k in identity}:
            if len({_text(i.get(key)) for i in identities}) > 1:
                keys.add(key)
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for method, variant, dataset, identity, cell in groups:
        label = ", ".join(f"{k}={_text(identity.get(k))}" for k in sorted(varying[method]))
        if dataset in rows.get((method, label), {}):  # settings that read alike: compare's label
            label = variant
        rows.setdefault((method, label), {})[dataset] = cell
    return rows


def _row(
    method: str,
    variant: str,
    compared: dict[str, dict],
    results: dict[str, dict],
    zero_shot: dict[tuple[str, str], float],
    published: str | None,
    options: TableOptions,
) -> Row:
    trainable = _trainable(method)
    row = Row(method, variant, {})
    for dataset, summary in compared.items():
        runs = [results[run] for run in summary["runs"]]
        seeds = [
            Seed(int(r["seed"]), 100 * float(r["test_accuracy"]), run)
            for run, r in zip(summary["runs"], runs, strict=True)
        ]
        fingerprint = str((runs[0].get("backbone") or {}).get("fingerprint"))
        zs = zero_shot.get((dataset, fingerprint)) if trainable else None
        for seed, flags in zip(
            seeds, flag_seeds([s.accuracy for s in seeds], zs, options), strict=True
        ):
            seed.flags = flags
        shots = runs[0].get("shots")
        cell = Cell(dataset, summary["mean"], summary["std"], summary["n"], shots, seeds, zs)
        match = published_cell(method, dataset, published, shots)
        if match is not None:
            cell.published, cell.source = match.value, match.row.citation
            cell.difference = cell.mean - match.value
        row.cells[dataset] = cell
    return row


def _average(row: Row, block: Block) -> None:
    """The row's mean over every dataset of its block, and the published one over the same."""
    if not block.datasets or any(d not in row.cells for d in block.datasets):
        return
    row.average = statistics.fmean(row.cells[d].mean for d in block.datasets)
    shots = {row.cells[d].shots for d in block.datasets}
    if len(shots) == 1:
        match = published_average(row.method, block.datasets, block.published_backbone, *shots)
        if match is not None:
            row.published_average, row.average_source = match.value, match.row.citation
            row.average_difference = row.average - match.value


def _signed(value: float) -> str:
    """``+0.4``, ``−1.2`` (a typographic minus), ``+0.0`` for what rounds to zero."""
    text = f"{value:+.1f}"
    return "+0.0" if text == "-0.0" else text.replace("-", "−")


def _beside(value: float | None, difference: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ({_signed(difference or 0.0)})"


def format_cell(cell: Cell | None) -> str:
    """``65.0 ± 1.0 (n=3) · 65.5 (−0.5)``: ours, then the published number and the difference;
    ``⚠`` after n when a seed is flagged."""
    if cell is None:
        return "—"
    spread = f" ± {cell.std:.1f}" if cell.std is not None else ""
    mark = " ⚠" if cell.flagged else ""
    return (
        f"{cell.mean:.1f}{spread} (n={cell.n}){mark} · {_beside(cell.published, cell.difference)}"
    )


def _format_average(row: Row) -> str:
    if row.average is None:
        return "—"
    return f"{row.average:.1f} · {_beside(row.published_average, row.average_difference)}"


def table_markdown(table: ResultsTable) -> str:
    """The table as Markdown: one section per backbone, flagged seeds and sources below it."""
    lines = [
        "Test accuracy (%): ours, mean ± std over seeds (n) · published (ours − published); "
        "— where nothing is published for that method, dataset, backbone and shots. "
        "⚠ marks a cell with a flagged seed.",
    ]
    for block in table.blocks:
        names = [dataset_name(d) for d in block.datasets]
        matched = "" if block.published_backbone else " (no published rows for this backbone)"
        lines += ["", f"## {block.backbone}{matched}", ""]
        lines.append("| method | " + " | ".join(names) + f" | average ({len(names)}) |")
        lines.append("|---|" + "---|" * (len(names) + 1))
        for row in block.rows:
            cells = [format_cell(row.cells.get(d)) for d in block.datasets]
            lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {_format_average(row)} |")
        flagged = [
            f"- {row.label} on {dataset_name(cell.dataset)}, seed {seed.seed}: "
            f"{seed.accuracy:.1f} — {'; '.join(seed.flags)} ({seed.run})"
            for row in block.rows
            for cell in row.cells.values()
            for seed in cell.flagged
        ]
        if flagged:
            lines += ["", "Flagged seeds:", *flagged]
        sources = sorted(
            {c.source for r in block.rows for c in r.cells.values() if c.source}
            | {r.average_source for r in block.rows if r.average_source}
        )
        if sources:
            lines += ["", "Published numbers:", *[f"- {s}" for s in sources]]
    return "\n".join(lines) + "\n"


CSV_HEADER = [
    "backbone",
    "published_backbone",
    "method",
    "variant",
    "dataset",
    "shots",
    "n",
    "seeds",
    "mean",
    "std",
    "published",
    "difference",
    "flagged_seeds",
    "source",
]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table_csv(table: ResultsTable) -> str:
    """One line per cell and one per row average (``dataset`` = ``average``)."""
    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for block in table.blocks:
        for row in block.rows:
            head = [block.backbone, block.published_backbone or "", row.method, row.variant]
            for dataset in block.datasets:
                cell = row.cells.get(dataset)
                if cell is None:
                    continue
                writer.writerow(
                    [
                        *head,
                        dataset,
                        "" if cell.shots is None else cell.shots,
                        cell.n,
                        " ".join(str(s.seed) for s in cell.seeds),
                        _number(cell.mean),
                        _number(cell.std),
                        _number(cell.published),
                        _number(cell.difference),
                        " ".join(str(s.seed) for s in cell.flagged),
                        cell.source or "",
                    ]
                )
            if row.average is not None:
                average = [_number(row.average), "", _number(row.published_average)]
                writer.writerow(
                    [*head, "average", "", "", "", *average, _number(row.average_difference)]
                    + ["", row.average_source or ""]
                )
    return handle.getvalue()


def _figure(block: Block, path: Path) -> Path:
    from reprogram.report import plots

    rows = []
    for row in block.rows:
        cells = [row.cells.get(d) for d in block.datasets]
        rows.append(
            {
                "label": row.label,
                "means": [c.mean if c else None for c in cells],
                "stds": [c.std if c else None for c in cells],
                "seeds": [[s.accuracy for s in c.seeds] if c else [] for c in cells],
                "flagged": [[bool(s.flags) for s in c.seeds] if c else [] for c in cells],
                "published": [c.published if c else None for c in cells],
            }
        )
    title = f"Test accuracy per dataset, {block.backbone}: bars mean ± std over seeds"
    return plots.seed_bars(path, title, [dataset_name(d) for d in block.datasets], rows)


def write_table(table: ResultsTable, out_dir: str | Path) -> list[Path]:
    """table.md, table.csv, table.json and ``table-<backbone>.png`` per block, in ``out_dir``."""
    out = ensure_dir(out_dir, "--out")
    written = [
        atomic_write_text(out / "table.md", table_markdown(table)),
        atomic_write_text(out / "table.csv", table_csv(table)),
        atomic_write_text(out / "table.json", json.dumps(table.to_dict(), indent=1) + "\n"),
    ]
    for block in table.blocks:
        written.append(_figure(block, out / f"table-{slug(block.backbone)}.png"))
    return written


def make_table(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    options: TableOptions | None = None,
) -> tuple[ResultsTable, list[Path]]:
    """The table of the finished runs under ``paths``, written to ``out_dir`` when given."""
    table = build_table(find_runs(list(paths)), options)
    return table, write_table(table, out_dir) if out_dir is not None else []


__all__ = [
    "Block",
    "Cell",
    "ResultsTable",
    "Row",
    "Seed",
    "TableOptions",
    "build_table",
    "flag_seeds",
    "format_cell",
    "make_table",
    "table_csv",
    "table_markdown",
    "write_table",
]
