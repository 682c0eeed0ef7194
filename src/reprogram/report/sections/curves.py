"""Loss and accuracy per epoch, from metrics.jsonl."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reprogram.report import html as h
from reprogram.report import plots
from reprogram.report.common import Output, median_speed

TITLE = "Training curves"


@dataclass
class CurvesView:
    anchor: str
    run_title: str
    history: list[dict[str, Any]]
    selected_epoch: int | None
    images_per_s: float | None  # median over the epochs that trained
    skipped: str | None = None


def compute_curves(data) -> CurvesView:
    summary = data.summary
    results, history = summary.results, summary.history
    skipped = None
    if not history:
        skipped = (
            "nothing is trained for this method (zero-shot)"
            if not results.get("prompts")
            else "the run has no metrics.jsonl rows"
        )
    return CurvesView(
        f"{summary.anchor}-curves",
        summary.title,
        history,
        results.get("selected_epoch"),
        median_speed(history),
        skipped,
    )


def render_curves(view: CurvesView, out: Output) -> h.Raw:
    if view.skipped is not None:
        return h.section(view.anchor, TITLE, h.skipped(view.skipped))
    plots.training_curves(
        out.path("curves.png"), view.history, view.selected_epoch, f"Training — {view.run_title}"
    )
    caption = (
        "Loss and accuracy per epoch. Train accuracy is measured during the training pass "
        "(with augmentation); validation accuracy on the few-shot validation split, every few "
        "epochs. The grey band marks epochs that only estimate the PRM; the dotted line the "
        "selected epoch."
        + (
            f" Median training speed {view.images_per_s:.0f} images/s."
            if view.images_per_s is not None
            else ""
        )
    )
    return h.section(
        view.anchor, TITLE, h.figure(out.src("curves.png"), "training curves", caption)
    )
