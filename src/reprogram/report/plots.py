"""The report's figures, drawn with matplotlib's object API on Agg canvases (no pyplot, no
global backend change).

Every function takes plain arrays and labels, writes one PNG and returns its path. Figures
grow with the number of rows they show, but callers summarise long class lists first (see
``explain.select_rows``): no figure shows more than a few dozen labelled rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

DPI = 110
LABEL_CHARS = 30
GOOD, BAD, NEUTRAL = "#2b8a3e", "#c92a2a", "#4263eb"
GROUP_COLOURS = (
    "#4263eb",
    "#e8590c",
    "#2b8a3e",
    "#ae3ec9",
    "#f59f00",
    "#0c8599",
    "#c2255c",
    "#5c940d",
    "#1098ad",
    "#862e9c",
)


def short(name: str, limit: int = LABEL_CHARS) -> str:
    """A label that fits beside a plot: long names end in an ellipsis."""
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    figure.patch.set_facecolor("white")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, facecolor="white")
    return path


def image_grid(
    path: Path,
    title: str,
    column_labels: Sequence[str],
    row_labels: Sequence[str],
    cells: Sequence[Sequence[np.ndarray | None]],
) -> Path:
    """Images (H×W×3 floats in [0, 1], all the same size; None leaves a cell blank) in a labelled
    grid, drawn as one montage so that pixels stay sharp and large grids stay cheap."""
    rows, cols = len(cells), max((len(r) for r in cells), default=0)
    sample = next((c for r in cells for c in r if c is not None), None)
    size = sample.shape[0] if sample is not None else 8
    gap = max(2, size // 12)
    montage = np.ones((rows * (size + gap) - gap, cols * (size + gap) - gap, 3))
    for i, row in enumerate(cells):
        for j, image in enumerate(row):
            if image is not None:
                top, left = i * (size + gap), j * (size + gap)
                montage[top : top + size, left : left + size] = np.clip(image[:size, :size], 0, 1)
    cell = 1.6 if cols <= 6 else 1.25
    figure = _figure(cell * cols + 1.6, cell * rows + 0.8)
    ax = figure.subplots()
    ax.imshow(montage, interpolation="nearest")
    centres = [k * (size + gap) + size / 2 - 0.5 for k in range(max(rows, cols))]
    ax.set_xticks(centres[:cols], [short(c, 18) for c in column_labels], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(centres[:rows], [short(r, 22) for r in row_labels], fontsize=9)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=11)
    return _save(figure, path)


def heatmap(
    path: Path,
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    xlabel: str,
    ylabel: str,
    colorbar_label: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    fmt: str = "{:.2f}",
) -> Path:
    """A labelled heatmap; cells are annotated when there are few of them."""
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = matrix.shape
    width = min(
        14.0, max(5.5, 2.8 + 0.7 * cols + 0.06 * max((len(str(s)) for s in row_labels), default=0))
    )
    height = min(18.0, max(2.8, 1.6 + 0.24 * rows))
    figure = _figure(width, height)
    ax = figure.subplots()
    image = ax.imshow(
        matrix, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
    )
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(
        range(cols),
        [short(c, 20) for c in col_labels],
        rotation=30 if cols > 4 else 0,
        ha="right" if cols > 4 else "center",
        fontsize=8,
    )
    ax.set_yticks(range(rows), [short(r) for r in row_labels], fontsize=8 if rows <= 40 else 6)
    if rows * cols <= 300:
        low, high = image.get_clim()
        for i in range(rows):
            for j in range(cols):
                value = matrix[i, j]
                if np.isnan(value):
                    continue
                level = (value - low) / (high - low) if high > low else 0.5
                colour = (
                    "white"
                    if (level < 0.45 if cmap == "viridis" else abs(level - 0.5) > 0.3)
                    else "black"
                )
                ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=ax, label=colorbar_label, shrink=0.8)
    return _save(figure, path)


def prm_heatmap(
    path: Path,
    weights: np.ndarray,
    groups: np.ndarray,
    group_names: Sequence[str],
    row_labels: Sequence[str],
    title: str,
    colorbar_label: str = "PRM weight ω",
) -> Path:
    """omega (rows × M), each row's columns ordered by prompt group then weight.

    When every row has the same group layout (DVP-cse) the groups are marked by lines and
    labels; otherwise (DVP-cls) a second panel shows which cluster each cell belongs to.
    """
    weights, groups = np.asarray(weights, float), np.asarray(groups, int)
    order = np.lexsort((-weights, groups), axis=1)
    w = np.take_along_axis(weights, order, axis=1)
    g = np.take_along_axis(groups, order, axis=1)
    rows, cols = w.shape
    aligned = bool((g == g[:1]).all())
    height = min(18.0, max(3.0, 1.8 + 0.24 * rows))
    width = 12.0 if not aligned else 10.0
    figure = _figure(width, height)
    if aligned:
        ax = figure.subplots()
        axes = [ax]
    else:
        ax, ax_groups = figure.subplots(1, 2, sharey=True, width_ratios=[3, 2])
        axes = [ax, ax_groups]
    image = ax.imshow(
        w,
        aspect="auto",
        cmap="viridis",
        vmin=0,
        vmax=max(float(w.max()), 1e-9),
        interpolation="nearest",
    )
    ax.set_yticks(range(rows), [short(r) for r in row_labels], fontsize=8 if rows <= 40 else 6)
    ax.set_ylabel("class")
    ax.set_xlabel("description (sorted by weight within each group)")
    ax.set_title(title, fontsize=11)
    if aligned:
        edges = [0] + [j for j in range(1, cols) if g[0, j] != g[0, j - 1]] + [cols]
        for edge in edges[1:-1]:
            ax.axvline(edge - 0.5, color="white", linewidth=2)
        ax.set_xticks(
            [(a + b - 1) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)],
            [short(group_names[g[0, a]], 24) for a in edges[:-1]],
            fontsize=9,
        )
    else:
        ax.set_xticks([])
        colours = ListedColormap(
            [GROUP_COLOURS[i % len(GROUP_COLOURS)] for i in range(len(group_names))]
        )
        ax_groups.imshow(
            g,
            aspect="auto",
            cmap=colours,
            vmin=-0.5,
            vmax=len(group_names) - 0.5,
            interpolation="nearest",
        )
        ax_groups.set_xticks([])
        ax_groups.set_title("cluster of each description", fontsize=10)
        handles = [
            Patch(color=GROUP_COLOURS[i % len(GROUP_COLOURS)], label=short(n, 20))
            for i, n in enumerate(group_names)
        ]
        ax_groups.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.02),
            ncol=min(4, len(handles)),
            fontsize=8,
            frameon=False,
        )
    figure.colorbar(image, ax=axes, label=colorbar_label, shrink=0.8)
    return _save(figure, path)


def accuracy_bars(
    path: Path,
    names: Sequence[str],
    accuracy: Sequence[float],
    title: str,
    limit: int = 40,
    overall: float | None = None,
) -> Path:
    """Per-class accuracy sorted best first; beyond ``limit`` classes, all of them as an unlabelled
    sorted profile beside the labelled worst and best ``limit / 2``."""
    values = np.asarray(accuracy, dtype=float) * 100
    order = np.argsort(-values, kind="stable")
    many = len(values) > limit
    if many:
        half = limit // 2
        shown = list(order[:half]) + [-1] + list(order[-half:])
    else:
        shown = list(order)
    height = min(16.0, max(2.6, 1.3 + 0.22 * len(shown)))
    figure = _figure(11.0 if many else 7.5, height)
    if many:
        ax_all, ax = figure.subplots(1, 2, width_ratios=[2, 3])
        ax_all.fill_between(
            np.arange(len(values)), values[order], step="mid", color=NEUTRAL, alpha=0.7
        )
        ax_all.set_xlim(0, len(values) - 1)
        ax_all.set_ylim(0, 100)
        ax_all.set_xlabel(f"class rank (all {len(values)} classes)")
        ax_all.set_ylabel("test accuracy (%)")
        ax_all.set_title("all classes, sorted", fontsize=10)
        if overall is not None:
            ax_all.axhline(overall * 100, color="black", linestyle="--", linewidth=1)
    else:
        ax = figure.subplots()
    positions = np.arange(len(shown))[::-1]
    heights = [values[i] if i >= 0 else 0 for i in shown]
    colours = [GOOD if i >= 0 and values[i] >= (overall or 0) * 100 else BAD for i in shown]
    ax.barh(positions, heights, color=colours, height=0.75)
    labels = [
        short(names[i]) if i >= 0 else f"… {len(values) - 2 * (limit // 2)} classes …"
        for i in shown
    ]
    ax.set_yticks(positions, labels, fontsize=8)
    for y, i in zip(positions, shown, strict=True):
        if i >= 0:
            ax.text(min(values[i] + 1, 92), y, f"{values[i]:.0f}", va="center", fontsize=7)
    ax.set_xlim(0, 100)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title if not many else f"{title}: best and worst {limit // 2}", fontsize=11)
    if overall is not None:
        ax.axvline(
            overall * 100,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"overall {overall:.1%}",
        )
        ax.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def confusion(
    path: Path,
    counts: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_totals: Sequence[int],
    title: str,
) -> Path:
    """Rows: true classes; columns: predicted classes (the last may be 'other'); colour is the
    fraction of the true class's test images, the number is the count."""
    counts = np.asarray(counts, dtype=float)
    totals = np.maximum(np.asarray(row_totals, dtype=float), 1)[:, None]
    fractions = counts / totals
    rows, cols = counts.shape
    figure = _figure(min(14.0, max(5.5, 2.8 + 0.55 * cols)), min(14.0, max(3.0, 1.8 + 0.4 * rows)))
    ax = figure.subplots()
    image = ax.imshow(
        fractions, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest"
    )
    ax.set_xticks(
        range(cols), [short(c, 22) for c in col_labels], rotation=35, ha="right", fontsize=8
    )
    ax.set_yticks(range(rows), [short(r, 22) for r in row_labels], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=11)
    for i in range(rows):
        for j in range(cols):
            if counts[i, j] > 0:
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if fractions[i, j] > 0.5 else "black",
                )
    figure.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
    return _save(figure, path)


def training_curves(
    path: Path, history: Sequence[dict], selected_epoch: int | None, title: str
) -> Path:
    """Loss, and train / validation (/ test) accuracy per epoch; PRM-only epochs shaded."""
    epochs = [row["epoch"] for row in history]
    figure = _figure(10.0, 3.4)
    ax_loss, ax_acc = figure.subplots(1, 2)
    marker = "o" if len(epochs) <= 30 else None
    ax_loss.plot(
        epochs,
        [row.get("loss") for row in history],
        marker=marker,
        color=NEUTRAL,
        label="train loss",
    )
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_title("training loss", fontsize=10)
    for key, label, colour in (
        ("train_acc", "train", NEUTRAL),
        ("val_acc", "validation", GOOD),
        ("test_acc", "test", BAD),
    ):
        points = [(row["epoch"], 100 * row[key]) for row in history if row.get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax_acc.plot(
                xs, ys, marker="o" if len(points) <= 30 else None, color=colour, label=label
            )
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(0, 100)
    ax_acc.set_title("accuracy", fontsize=10)
    for ax in (ax_loss, ax_acc):
        estimate = [row["epoch"] for row in history if row.get("estimate_only")]
        if estimate:
            ax.axvspan(
                min(estimate) - 0.5,
                max(estimate) + 0.5,
                color="#adb5bd",
                alpha=0.3,
                label="PRM only",
            )
        if selected_epoch:
            ax.axvline(selected_epoch, color="black", linestyle=":", linewidth=1, label="selected")
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    return _save(figure, path)


def share_distribution(
    path: Path, class_shares: np.ndarray, names: Sequence[str], title: str
) -> Path:
    """Per prompt, the distribution over classes of its mean share (a box per prompt, a dot per
    class)."""
    class_shares = np.asarray(class_shares, dtype=float)
    count = class_shares.shape[1]
    figure = _figure(max(5.0, 1.6 + 1.1 * count), 3.4)
    ax = figure.subplots()
    ax.boxplot([class_shares[:, p] for p in range(count)], showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)
    for p in range(count):
        jitter = rng.uniform(-0.15, 0.15, len(class_shares))
        ax.scatter(
            p + 1 + jitter,
            class_shares[:, p],
            s=8,
            alpha=0.5,
            color=GROUP_COLOURS[p % len(GROUP_COLOURS)],
        )
    ax.axhline(
        1 / count, color="black", linestyle="--", linewidth=1, label=f"equal split (1/{count})"
    )
    ax.set_xticks(range(1, count + 1), [short(n, 18) for n in names], fontsize=9)
    ax.set_ylabel("share of the class logit")
    ax.set_xlabel("prompt")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8)
    return _save(figure, path)


def difference_bars(
    path: Path, names: Sequence[str], differences: Sequence[float], title: str, limit: int = 40
) -> Path:
    """Per-class accuracy differences in percentage points, largest gain first; beyond ``limit``
    classes the largest gains and losses."""
    values = np.asarray(differences, dtype=float) * 100
    order = np.argsort(-values, kind="stable")
    if len(values) > limit:
        half = limit // 2
        shown = list(order[:half]) + [-1] + list(order[-half:])
    else:
        shown = list(order)
    figure = _figure(7.5, min(16.0, max(2.6, 1.3 + 0.22 * len(shown))))
    ax = figure.subplots()
    positions = np.arange(len(shown))[::-1]
    heights = [values[i] if i >= 0 else 0 for i in shown]
    colours = [GOOD if h > 0 else BAD if h < 0 else "#868e96" for h in heights]
    ax.barh(positions, heights, color=colours, height=0.75)
    labels = [
        short(names[i]) if i >= 0 else f"… {len(values) - 2 * (limit // 2)} classes …"
        for i in shown
    ]
    ax.set_yticks(positions, labels, fontsize=8)
    ax.axvline(0, color="black", linewidth=1)
    bound = max(5.0, float(np.abs(values).max()) * 1.1 if len(values) else 5.0)
    ax.set_xlim(-bound, bound)
    ax.set_xlabel("difference in test accuracy (percentage points)")
    ax.set_title(title, fontsize=11)
    return _save(figure, path)


def seed_bars(
    path: Path,
    title: str,
    datasets: Sequence[str],
    rows: Sequence[dict],
) -> Path:
    """One panel per dataset: a bar per row (mean over seeds, ± std), each seed as a dot (a
    flagged seed as a red cross) and the published number as a black bar across (where there
    is one). Each row: ``label``, and per dataset (None where the row has no cell) ``means``,
    ``stds``, ``seeds`` (values), ``flagged`` (bools) and ``published``."""
    columns = min(4, max(1, len(datasets)))
    lines = -(-len(datasets) // columns)
    width = max(2.4, 0.55 * len(rows) + 1.2)
    figure = _figure(width * columns + 0.6, 2.9 * lines + 0.6)
    axes = np.atleast_1d(figure.subplots(lines, columns, squeeze=False)).ravel()
    positions = np.arange(len(rows))
    rng = np.random.default_rng(0)  # the dots' horizontal jitter only
    for k, (ax, dataset) in enumerate(zip(axes, datasets, strict=False)):
        for i, row in enumerate(rows):
            mean = row["means"][k]
            if mean is None:
                continue
            colour = GROUP_COLOURS[i % len(GROUP_COLOURS)]
            ax.bar(
                i,
                mean,
                yerr=row["stds"][k] or 0,
                color=colour,
                alpha=0.55,
                capsize=3,
                error_kw={"ecolor": "#495057"},
            )
            values = np.asarray(row["seeds"][k], dtype=float)
            flagged = np.asarray(row["flagged"][k], dtype=bool)
            x = i + rng.uniform(-0.18, 0.18, size=len(values))
            ax.scatter(x[~flagged], values[~flagged], s=14, color="black", zorder=3)
            ax.scatter(x[flagged], values[flagged], s=60, color=BAD, marker="x", zorder=4)
            if row["published"][k] is not None:
                ax.hlines(row["published"][k], i - 0.42, i + 0.42, color="black", linewidth=2)
        ax.set_title(short(dataset), fontsize=10)
        ax.set_xticks(positions, [short(r["label"], 20) for r in rows], rotation=45, ha="right")
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    marks = [
        Line2D([], [], color="black", marker="o", linestyle="", markersize=4, label="seed"),
        Line2D([], [], color=BAD, marker="x", linestyle="", label="flagged seed"),
        Line2D([], [], color="black", linewidth=2, label="published"),
    ]
    figure.legend(handles=marks, loc="outside lower center", ncols=3, fontsize=8)
    figure.suptitle(title, fontsize=11)
    return _save(figure, path)


__all__ = [
    "accuracy_bars",
    "confusion",
    "difference_bars",
    "heatmap",
    "prm_heatmap",
    "seed_bars",
    "image_grid",
    "share_distribution",
    "short",
    "training_curves",
]
