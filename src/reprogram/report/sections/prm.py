"""The PRM: ω per class and description, its mass per prompt group, each class's top descriptions.

Methods without a PRM get the reason and, when they have descriptions, the ranking by mean
contribution on the test images instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from reprogram.model.attribution import (
    DescriptionRank,
    group_mass,
    prm_weights,
    prompt_name,
    top_descriptions,
)
from reprogram.report import html as h
from reprogram.report import plots
from reprogram.report.common import Output, select_rows
from reprogram.report.load import RunData

TITLE = "Probabilistic reweighting matrix (PRM)"


@dataclass
class DescriptionTable:
    """Each class's top descriptions (by PRM weight, else by mean contribution)."""

    ranks: list[tuple[str, list[DescriptionRank]]]  # (class name, its top descriptions)
    folded: bool  # more classes than the report shows at once


@dataclass
class Matrix:
    """The PRM of the classes shown (``rows``, in class order)."""

    rows: list[int]
    selection: str | None  # why only some classes are shown
    class_names: list[str]  # of the rows
    group_names: list[str]
    weights: np.ndarray  # rows × M, ω
    groups: np.ndarray  # rows × M, the prompt scoring each description
    mass: np.ndarray  # rows × v, ω summed per group (each row sums to 1)
    sorted_weights: np.ndarray  # rows × M, by group then by weight
    sorted_groups: np.ndarray
    hover: list[list[str]]  # rows × M, in the sorted order: class · group · ω, description


@dataclass
class PRMView:
    anchor: str
    skipped: str | None = None  # no model
    no_prm_reason: str | None = None  # set when the method has no PRM
    has_descriptions: bool = False
    matrix: Matrix | None = None
    descriptions: DescriptionTable | None = None  # None: no PRM and no test images
    top: int = 5  # descriptions listed per class


def _no_prm_reason(data: RunData) -> str:
    recipe, method = data.model.recipe, data.method
    if recipe.needs_descriptions:
        return f"method '{method}' has no PRM: each class logit is {recipe.aggregation.logit_rule}."
    return (
        f"method '{method}' has no PRM and no descriptions: each class has one text, "
        f"the template “{data.run.config.method.template}” with the class name."
    )


def description_table(data: RunData, means: torch.Tensor | None) -> DescriptionTable:
    count = data.options.top_descriptions
    ranks = [
        (name, top_descriptions(data.model, c, count, means))
        for c, name in enumerate(data.classnames)
    ]
    return DescriptionTable(ranks, len(data.classnames) > data.options.max_classes)


def _matrix(data: RunData, weights: torch.Tensor) -> Matrix:
    model, names = data.model, data.classnames
    groups = model.bank.groups.cpu().numpy()
    group_names = list(model.bank.group_names)
    keys = [-k if not math.isnan(k) else 0.0 for k in data.accuracy]
    rows, limited = select_rows(keys, data.options.max_classes)
    rows = sorted(rows)  # class order
    selection = (
        f"{limited}: the {len(rows) // 2} with the lowest and the {len(rows) // 2} with the "
        "highest test accuracy"
        if limited
        else None
    )
    omega = weights.numpy()
    order = np.lexsort((-omega, groups), axis=1)
    hover = [
        [
            f"{names[r]} · {prompt_name(group_names, groups[r, j])} · "
            f"ω = {weights[r, j]:.3f}\n{model.bank.texts[r][j]}"
            for j in order[r]
        ]
        for r in rows
    ]
    return Matrix(
        rows=rows,
        selection=selection,
        class_names=[names[r] for r in rows],
        group_names=group_names,
        weights=omega[rows],
        groups=groups[rows],
        mass=group_mass(model).numpy()[rows],
        sorted_weights=np.take_along_axis(omega, order, axis=1)[rows],
        sorted_groups=np.take_along_axis(groups, order, axis=1)[rows],
        hover=hover,
    )


def compute_prm(data: RunData) -> PRMView:
    view = PRMView(f"{data.summary.anchor}-prm", top=data.options.top_descriptions)
    model = data.model
    if model is None:
        view.skipped = data.no_model_reason()
        return view
    means = data.attribution.description_means if data.attribution is not None else None
    weights = prm_weights(model)
    view.has_descriptions = model.recipe.needs_descriptions
    if weights is None:
        view.no_prm_reason = _no_prm_reason(data)
        if view.has_descriptions and means is not None:
            view.descriptions = description_table(data, means)
        return view
    view.matrix = _matrix(data, weights)
    view.descriptions = description_table(data, means)
    return view


def render_description_table(table: DescriptionTable, weight_label: str = "ω") -> h.Raw:
    rows = []
    for name, ranks in table.ranks:
        for rank, item in enumerate(ranks, start=1):
            rows.append(
                [
                    name if rank == 1 else "",
                    rank,
                    item.group,
                    f"{item.weight:.3f}" if item.weight is not None else "—",
                    f"{item.contribution:.3f}" if item.contribution is not None else "—",
                    item.text,
                ]
            )
    html = h.table(
        ["class", "rank", "group", weight_label, "mean contribution", "description"],
        rows,
        numeric=(1, 3, 4),
    )
    if table.folded:
        return h.details(f"Top descriptions of all {len(table.ranks)} classes", html)
    return html


def _render_no_prm(view: PRMView) -> h.Raw:
    body: list[object] = [h.skipped(view.no_prm_reason)]
    if view.descriptions is not None:
        body.append(
            h.paragraph(
                "Instead, each class's descriptions ranked by their mean contribution to the "
                "class logit on the test images of that class:"
            )
        )
        body.append(render_description_table(view.descriptions))
    heading = "Descriptions (no PRM)" if view.has_descriptions else TITLE
    return h.section(view.anchor, heading, h.join(body))


def render_prm(view: PRMView, out: Output) -> h.Raw:
    if view.skipped is not None:
        return h.section(view.anchor, TITLE, h.skipped(view.skipped))
    if view.matrix is None:
        return _render_no_prm(view)
    matrix, selection = view.matrix, view.matrix.selection
    body: list[object] = [
        h.paragraph(
            "ω[c, j] is the weight of description j in class c's logit, logit[c] = Σ_j "
            "ω[c,j]·z[c,j]. It starts at 1/M and is re-estimated after each epoch as the fraction "
            "of training images of class c for which description j was among the top-k scores "
            "of that class: an empirical P(description | class)."
        )
    ]
    plots.heatmap(
        out.path("prm-groups.png"),
        matrix.mass,
        matrix.class_names,
        matrix.group_names,
        "PRM weight per class and prompt group"
        + (f" ({selection.split(':')[0]})" if selection else ""),
        "prompt group (cause / cluster)",
        "class",
        "Σ ω over the group's descriptions",
        vmin=0,
        vmax=1,
    )
    body.append(
        h.figure(
            out.src("prm-groups.png"),
            "PRM weight per class and group",
            "How much of each class's weight goes to each group's descriptions (rows sum to 1). "
            f"Uniform would be {1 / len(matrix.group_names):.2f} per group when the groups are "
            "the same size." + (f" Classes: {selection}." if selection else ""),
        )
    )
    plots.prm_heatmap(
        out.path("prm.png"),
        matrix.weights,
        matrix.groups,
        matrix.group_names,
        matrix.class_names,
        "PRM ω: classes × descriptions",
    )
    body.append(
        h.figure(
            out.src("prm.png"),
            "PRM heatmap",
            "Each row is a class, each cell one of its descriptions, ordered by group then by "
            "weight. Hover over the cells of the table below to read the descriptions."
            + (f" Classes: {selection}." if selection else ""),
        )
    )
    body.append(
        h.details(
            "Interactive PRM heatmap (hover over a cell for its description and weight)",
            h.heat_table(
                matrix.sorted_weights, matrix.class_names, matrix.hover, matrix.sorted_groups
            ),
            open_=True,
        )
    )
    body.append(
        h.paragraph(
            f"Each class's top {view.top} descriptions by PRM weight "
            "(ties broken by the mean contribution on the test images):"
        )
    )
    body.append(render_description_table(view.descriptions))
    return h.section(view.anchor, TITLE, h.join(body))
