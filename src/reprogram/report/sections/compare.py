"""Several runs side by side: a table of every run, seeds, per-class differences between methods."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reprogram.engine.runs import comparison_table, format_cell, row_name
from reprogram.report import html as h
from reprogram.report import plots
from reprogram.report.common import dataset_name, median_speed, percent, seconds, slug
from reprogram.report.load import RunSummary

RUN_HEADER = [
    "method",
    "dataset",
    "backbone",
    "seed",
    "shots",
    "epochs",
    "prompts",
    "trainable",
    "val acc",
    "test acc",
    "wall time",
    "train img/s",
]


@dataclass
class Difference:
    """Per-class accuracy of ``method`` minus the reference's on one dataset (mean over seeds)."""

    dataset: str
    method: str
    reference: str
    class_names: list[str]
    diff: np.ndarray
    seeds: tuple[int, int]  # runs averaged for the method and for the reference

    @property
    def better(self) -> int:
        return int((self.diff > 1e-9).sum())

    @property
    def worse(self) -> int:
        return int((self.diff < -1e-9).sum())


@dataclass
class ComparisonView:
    summaries: list[RunSummary]
    seed_table: dict | None  # comparison_table's, when some cell has several seeds
    differences: list[Difference] = field(default_factory=list)
    max_classes: int = 40


def differences(summaries: Sequence[RunSummary], reference: str | None) -> list[Difference]:
    """Per dataset: each method's per-class accuracy (mean over seeds) minus the reference's."""
    by_dataset: dict[tuple[str, tuple[str, ...]], dict[str, list[list[float]]]] = {}
    for s in summaries:
        names = tuple(s.results.get("classnames") or ())
        per_class = s.results.get("per_class_accuracy") or {}
        if not names:
            continue
        methods = by_dataset.setdefault((str(s.results.get("dataset")), names), {})
        methods.setdefault(str(s.results.get("method")), []).append(
            [float(per_class.get(n) or 0.0) for n in names]
        )
    found = []
    for (dataset, names), methods in by_dataset.items():
        if len(methods) < 2:
            continue
        base_method = reference if reference in methods else next(iter(methods))
        base = np.mean(methods[base_method], axis=0)
        for method, values in methods.items():
            if method != base_method:
                found.append(
                    Difference(
                        dataset,
                        method,
                        base_method,
                        list(names),
                        np.mean(values, axis=0) - base,
                        (len(values), len(methods[base_method])),
                    )
                )
    return found


def compute_comparison(summaries: list[RunSummary], options) -> ComparisonView:
    table = comparison_table([s.run_dir for s in summaries])
    several = any(len(c["seeds"]) > 1 for row in table["rows"] for c in row["cells"].values())
    return ComparisonView(
        summaries,
        table if several else None,
        differences(summaries, options.reference),
        options.max_classes,
    )


def _run_table(summaries: list[RunSummary]) -> h.Raw:
    rows = []
    for s in summaries:
        r = s.results
        speed = median_speed(s.history)
        rows.append(
            [
                h.Raw(f'<a href="#{s.anchor}">{h.esc(r.get("method"))}</a>'),
                dataset_name(str(r.get("dataset"))),
                (r.get("backbone") or {}).get("arch", "?"),
                r.get("seed"),
                r.get("shots"),
                r.get("epochs"),
                r.get("prompts", 0),
                f"{r.get('trainable_parameters', 0):,}",
                percent(r.get("val_accuracy")),
                percent(r.get("test_accuracy")),
                seconds(r.get("wall_time_s")),
                f"{speed:.0f}" if speed is not None else "—",
            ]
        )
    return h.table(
        RUN_HEADER,
        rows,
        numeric=tuple(range(3, 12)),
        caption="Every run (click a method for its section)",
    )


def _seed_table(table: dict) -> h.Raw:
    datasets = table["datasets"]
    rows = []
    for row in table["rows"]:
        cells = []
        for dataset in datasets:
            cell = row["cells"].get(dataset)
            cells.append(format_cell(cell, wall_time=False))
        rows.append([row_name(row), *cells])
    return h.table(
        ["method", *[dataset_name(d) for d in datasets]],
        rows,
        numeric=tuple(range(1, len(datasets) + 1)),
        caption="Test accuracy (%), mean ± std over seeds",
    )


def _difference_figure(number: int, d: Difference, out_dir: Path, max_classes: int) -> h.Raw:
    name = f"diff-{number}-{slug(d.method)}-vs-{slug(d.reference)}.png"
    shown = dataset_name(d.dataset)
    plots.difference_bars(
        out_dir / name, d.class_names, d.diff, f"{d.method} − {d.reference} on {shown}", max_classes
    )
    seeds = f" (mean over {d.seeds[0]} and {d.seeds[1]} seeds)" if max(d.seeds) > 1 else ""
    unchanged = len(d.class_names) - d.better - d.worse
    return h.figure(
        name,
        f"per-class accuracy difference {d.method} minus {d.reference}",
        f"Per-class test accuracy of {d.method} minus {d.reference} on {shown}{seeds}: "
        f"{d.better} classes better, {d.worse} worse, {unchanged} unchanged; mean "
        f"difference {100 * float(d.diff.mean()):+.1f} points."
        + (" The largest gains and losses are shown." if len(d.class_names) > max_classes else ""),
    )


def render_comparison(view: ComparisonView, out_dir: Path) -> h.Raw:
    body: list[object] = [_run_table(view.summaries)]
    if view.seed_table is not None:
        body.append(_seed_table(view.seed_table))
    body.append(h.tag("h3", "Per-class differences between methods"))
    if not view.differences:
        body.append(
            h.skipped("per-class differences need two methods evaluated on the same dataset")
        )
    else:
        figures = [
            _difference_figure(number, d, out_dir, view.max_classes)
            for number, d in enumerate(view.differences, start=1)
        ]
        body.append(h.Raw(f'<div class="grid">{h.join(figures)}</div>'))
    return h.Raw(f'<section id="compare"><h2>Comparison</h2>{h.join(body)}</section>')
