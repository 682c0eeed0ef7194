"""Each prompt's share of each class's logit, and the classes one prompt dominates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reprogram.model.attribution import (
    Dominance,
    dominance_threshold,
    dominant_prompts,
    prompt_count,
    prompt_name,
)
from reprogram.report import html as h
from reprogram.report import plots
from reprogram.report.common import Output, percent, select_rows

TITLE = "Per-prompt contribution per class"

SHARE_DEFINITION = (
    "Share of prompt p in the logit of class c, for one image: the sum of the contributions "
    "ω[c,j]·z[c,j] of the descriptions j that prompt p scores (for methods without a PRM, the "
    "aggregation's own weights), divided by the sum over prompts of the absolute values of those "
    "sums. Shares lie in [−1, 1] and their absolute values add up to 1; when every part is "
    "positive (usual with CLIP, whose image–text cosines are positive) a share is simply the "
    "fraction of the logit. A negative share means that prompt's descriptions pull the class "
    "logit down. The class value is the mean over the test images of that class, for the logit "
    "of that class."
)


@dataclass
class ContributionsView:
    anchor: str
    skipped: str | None = None
    class_names: list[str] | None = None
    group_names: list[str] | None = None
    shares: np.ndarray | None = None  # C×v: mean share of each prompt in each class's logit
    accuracy: list[float] | None = None  # per class, from results.json
    present: list[int] | None = None  # classes with test images
    rows: list[int] | None = None  # classes shown, grouped by their strongest prompt
    limited: str | None = None  # why only some classes are shown
    threshold: float = 0.5
    ranking: list[Dominance] | None = None  # every present class, most dominated first

    @property
    def negative(self) -> bool:
        return bool((self.shares[self.present] < 0).any())

    @property
    def dominated(self) -> list[Dominance]:
        return [d for d in self.ranking if d.dominated]

    def dominated_per_prompt(self) -> dict[str, int]:
        counts = {name: 0 for name in self.group_names}
        for d in self.dominated:
            counts[self.group_names[d.prompt_index]] += 1
        return counts


def compute_contributions(data) -> ContributionsView:
    view = ContributionsView(f"{data.summary.anchor}-contributions")
    model = data.model
    if model is None:
        view.skipped = data.no_model_reason()
        return view
    count = prompt_count(model)
    if count <= 1:
        what = "a single prompt" if model.recipe.prompt.trains else "no visual prompt"
        view.skipped = (
            f"method '{data.method}' uses {what}: every class logit comes entirely from it, so "
            "there is nothing to split."
        )
        return view
    attribution = data.attribution
    if attribution is None:
        view.skipped = data.no_images_reason()
        return view
    names = data.classnames
    shares = attribution.class_shares.numpy()
    present = [c for c in range(len(names)) if int(attribution.class_counts[c]) > 0]
    strength = [float(shares[c].max()) if c in present else -math.inf for c in range(len(names))]
    rows, limited = select_rows([strength[c] for c in present], data.options.max_classes)
    rows = [present[i] for i in rows]
    rows.sort(key=lambda c: (int(shares[c].argmax()), -float(shares[c].max())))
    view.class_names = names
    view.group_names = [prompt_name(model.bank.group_names, p) for p in range(count)]
    view.shares, view.accuracy, view.present = shares, data.accuracy, present
    view.rows, view.limited = rows, limited
    view.threshold = dominance_threshold(count)
    view.ranking = dominant_prompts(attribution.class_shares, attribution.class_counts)
    return view


def _dominated_table(view: ContributionsView, max_rows: int) -> h.Raw:
    dominated = view.dominated
    shown = dominated[:max_rows]
    names, groups, shares = view.class_names, view.group_names, view.shares
    rows = [
        [
            names[d.class_index],
            groups[d.prompt_index],
            f"{d.share:.2f}",
            percent(view.accuracy[d.class_index]),
            ", ".join(
                f"{groups[p]} {shares[d.class_index, p]:.2f}"
                for p in range(len(groups))
                if p != d.prompt_index
            ),
        ]
        for d in shown
    ]
    more = f" (first {len(shown)} of {len(dominated)})" if len(shown) < len(dominated) else ""
    return h.table(
        ["class", "dominant prompt", "share", "test accuracy", "other prompts' shares"],
        rows,
        numeric=(2, 3),
        caption="Classes where one prompt dominates, strongest first" + more,
    )


def render_contributions(view: ContributionsView, out: Output, max_rows: int) -> h.Raw:
    if view.skipped is not None:
        return h.section(view.anchor, TITLE, h.skipped(view.skipped))
    rows, limited, negative = view.rows, view.limited, view.negative
    plots.heatmap(
        out.path("shares.png"),
        view.shares[rows],
        [view.class_names[r] for r in rows],
        view.group_names,
        "Share of each class's logit from each prompt" + (f" ({limited})" if limited else ""),
        "prompt",
        "class",
        "share of the class logit",
        cmap="RdBu" if negative else "viridis",
        vmin=-1 if negative else 0,
        vmax=1,
    )
    selection = (
        f" Classes: {limited}, the {len(rows) // 2} most dominated by one prompt and the "
        f"{len(rows) // 2} most balanced."
        if limited
        else ""
    )
    body: list[object] = [
        h.note(SHARE_DEFINITION),
        h.figure(
            out.src("shares.png"),
            "per-prompt share of each class logit",
            "Rows are grouped by their strongest prompt."
            + selection
            + (
                " Negative shares (red) mean the prompt's descriptions lower that class's logit."
                if negative
                else ""
            ),
        ),
    ]
    plots.share_distribution(
        out.path("shares-distribution.png"),
        view.shares[view.present],
        view.group_names,
        f"Distribution over all {len(view.present)} classes",
    )
    body.append(
        h.figure(
            out.src("shares-distribution.png"),
            "distribution of prompt shares over classes",
            "For each prompt, its mean share in every class's logit (one dot per class); the "
            "dashed line is an equal split.",
        )
    )
    body.append(
        h.paragraph(
            f"{len(view.dominated)} of {len(view.ranking)} classes are dominated by one prompt "
            f"(its share ≥ {view.threshold:.2f}): "
            + ", ".join(f"{name} {k}" for name, k in view.dominated_per_prompt().items())
            + "."
        )
    )
    if view.dominated:
        body.append(_dominated_table(view, max_rows))
    return h.section(view.anchor, TITLE, h.join(body))
