"""The run's facts: method, data, backbone, accuracy (also recomputed on the attribution pass)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError
from reprogram.report import html as h
from reprogram.report.common import percent, seconds
from reprogram.report.load import RunData


@dataclass
class Overview:
    run_dir: Path
    results: dict[str, Any]
    method_summary: str | None  # the recipe's one-line summary, when the method is known
    classes: int
    recomputed_accuracy: float | None  # on the images the report attributed
    recomputed_count: int
    notes: list[str]


def compute_overview(data: RunData) -> Overview:
    summary = None
    try:
        from reprogram.model.methods import get_recipe

        summary = get_recipe(data.summary.results.get("method", "")).summary
    except ReprogramError:
        pass
    attribution = data.attribution
    return Overview(
        run_dir=data.summary.run_dir,
        results=data.summary.results,
        method_summary=summary,
        classes=len(data.classnames),
        recomputed_accuracy=attribution.accuracy if attribution is not None else None,
        recomputed_count=len(attribution.labels) if attribution is not None else 0,
        notes=list(data.summary.notes),
    )


def render_overview(view: Overview) -> h.Raw:
    results = view.results
    backbone = results.get("backbone") or {}
    rows = [
        ("run folder", h.Raw(f"<code>{h.esc(view.run_dir)}</code>")),
        (
            "method",
            f"{results.get('method')}"
            + (f" — {view.method_summary}" if view.method_summary else ""),
        ),
        ("dataset", h.Raw(f"<code>{h.esc(results.get('dataset'))}</code>")),
        ("classes", view.classes),
        (
            "backbone",
            f"{backbone.get('arch', '?')}"
            + (f" ({backbone['weights']})" if backbone.get("weights") else ""),
        ),
        ("shots × seed", f"{results.get('shots')} shots, seed {results.get('seed')}"),
        (
            "epochs",
            f"{results.get('epochs')} (selected epoch {results.get('selected_epoch') or '—'} "
            f"on {results.get('select_on', 'val')})",
        ),
        (
            "prompts",
            f"{results.get('prompts', 0)} ({results.get('trainable_parameters', 0):,} "
            "trainable parameters)",
        ),
        ("validation accuracy", percent(results.get("val_accuracy"))),
        (
            "test accuracy",
            f"{percent(results.get('test_accuracy'))} on {results.get('test_count', '?')} images",
        ),
        ("wall time", seconds(results.get("wall_time_s"))),
    ]
    described = [d.get("name", "?") for d in results.get("descriptions") or []]
    if described:
        label = ", ".join(described)
        if results.get("template_descriptions"):
            label = f"TEMPLATE FALLBACK, weaker than LLM descriptions: {label}"
        rows.append(("descriptions", label))
    if view.recomputed_accuracy is not None:
        rows.append(
            (
                "test accuracy, recomputed here",
                f"{percent(view.recomputed_accuracy)} on {view.recomputed_count} images",
            )
        )
    body = [h.table(["", ""], rows, class_="meta")]
    body += [h.skipped(note) for note in view.notes]
    return h.join(body)
