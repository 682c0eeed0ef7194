"""Per-class test accuracy and the worst classes' confusions, from results.json."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reprogram.report import html as h
from reprogram.report import plots
from reprogram.report.common import Output, percent

ACCURACY_TITLE = "Per-class accuracy"
CONFUSION_TITLE = "Confusions of the worst classes"


def images_per_class(results: dict) -> list[int] | None:
    """Test images per class (the rows of the confusion matrix), or None without one."""
    matrix = results.get("test_confusion")
    if not matrix:
        return None
    return [int(sum(row)) for row in matrix]


@dataclass
class AccuracyView:
    anchor: str
    skipped: str | None = None
    class_names: list[str] | None = None
    accuracy: list[float] | None = None  # per class (0 where results.json has none)
    counts: list[int] | None = None  # test images per class
    overall: float | None = None
    max_classes: int = 40

    @property
    def worst_first(self) -> list[int]:
        return sorted(
            range(len(self.class_names)), key=lambda c: (self.accuracy[c], self.class_names[c])
        )


def compute_accuracy(data) -> AccuracyView:
    view = AccuracyView(f"{data.summary.anchor}-accuracy", max_classes=data.options.max_classes)
    names, accuracy = data.classnames, data.accuracy
    if not names or all(math.isnan(a) for a in accuracy):
        view.skipped = "results.json has no per-class accuracy"
        return view
    view.class_names = names
    view.accuracy = [0.0 if math.isnan(a) else a for a in accuracy]
    view.counts = images_per_class(data.summary.results)
    view.overall = data.summary.results.get("test_accuracy")
    return view


def render_accuracy(view: AccuracyView, out: Output) -> h.Raw:
    if view.skipped is not None:
        return h.section(view.anchor, ACCURACY_TITLE, h.skipped(view.skipped))
    names, values, counts = view.class_names, view.accuracy, view.counts
    plots.accuracy_bars(
        out.path("accuracy.png"),
        names,
        values,
        "Test accuracy per class",
        view.max_classes,
        view.overall,
    )
    caption = "Sorted, best first; the dashed line is the overall test accuracy."
    if len(names) > view.max_classes:
        caption += (
            " Left: every class as a sorted profile; right: the best and worst classes by name."
        )
    table = h.table(
        ["class", "test images", "accuracy"],
        [[names[c], counts[c] if counts else "—", percent(values[c])] for c in view.worst_first],
        numeric=(1, 2),
    )
    return h.section(
        view.anchor,
        ACCURACY_TITLE,
        h.join(
            [
                h.figure(out.src("accuracy.png"), "per-class test accuracy", caption),
                h.details(f"All {len(names)} classes, worst first", table),
            ]
        ),
    )


@dataclass
class ConfusionView:
    anchor: str
    skipped: str | None = None
    full: bool = False  # the whole matrix (few classes), else the worst classes' rows
    label: str = ""
    row_names: list[str] | None = None
    col_names: list[str] | None = None  # may end with "(other classes)"
    counts: np.ndarray | None = None  # rows × columns, image counts
    totals: np.ndarray | None = None  # per row: test images of that class
    pairs: list[tuple[str, str, int, float]] | None = None  # (true, predicted, images, fraction)


def _columns(counts: np.ndarray, rows: list[int], limit: int) -> list[int]:
    """The worst classes plus, for each, the two classes it is most often mistaken for."""
    cols = list(rows)
    for c in rows:
        off = [(counts[c, p], p) for p in range(counts.shape[1]) if p != c and counts[c, p] > 0]
        for _, p in sorted(off, reverse=True)[:2]:
            if p not in cols and len(cols) < limit:
                cols.append(p)
    return cols


def compute_confusion(data, worst: int = 10, columns: int = 16) -> ConfusionView:
    view = ConfusionView(f"{data.summary.anchor}-confusion")
    matrix = data.summary.results.get("test_confusion")
    names = data.classnames
    if not matrix or len(matrix) != len(names):
        view.skipped = "results.json has no test confusion matrix"
        return view
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1)
    present = [c for c in range(len(names)) if totals[c] > 0]
    view.full = len(names) <= min(12, data.options.max_classes)
    if view.full:
        rows, cols = present, list(range(len(names)))
        view.label = "Confusion matrix (all classes)"
    else:
        accuracy = {c: counts[c, c] / totals[c] for c in present}
        rows = sorted(present, key=lambda c: (accuracy[c], names[c]))[:worst]
        cols = _columns(counts, rows, columns)
        view.label = f"Confusions of the {len(rows)} classes with the lowest test accuracy"
    shown = counts[np.ix_(rows, cols)]
    view.col_names = [names[c] for c in cols]
    other = totals[rows] - shown.sum(axis=1)
    if other.any():
        shown = np.concatenate([shown, other[:, None]], axis=1)
        view.col_names.append("(other classes)")
    view.row_names, view.counts, view.totals = [names[r] for r in rows], shown, totals[rows]
    pairs = [
        (int(counts[t, p]), t, p)
        for t in present
        for p in range(len(names))
        if p != t and counts[t, p] > 0
    ]
    pairs.sort(key=lambda item: (-item[0], names[item[1]]))
    view.pairs = [(names[t], names[p], n, n / totals[t]) for n, t, p in pairs[:10]]
    return view


def render_confusion(view: ConfusionView, out: Output) -> h.Raw:
    if view.skipped is not None:
        return h.section(view.anchor, CONFUSION_TITLE, h.skipped(view.skipped))
    plots.confusion(
        out.path("confusion.png"),
        view.counts,
        view.row_names,
        view.col_names,
        view.totals,
        view.label,
    )
    body: list[object] = [
        h.figure(
            out.src("confusion.png"),
            "confusion matrix of the worst classes",
            "Rows: true class; columns: predicted class. Colour: fraction of the true class's "
            "test images; numbers: image counts."
            + (
                " Columns are these classes plus the classes they are most often "
                "mistaken for; the rest are summed in '(other classes)'."
                if not view.full
                else ""
            ),
        )
    ]
    if view.pairs:
        body.append(
            h.table(
                ["true class", "predicted as", "images", "fraction of the true class"],
                [[t, p, n, percent(f)] for t, p, n, f in view.pairs],
                numeric=(2, 3),
                caption="The most frequent confusions",
            )
        )
    return h.section(view.anchor, CONFUSION_TITLE, h.join(body))
