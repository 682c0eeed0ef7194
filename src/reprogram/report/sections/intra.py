"""A trained head's intra-class weights P̃ (RVP's softmax rows): the analogue of the PRM view.

Shown for heads that expose a trained P (:func:`reprogram.report.head_maths.intra_weights`), in
place of the PRM section; heads without P (the uniform average, a dense head, a linear probe)
keep the PRM section's "no PRM" view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from reprogram.model.attribution import DescriptionRank, prompt_name
from reprogram.report import html as h
from reprogram.report import plots
from reprogram.report.common import Output, select_rows, write_csv
from reprogram.report.head_maths import effective_counts, intra_weights, rank_descriptions
from reprogram.report.load import RunData
from reprogram.report.sections.prm import DescriptionTable, render_description_table

TITLE = "Intra-class weights P̃ (trained head)"
CSV = "intra-weights.csv"
CSV_HEADER = ["class", "index", "group", "p_tilde", "mean_contribution", "text"]


@dataclass
class IntraView:
    anchor: str
    weights: np.ndarray  # C×M, P̃ (rows sum to 1)
    effective: np.ndarray  # C, exp(entropy) of each row
    class_names: list[str]
    rows: list[int]  # classes shown in the heatmap, in class order
    selection: str | None  # why only some classes are shown
    groups: np.ndarray  # C×M, the prompt scoring each description
    group_names: list[str]
    texts: list[list[str]]
    descriptions: DescriptionTable  # each class's top descriptions by P̃
    means: np.ndarray | None  # C×M mean contribution on the test images (None without images)
    top: int = 5

    @property
    def per_class(self) -> int:
        return self.weights.shape[1]


def _ranks(
    weights: torch.Tensor, means: torch.Tensor | None, texts, groups, names, count: int
) -> list[list[DescriptionRank]]:
    ranks = []
    for c in range(weights.shape[0]):
        row_means = means[c].tolist() if means is not None else None
        order = rank_descriptions(weights[c].tolist(), row_means, count)
        ranks.append(
            [
                DescriptionRank(
                    j,
                    texts[c][j],
                    prompt_name(names, int(groups[c, j])),
                    float(weights[c, j]),
                    row_means[j] if row_means is not None else None,
                )
                for j in order
            ]
        )
    return ranks


def compute_intra(data: RunData) -> IntraView | None:
    """P̃ of the run's head, or None when there is no model or its aggregator has no trained P."""
    model = data.model
    weights = intra_weights(model.aggregator) if model is not None else None
    if weights is None:
        return None
    attribution = data.attribution
    means = attribution.description_means if attribution is not None else None
    groups = model.bank.groups.cpu().numpy()
    names = list(model.bank.group_names)
    keys = [-k if not math.isnan(k) else 0.0 for k in data.accuracy]
    rows, limited = select_rows(keys, data.options.max_classes)
    selection = (
        f"{limited}: the {len(rows) // 2} with the lowest and the {len(rows) // 2} with the "
        "highest test accuracy"
        if limited
        else None
    )
    count = data.options.top_descriptions
    ranks = _ranks(weights, means, model.bank.texts, groups, names, count)
    return IntraView(
        anchor=f"{data.summary.anchor}-intra",
        weights=weights.numpy(),
        effective=effective_counts(weights).numpy(),
        class_names=list(data.classnames),
        rows=sorted(rows),
        selection=selection,
        groups=groups,
        group_names=names,
        texts=[list(t) for t in model.bank.texts],
        descriptions=DescriptionTable(
            list(zip(data.classnames, ranks, strict=True)),
            len(data.classnames) > data.options.max_classes,
        ),
        means=means.numpy() if means is not None else None,
        top=count,
    )


def _csv_rows(view: IntraView) -> list[list[object]]:
    rows = []
    for c, name in enumerate(view.class_names):
        for j, text in enumerate(view.texts[c]):
            rows.append(
                [
                    name,
                    j,
                    prompt_name(view.group_names, int(view.groups[c, j])),
                    f"{float(view.weights[c, j]):.6f}",
                    f"{float(view.means[c, j]):.6f}" if view.means is not None else "",
                    text,
                ]
            )
    return rows


def _hover(view: IntraView, order: np.ndarray) -> list[list[str]]:
    return [
        [
            f"{view.class_names[r]} · {prompt_name(view.group_names, view.groups[r, j])} · "
            f"P̃ = {view.weights[r, j]:.3f}\n{view.texts[r][j]}"
            for j in order[r]
        ]
        for r in view.rows
    ]


def render_intra(view: IntraView, out: Output) -> h.Raw:
    rows, selection, m = view.rows, view.selection, view.per_class
    names = [view.class_names[r] for r in rows]
    effective = view.effective
    body: list[object] = [
        h.paragraph(
            "P̃[c, m] = softmax(P[c])[m] is the weight of description m in class c's base logit, "
            "f[c] = Σ_m P̃[c,m]·z[c,m]. P is trained with the prompt, from zero (the uniform "
            f"1/M = {1 / m:.3f}); unlike the PRM it is not a count but a free softmax row, so a "
            "class can lean on a few descriptions or keep them all."
        ),
        h.note(
            f"Effective number of descriptions per class, exp(entropy of P̃[c]), out of M = {m}: "
            f"mean {float(effective.mean()):.2f}, lowest {float(effective.min()):.2f} "
            f"({view.class_names[int(effective.argmin())]}), highest "
            f"{float(effective.max()):.2f}. "
            f"M means P̃ stayed uniform, 1 that the class uses one description."
        ),
    ]
    order = np.lexsort((-view.weights, view.groups), axis=1)
    plots.prm_heatmap(
        out.path("intra-weights.png"),
        view.weights[rows],
        view.groups[rows],
        view.group_names,
        names,
        "P̃: classes × descriptions",
        colorbar_label="P̃ = softmax(P) per row",
    )
    body.append(
        h.figure(
            out.src("intra-weights.png"),
            "P̃ heatmap",
            "Each row is a class, each cell one of its descriptions, ordered by group then by "
            "weight." + (f" Classes: {selection}." if selection else ""),
        )
    )
    body.append(
        h.details(
            "Interactive P̃ heatmap (hover over a cell for its description and weight)",
            h.heat_table(
                np.take_along_axis(view.weights, order, axis=1)[rows],
                names,
                _hover(view, order),
                np.take_along_axis(view.groups, order, axis=1)[rows],
            ),
        )
    )
    body.append(
        h.paragraph(
            f"Each class's top {view.top} descriptions by P̃ (ties broken by the mean "
            "contribution P̃[c,m]·z[c,m] to the base logit on the test images of that class):"
        )
    )
    body.append(render_description_table(view.descriptions, "P̃"))
    write_csv(out.path(CSV), CSV_HEADER, _csv_rows(view))
    body.append(
        h.paragraph(
            h.Raw(f'Every description with its P̃: <a href="{h.esc(out.src(CSV))}">{CSV}</a>.')
        )
    )
    return h.section(view.anchor, TITLE, h.join(body))


__all__ = ["CSV", "IntraView", "compute_intra", "render_intra"]
