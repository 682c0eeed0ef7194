"""A trained head's inter-class matrix E (RVP: logits = f·(I + E)): what it pushes apart, and how
much it changes.

Shown for heads that expose an E (:func:`reprogram.report.head_maths.inter_matrix`). The numbers
are RVP's own analyses of E (its appendix): on the test images, the share of predictions E changes
and the mean relative correction ‖f·E‖/‖f‖; E's stable rank (and under a permutation null) and
diagonal fraction; r90/C of the class prototypes. Definitions in
:mod:`reprogram.report.head_maths`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from reprogram.report import html as h
from reprogram.report import plots
from reprogram.report.common import Output, percent, write_csv
from reprogram.report.head_maths import (
    Effect,
    Pair,
    class_prototypes,
    diagonal_fraction,
    inter_matrix,
    mass_rank,
    null_draws,
    pair_confusions,
    permuted_stable_rank,
    stable_rank,
    strongest_pairs,
)
from reprogram.report.load import RunData
from reprogram.storage.files import atomic_write_text

TITLE = "Inter-class matrix E (trained head)"
PAIRS = 10  # strongest off-diagonal entries listed
CSV = "inter-class.csv"
JSON = "inter-class.json"
# RVP's analysis of E on Stanford Cars, ViT-B/16 (the paper's numbers, for scale).
PAPER_CARS = {
    "changed": "36.2 %",
    "mean_correction": "0.456",
    "stable_rank": "15.6 (null 50.1)",
    "diagonal_fraction": "0.075",
}

READING = (
    "logit[j] = f[j] + Σ_i f[i]·E[i, j], where f is the base logit (each class's weighted "
    "description scores). Row i says how class i's base logit feeds the other classes, column j "
    "what reaches class j. With CLIP, whose image–text cosines are positive, f is positive and "
    "the sign of E[i, j] is the sign of its effect: a negative E[i, j] lowers class j's logit "
    "when the image looks like class i (f[i] high) — the head learned to push j away from i, "
    "typically a pair the base logits confuse; a positive E[i, j] lifts j along with i. E[i, j] "
    "and E[j, i] are separate entries: a push need not be mutual. (Where f[i] is negative, e.g. "
    "with random weights, the effect of E[i, j] has the opposite sign.)"
)


@dataclass(frozen=True)
class InterStatistics:
    """E on its own and the texts' prototypes (no images needed)."""

    classes: int
    frobenius_norm: float
    stable_rank: float  # NaN when E = 0
    permuted_stable_rank: float  # mean over null_draws(C) entry permutations
    diagonal_fraction: float  # NaN when E = 0
    r90: int
    r90_over_c: float


@dataclass(frozen=True)
class PairRow:
    pair: Pair
    row_name: str
    column_name: str
    confusions_without_e: int | None  # test images of either class predicted as the other
    confusions_with_e: int | None


@dataclass
class InterView:
    anchor: str
    matrix: np.ndarray  # C×C
    class_names: list[str]
    statistics: InterStatistics
    pairs: list[PairRow]
    effect: Effect | None
    effect_reason: str | None  # why there is no effect (no test images)
    shown: list[int]  # classes in the heatmap, in class order
    selection: str | None


def compute_statistics(inter: torch.Tensor, text_features: torch.Tensor) -> InterStatistics:
    classes = inter.shape[0]
    rank = mass_rank(class_prototypes(text_features))
    return InterStatistics(
        classes=classes,
        frobenius_norm=float(inter.double().norm()),
        stable_rank=stable_rank(inter),
        permuted_stable_rank=permuted_stable_rank(inter, null_draws(classes)),
        diagonal_fraction=diagonal_fraction(inter),
        r90=rank,
        r90_over_c=rank / classes,
    )


def heatmap_classes(pairs: list[Pair], classes: int, limit: int) -> tuple[list[int], str | None]:
    """Every class, or those of the strongest pairs (at most ``limit``; the first ``limit``
    classes when E has no off-diagonal entry)."""
    if classes <= limit:
        return list(range(classes)), None
    shown: list[int] = []
    for pair in pairs:
        for c in (pair.row, pair.column):
            if c not in shown and len(shown) < limit:
                shown.append(c)
    if not shown:
        return list(range(limit)), f"the first {limit} classes of {classes}"
    return sorted(shown), f"the {len(shown)} classes of the strongest pairs, of {classes}"


def compute_inter(data: RunData) -> InterView | None:
    """E of the run's head, or None when there is no model or its aggregator has no E."""
    model = data.model
    inter = inter_matrix(model.aggregator) if model is not None else None
    if inter is None:
        return None
    names = list(data.classnames)
    pairs = strongest_pairs(inter, PAIRS)
    passed = data.inter_class
    rows = []
    for pair in pairs:
        counts: tuple[int | None, int | None] = (None, None)
        if passed is not None:
            labels = passed.labels
            counts = tuple(
                pair_confusions(labels, predicted, pair.row, pair.column)
                for predicted in (passed.base_predictions, passed.predictions)
            )
        rows.append(PairRow(pair, names[pair.row], names[pair.column], *counts))
    shown, selection = heatmap_classes(pairs, len(names), data.options.max_classes)
    return InterView(
        anchor=f"{data.summary.anchor}-inter",
        matrix=inter.numpy(),
        class_names=names,
        statistics=compute_statistics(inter, model.text_features.cpu()),
        pairs=rows,
        effect=passed.effect() if passed is not None else None,
        effect_reason=None if passed is not None else data.no_images_reason(),
        shown=shown,
        selection=selection,
    )


def _number(value: float, digits: int = 3) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def _finite(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def as_json(view: InterView) -> dict:
    """The section's numbers as written to ``inter-class.json`` (NaN as null)."""
    effect = {k: _finite(v) for k, v in asdict(view.effect).items()} if view.effect else None
    return {
        "statistics": {k: _finite(v) for k, v in asdict(view.statistics).items()},
        "effect": effect,
        "pairs": [
            {
                "row": row.row_name,
                "column": row.column_name,
                "value": row.pair.value,
                "confusions_without_e": row.confusions_without_e,
                "confusions_with_e": row.confusions_with_e,
            }
            for row in view.pairs
        ],
    }


def _statistics_table(view: InterView) -> h.Raw:
    stats, effect = view.statistics, view.effect
    rows: list[list[object]] = []
    if effect is not None:
        rows += [
            [
                "predictions E changes (argmax f ≠ argmax f·(I + E))",
                f"{percent(effect.changed)} of {effect.images} test images "
                f"({effect.fixed} wrong → right, {effect.broken} right → wrong)",
                PAPER_CARS["changed"],
            ],
            [
                "test accuracy without E → with E",
                f"{percent(effect.base_accuracy)} → {percent(effect.accuracy)}",
                "",
            ],
            [
                "mean relative correction ‖f·E‖ / ‖f‖",
                _number(effect.mean_correction),
                PAPER_CARS["mean_correction"],
            ],
        ]
    rows += [
        [
            "stable rank ‖E‖_F² / ‖E‖_2²",
            f"{_number(stats.stable_rank, 2)} of C = {stats.classes} (entries permuted: "
            f"{_number(stats.permuted_stable_rank, 2)})",
            PAPER_CARS["stable_rank"],
        ],
        [
            "diagonal fraction ‖diag E‖_F / ‖E‖_F",
            _number(stats.diagonal_fraction),
            PAPER_CARS["diagonal_fraction"],
        ],
        ["‖E‖_F", _number(stats.frobenius_norm, 4), ""],
        [
            "r90 / C of the class prototypes",
            f"{_number(stats.r90_over_c)} ({stats.r90} of {stats.classes} eigenvalues)",
            "",
        ],
    ]
    return h.table(["", "this run", "RVP paper, Stanford Cars"], rows)


def _pairs_table(view: InterView) -> h.Raw:
    rows = []
    for row in view.pairs:
        effect = "pushes down" if row.pair.value < 0 else "lifts"
        rows.append(
            [
                row.row_name,
                row.column_name,
                f"{row.pair.value:+.4f}",
                f"a high f[{row.row_name}] {effect} {row.column_name}",
                "—" if row.confusions_without_e is None else row.confusions_without_e,
                "—" if row.confusions_with_e is None else row.confusions_with_e,
            ]
        )
    return h.table(
        ["i (base logit read)", "j (logit moved)", "E[i, j]", "reading", "confused without E",
         "with E"],
        rows,
        numeric=(2, 4, 5),
    )  # fmt: skip


def _write_files(view: InterView, out: Output) -> None:
    header = ["E[i, j]: row i, column j", *view.class_names]
    write_csv(
        out.path(CSV),
        header,
        [[name, *(f"{v:.6g}" for v in view.matrix[i])] for i, name in enumerate(view.class_names)],
    )
    atomic_write_text(out.path(JSON), json.dumps(as_json(view), indent=2) + "\n")


def render_inter(view: InterView, out: Output) -> h.Raw:
    _write_files(view, out)
    body: list[object] = [
        h.paragraph(READING),
        h.paragraph("What E does and how it is shaped:"),
        _statistics_table(view),
    ]
    if view.effect is None:
        body.append(h.skipped(f"the effect on the test predictions: {view.effect_reason}"))
    body.append(
        h.note(
            "Share changed and relative correction: over the test images the report used. "
            "Stable rank: 1 when E is rank one, C when its singular values are equal; the "
            "permuted value keeps E's entries and shuffles their places, so a much lower stable "
            "rank than that says E's structure is low-rank, not its values. Diagonal fraction "
            "near 0: E mostly moves other classes' logits (inter-class), not a class's own. "
            "r90/C: the share of the C eigenvalues of the class prototypes' Gram matrix needed "
            "for 90 % of its trace (prototype: the mean of a class's normalised description "
            "embeddings); the paper finds larger gains from E where r90/C is small (Spearman "
            "−0.53 over 11 datasets). Paper column: RVP's published analysis, for scale."
        )
    )
    if view.pairs:
        body.append(
            h.paragraph(
                f"The {len(view.pairs)} strongest off-diagonal entries (largest |E[i, j]|), with "
                "the test confusions between the two classes (images of either predicted as the "
                "other) without and with E:"
            )
        )
        body.append(_pairs_table(view))
    else:
        body.append(h.paragraph("E has no non-zero off-diagonal entry: no class moves another."))
    shown = view.shown
    sub = view.matrix[np.ix_(shown, shown)]
    scale = max(float(np.abs(sub).max()) if sub.size else 0.0, 1e-9)
    names = [view.class_names[c] for c in shown]
    plots.heatmap(
        out.path("inter-class.png"),
        sub,
        names,
        names,
        "E: how row i's base logit moves column j's logit",
        "class j (logit moved)",
        "class i (base logit read)",
        "E[i, j] (blue: pushes down, red: lifts)",
        cmap="RdBu_r",
        vmin=-scale,
        vmax=scale,
        fmt="{:.2g}",
    )
    body.append(
        h.figure(
            out.src("inter-class.png"),
            "E heatmap",
            "E, diverging colours around 0." + (f" Classes: {view.selection}." if view.selection
                                                 else ""),
        )
    )  # fmt: skip
    body.append(
        h.paragraph(
            h.Raw(
                f'E as a table: <a href="{h.esc(out.src(CSV))}">{CSV}</a>; these numbers: '
                f'<a href="{h.esc(out.src(JSON))}">{JSON}</a>.'
            )
        )
    )
    return h.section(view.anchor, TITLE, h.join(body))


__all__ = [
    "CSV",
    "JSON",
    "InterStatistics",
    "InterView",
    "as_json",
    "compute_inter",
    "compute_statistics",
    "heatmap_classes",
    "render_inter",
]
