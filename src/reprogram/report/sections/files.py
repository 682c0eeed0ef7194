"""The run's numbers as CSV files: per class (accuracy, prompt shares) and per description."""

from __future__ import annotations

from dataclasses import dataclass

from reprogram.model.attribution import prm_weights, prompt_count
from reprogram.report import html as h
from reprogram.report.common import Output, write_csv
from reprogram.report.sections.accuracy import images_per_class

PER_CLASS = "per_class.csv"
DESCRIPTIONS = "descriptions.csv"
DESCRIPTION_HEADER = ["class", "index", "group", "prm_weight", "mean_contribution", "text"]


@dataclass
class FilesView:
    anchor: str
    class_header: list[str]
    class_rows: list[list[object]]
    description_rows: list[list[object]] | None  # None: the method has no descriptions

    @property
    def has_shares(self) -> bool:
        return len(self.class_header) > 3


def _description_rows(data) -> list[list[object]]:
    model, attribution = data.model, data.attribution
    weights = prm_weights(model)
    means = attribution.description_means if attribution is not None else None
    names = model.bank.group_names
    rows = []
    for c, name in enumerate(data.classnames):
        for j, text in enumerate(model.bank.texts[c]):
            group = int(model.bank.groups[c, j])
            rows.append(
                [
                    name,
                    j,
                    names[group] if group < len(names) else group,
                    f"{float(weights[c, j]):.6f}" if weights is not None else "",
                    f"{float(means[c, j]):.6f}" if means is not None else "",
                    text,
                ]
            )
    return rows


def compute_files(data) -> FilesView:
    model, attribution = data.model, data.attribution
    counts = images_per_class(data.summary.results)
    share_names: list[str] = []
    if attribution is not None and model is not None and prompt_count(model) > 1:
        share_names = [
            f"share_{n}" for n in model.bank.group_names[: attribution.class_shares.shape[1]]
        ]
    rows = []
    for c, name in enumerate(data.classnames):
        row: list[object] = [name, counts[c] if counts else "", f"{data.accuracy[c]:.6f}"]
        if share_names:
            row += [f"{float(v):.6f}" for v in attribution.class_shares[c]]
        rows.append(row)
    descriptions = (
        _description_rows(data) if model is not None and model.recipe.needs_descriptions else None
    )
    return FilesView(
        f"{data.summary.anchor}-files",
        ["class", "test_images", "test_accuracy", *share_names],
        rows,
        descriptions,
    )


def render_files(view: FilesView, out: Output) -> h.Raw:
    write_csv(out.path(PER_CLASS), view.class_header, view.class_rows)
    links = [
        f'<a href="{h.esc(out.src(PER_CLASS))}">{PER_CLASS}</a> (accuracy'
        + (" and prompt shares" if view.has_shares else "")
        + " per class)"
    ]
    if view.description_rows is not None:
        write_csv(out.path(DESCRIPTIONS), DESCRIPTION_HEADER, view.description_rows)
        links.append(
            f'<a href="{h.esc(out.src(DESCRIPTIONS))}">{DESCRIPTIONS}</a> '
            "(every description with its group, PRM weight and mean contribution)"
        )
    return h.section(
        view.anchor,
        "Data files",
        h.Raw("<ul>" + "".join(f"<li>{link}</li>" for link in links) + "</ul>"),
    )
