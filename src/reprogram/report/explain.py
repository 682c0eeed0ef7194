"""``explain``: an interpretability report for finished runs, as one HTML page plus PNGs.

For each run: the learned prompts as images, the PRM (heatmap, top descriptions per class), each
prompt's share of the class logits, per-class accuracy, the worst classes' confusions and the
training curves; for trained heads, P̃ in place of the PRM and E's section
(:mod:`reprogram.report.sections.intra`, :mod:`reprogram.report.sections.inter`). For several
runs: a comparison table and per-class differences between methods.
Sections that do not apply to a method (no prompt, one prompt, no PRM, no training) say why.
See docs/report.md for how to read each section.

The run is read once (:mod:`reprogram.report.load`); each section in
:mod:`reprogram.report.sections` computes its numbers (``compute_x``) and renders them
(``render_x``); this module assembles the page.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from reprogram.engine.runs import find_runs
from reprogram.model.attribution import dominance_threshold
from reprogram.report import html as h
from reprogram.report.common import Output, select_rows, slug
from reprogram.report.load import (
    BackboneCache,
    Log,
    Options,
    RunData,
    RunSummary,
    load_run_data,
    read_history,
    summarise,
)
from reprogram.report.sections.accuracy import (
    compute_accuracy,
    compute_confusion,
    render_accuracy,
    render_confusion,
)
from reprogram.report.sections.compare import compute_comparison, render_comparison
from reprogram.report.sections.contributions import (
    SHARE_DEFINITION,
    compute_contributions,
    render_contributions,
)
from reprogram.report.sections.curves import compute_curves, render_curves
from reprogram.report.sections.files import compute_files, render_files
from reprogram.report.sections.inter import compute_inter, render_inter
from reprogram.report.sections.intra import compute_intra, render_intra
from reprogram.report.sections.overview import compute_overview, render_overview
from reprogram.report.sections.prm import compute_prm, render_prm
from reprogram.report.sections.prompts import compute_prompts, render_prompts
from reprogram.storage.files import atomic_write_text, ensure_dir


def explain(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    options: Options | None = None,
    *,
    title: str | None = None,
    log: Log | None = None,
) -> Path:
    """Write ``out_dir/index.html`` (and its PNGs and CSVs) for runs; return the HTML path.

    ``run_dirs`` are run folders or folders holding runs (``seed-N``); ``options`` (an
    :class:`Options`, its defaults when ``None``) says how much the report shows and where the
    model runs.
    """
    options = options or Options()
    log = log or (lambda message: None)
    out_dir = ensure_dir(out_dir, "--out")
    started = time.perf_counter()
    summaries: list[RunSummary] = []
    sections: list[h.Raw] = []
    backbones = BackboneCache()
    for number, run_dir in enumerate(find_runs(list(run_dirs)), start=1):
        summary = summarise(run_dir, f"run{number}")
        log(f"explaining {run_dir} ({summary.title})")
        folder_name = f"{summary.anchor}-{slug(summary.results.get('method', 'run'))}"
        out = Output(out_dir / folder_name, folder_name)
        out.folder.mkdir(parents=True, exist_ok=True)
        data = load_run_data(summary, options, backbones, log)
        sections.append(run_section(data, out))
        summaries.append(summary)
    nav = [(s.anchor, s.title) for s in summaries]
    body = sections + [_definitions()]
    if len(summaries) > 1:
        nav.insert(0, ("compare", "Comparison"))
        body.insert(0, render_comparison(compute_comparison(summaries, options), out_dir))
    page_title = title or (
        f"What was learned: {summaries[0].title}"
        if len(summaries) == 1
        else f"What was learned: {len(summaries)} runs"
    )
    subtitle = [
        h.Raw("Runs: " + ", ".join(f"<code>{h.esc(s.run_dir)}</code>" for s in summaries)),
        f"Made by reprogram explain in {time.perf_counter() - started:.0f} s on "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
    ]
    path = out_dir / "index.html"
    atomic_write_text(
        path, h.page(page_title, subtitle, nav + [("definitions", "Definitions")], h.join(body))
    )
    return path


def run_section(data: RunData, out: Output) -> h.Raw:
    """One run's section: every part, in reading order. A head with a trained P shows P̃ where
    the PRM would be; a head with an E adds its section after it (asked of the aggregator)."""
    intra, inter = compute_intra(data), compute_inter(data)
    parts = [
        render_overview(compute_overview(data)),
        render_prompts(compute_prompts(data), out),
        render_prm(compute_prm(data), out) if intra is None else render_intra(intra, out),
        *([render_inter(inter, out)] if inter is not None else []),
        render_contributions(compute_contributions(data), out, data.options.max_classes),
        render_accuracy(compute_accuracy(data), out),
        render_confusion(compute_confusion(data), out),
        render_curves(compute_curves(data), out),
        render_files(compute_files(data), out),
    ]
    summary = data.summary
    return h.Raw(
        f'<section id="{summary.anchor}"><h2>{h.esc(summary.title)}</h2>{h.join(parts)}</section>'
    )


def _definitions() -> h.Raw:
    return h.Raw(
        '<section id="definitions"><h2>Definitions</h2>'
        + h.paragraph(
            "Description score z[c,j] = s·cos(f_img(P_g(c,j)(x)), f_txt(text_c,j)): the scaled "
            "cosine between the image with prompt g(c,j) applied and description j of class c. "
            "The class logit aggregates a class's own scores: the PRM's Σ_j ω[c,j]·z[c,j] for "
            "DVP, the mean for template and description-ensemble methods, "
            "α·mean-top-k(descriptive) + (1 − α)·mean-top-k(distinctive) for AttrVR. The "
            "contribution of description j is its term in that sum (for AttrVR: weight/k if it "
            "is among its set's top-k, else 0), so contributions add up to the logit exactly. "
            "For a trained head (RVP) the contribution of description j is P̃[c,j]·z[c,j] and "
            "contributions add up to the base logit f[c]; an inter-class matrix E then mixes "
            "the base logits, logits = f·(I + E) (see the head's sections)."
        )
        + h.note(SHARE_DEFINITION)
        + h.paragraph(
            "A class is dominated by a prompt when that prompt's share is at least "
            f"{dominance_threshold(3):.2f} "
            f"(at least {dominance_threshold(2):.2f} with two prompts)."
        )
        + "</section>"
    )


__all__ = ["Options", "explain", "read_history", "run_section", "select_rows"]
