"""``explain``: an interpretability report for finished runs, as one HTML page plus PNGs.

For each run: the learned prompts as images, the PRM (heatmap, top descriptions per class), each
prompt's share of the class logits, per-class accuracy, the worst classes' confusions and the
training curves. For several runs: a comparison table and per-class differences between methods.
Sections that do not apply to a method (no prompt, one prompt, no PRM, no training) say why.
See docs/report.md for how to read each section.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprogram.engine.checkpoint import METRICS, read_results
from reprogram.engine.runs import comparison_table, find_runs
from reprogram.errors import ReprogramError
from reprogram.io import atomic_write_text
from reprogram.report import html as h
from reprogram.report import plots
from reprogram.report.attribution import (
    Attribution,
    attribute,
    dominance_threshold,
    dominant_prompts,
    group_mass,
    prm_weights,
    prompt_count,
    top_class_drivers,
    top_descriptions,
)

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


PRM_TITLE = "Probabilistic reweighting matrix (PRM)"


@dataclass
class Options:
    """How much the report shows and where the model runs."""

    examples: int = 4  # test images shown with each prompt applied
    max_classes: int = 40  # beyond this, class-wise figures show a labelled selection
    top_descriptions: int = 5  # per class, in the description table
    max_per_class: int | None = None  # cap on test images per class for the attribution pass
    device: str | None = "auto"
    batch_size: int = 128
    reference: str | None = None  # method the others are compared with (default: the first)


@dataclass
class RunSummary:
    """What the comparison needs from one run."""

    run_dir: Path
    anchor: str
    title: str
    results: dict[str, Any]
    history: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


Log = Callable[[str], None]


def explain(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    examples: int = 4,
    max_classes: int = 40,
    top_descriptions: int = 5,
    max_per_class: int | None = None,
    device: str | None = "auto",
    batch_size: int = 128,
    reference: str | None = None,
    title: str | None = None,
    log: Log | None = None,
) -> Path:
    """Write ``out_dir/index.html`` (and its PNGs and CSVs) for runs; return the HTML path.

    ``run_dirs`` are run folders or folders holding runs (``seed-N``). ``device=None`` uses each
    run's configured device; ``"auto"`` (default) a GPU when there is one, else the CPU.
    """
    options = Options(
        examples=examples,
        max_classes=max(4, max_classes),
        top_descriptions=top_descriptions,
        max_per_class=max_per_class,
        device=device,
        batch_size=batch_size,
        reference=reference,
    )
    log = log or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = find_runs(list(run_dirs))
    started = time.perf_counter()
    summaries: list[RunSummary] = []
    sections: list[h.Raw] = []
    backbones: dict[tuple, Any] = {}
    for number, run_dir in enumerate(runs, start=1):
        results = read_results(run_dir)
        anchor = f"run{number}"
        folder_name = f"{anchor}-{_slug(results.get('method', 'run'))}"
        summary = RunSummary(run_dir, anchor, _run_title(results), results, read_history(run_dir))
        log(f"explaining {run_dir} ({summary.title})")
        sections.append(_run_section(summary, out_dir, folder_name, options, backbones, log))
        summaries.append(summary)
    comparison = _comparison_section(summaries, out_dir, options) if len(summaries) > 1 else None
    nav = [(s.anchor, s.title) for s in summaries]
    if comparison is not None:
        nav.insert(0, ("compare", "Comparison"))
    body = [comparison] if comparison is not None else []
    body += sections
    body.append(_definitions())
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


# ----------------------------------------------------------------------------- small helpers


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl (empty for untrained methods or a missing file)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _slug(text: str) -> str:
    return (
        "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in str(text)).strip("-") or "run"
    )


def _dataset_name(dataset: str) -> str:
    if dataset.startswith(("folder:", "csv:")):
        kind, _, location = dataset.partition(":")
        return f"{kind}:{Path(location).name or location}"
    return dataset


def _run_title(results: dict[str, Any]) -> str:
    dataset = _dataset_name(str(results.get("dataset", "?")))
    return f"{results.get('method', '?')} · {dataset} · seed {results.get('seed', '?')}"


def _group_name(names: Sequence[str], index: int) -> str:
    index = int(index)
    return names[index] if index < len(names) else f"prompt {index + 1}"


def _percent(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.{digits}f}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.2f} h"


def select_rows(keys: Sequence[float], limit: int) -> tuple[list[int], str | None]:
    """Indices of rows to show, sorted by ``keys`` descending: all of them when there are at most
    ``limit``, else the ``limit // 2`` highest and the ``limit // 2`` lowest, with a note."""
    order = sorted(range(len(keys)), key=lambda i: (-keys[i], i))
    if len(order) <= limit:
        return order, None
    half = limit // 2
    return order[:half] + order[-half:], f"showing {2 * half} of {len(order)} classes"


def _to_image(chw: torch.Tensor) -> np.ndarray:
    return chw.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _save_png(chw: torch.Tensor, path: Path) -> None:
    from PIL import Image

    array = (chw.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
    Image.fromarray(array.astype(np.uint8)).save(path)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


# ----------------------------------------------------------------------------- one run


@dataclass
class _Context:
    """What the sections of one run share."""

    summary: RunSummary
    folder: Path
    rel: str  # the folder relative to the HTML page
    options: Options
    classnames: list[str]
    accuracy: list[float]  # per class, from results.json
    run: Any = None  # LoadedRun, when the model could be rebuilt
    images: Any = None  # DecodedImages of the test split, when available
    attribution: Attribution | None = None
    model_reason: str = ""
    image_reason: str = ""

    def path(self, name: str) -> Path:
        return self.folder / name

    def src(self, name: str) -> str:
        return f"{self.rel}/{name}"

    @property
    def model(self):
        return self.run.model if self.run is not None else None


def _run_section(
    summary: RunSummary,
    out_dir: Path,
    folder_name: str,
    options: Options,
    backbones: dict,
    log: Log,
) -> h.Raw:
    results = summary.results
    classnames = list(results.get("classnames") or list(results.get("per_class_accuracy", {})))
    per_class = results.get("per_class_accuracy", {})
    folder = out_dir / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    context = _Context(
        summary,
        folder,
        folder_name,
        options,
        classnames,
        [float(per_class.get(c, float("nan"))) for c in classnames],
    )
    _load_model(context, backbones)
    if context.run is not None:
        _load_test_images(context)
    if context.images is not None:
        log(f"  attributing {len(context.images)} test images")
        dtype = _dtype(context)
        context.attribution = attribute(
            context.model, context.images.pixels, context.images.labels, options.batch_size, dtype
        )
    parts = [
        _overview(context),
        _prompts_section(context),
        _prm_section(context),
        _contributions_section(context),
        _accuracy_section(context),
        _confusion_section(context),
        _curves_section(context),
        _files_section(context),
    ]
    return h.Raw(
        f'<section id="{summary.anchor}"><h2>{h.esc(summary.title)}</h2>{h.join(parts)}</section>'
    )


def _dtype(context: _Context) -> torch.dtype:
    from reprogram.precision import resolve_precision

    return resolve_precision(context.run.config.precision, context.model.text_features.device)


def _load_model(context: _Context, backbones: dict) -> None:
    from reprogram.engine.checkpoint import load_checkpoint
    from reprogram.engine.config import TrainConfig
    from reprogram.engine.runs import load_run
    from reprogram.engine.setup import build_backbone

    run_dir = context.summary.run_dir
    try:
        checkpoint = load_checkpoint(run_dir)
        config = TrainConfig(**checkpoint["config"])
        if context.options.device is not None:
            config.device = context.options.device
        key = (config.backbone, config.weights, config.quick_gelu, config.device)
        if key not in backbones:
            backbones.clear()  # keep one backbone in memory at a time
            backbones[key] = build_backbone(config)
        context.run = load_run(run_dir, device=config.device, backbone=backbones[key])
    except (ReprogramError, OSError, RuntimeError) as err:
        context.model_reason = f"the model could not be rebuilt from {run_dir} ({err})"
        context.summary.notes.append(context.model_reason)


def _load_test_images(context: _Context) -> None:
    from reprogram.data import decode_center, load_dataset

    config = context.run.config
    try:
        splits = load_dataset(config.dataset, config.root, config.split_seed)
        if list(splits.classnames) != list(context.run.classnames):
            raise ReprogramError(f"dataset {config.dataset} now has other classes than the run")
        samples = splits.test
        cap = context.options.max_per_class
        if cap:
            seen: dict[int, int] = {}
            kept = []
            for sample in samples:
                seen[sample.label] = seen.get(sample.label, 0) + 1
                if seen[sample.label] <= cap:
                    kept.append(sample)
            samples = kept
        if not samples:
            raise ReprogramError("the test split is empty")
        context.images = decode_center(
            samples, context.model.image_size, skip_bad=config.skip_bad_images
        )
        if len(context.images) == 0:
            context.images = None
            raise ReprogramError("no test image could be decoded")
    except (ReprogramError, OSError) as err:
        context.image_reason = f"the test images of {config.dataset} could not be read ({err})"
        context.summary.notes.append(context.image_reason)


def _no_model_reason(context: _Context) -> str:
    return context.model_reason or "the model is not available"


def _no_images_reason(context: _Context) -> str:
    return context.model_reason or context.image_reason or "no test images"


def _overview(context: _Context) -> h.Raw:
    results = context.summary.results
    backbone = results.get("backbone") or {}
    recipe = None
    try:
        from reprogram.methods import get_recipe

        recipe = get_recipe(results.get("method", ""))
    except ReprogramError:
        pass
    rows = [
        ("run folder", h.Raw(f"<code>{h.esc(context.summary.run_dir)}</code>")),
        ("method", f"{results.get('method')}" + (f" — {recipe.summary}" if recipe else "")),
        ("dataset", h.Raw(f"<code>{h.esc(results.get('dataset'))}</code>")),
        ("classes", len(context.classnames)),
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
        ("validation accuracy", _percent(results.get("val_accuracy"))),
        (
            "test accuracy",
            f"{_percent(results.get('test_accuracy'))} on {results.get('test_count', '?')} images",
        ),
        ("wall time", _seconds(results.get("wall_time_s"))),
    ]
    if context.attribution is not None:
        rows.append(
            (
                "test accuracy, recomputed here",
                f"{_percent(context.attribution.accuracy)} on "
                f"{len(context.attribution.labels)} images",
            )
        )
    body = [h.table(["", ""], rows, class_="meta")]
    body += [h.skipped(note) for note in context.summary.notes]
    return h.join(body)


def _example_indices(labels: torch.Tensor, count: int) -> list[int]:
    """Up to ``count`` test images from classes spread over the class list, one per class first."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels.tolist()):
        by_class.setdefault(label, []).append(index)
    classes = sorted(by_class)
    if not classes or count <= 0:
        return []
    step = max(1, len(classes) // count)
    chosen = [by_class[c][0] for c in classes[::step]][:count]
    extra = (i for c in classes for i in by_class[c][1:])
    while len(chosen) < min(count, len(labels)):
        chosen.append(next(extra))
    return chosen


def _frames(context: _Context) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Per prompt: its name, its frame on its own (3×S×S in [0, 1]) and a contrast-stretched copy.

    Padding prompts: sigmoid(theta) on the frame, the inside (where the image goes) mid-grey.
    Watermark prompts: the additive pattern applied to a mid-grey image, in pixel units.
    The stretched copy maps the largest deviation from mid-grey on the frame to full contrast.
    """
    prompts = context.model.prompts
    if prompts.kind == "none":
        return []
    patterns = prompts.patterns().detach().float().cpu()
    mask = prompts.mask.float().cpu()
    std = prompts.std.view(3, 1, 1).float().cpu()
    names = context.model.bank.group_names
    frames = []
    for index in range(prompts.count):
        if prompts.kind == "padding":
            frame = patterns[index] + (1 - mask) * 0.5
        else:
            frame = 0.5 + patterns[index] * std
        frame = frame.clamp(0, 1)
        deviation = (frame - 0.5) * mask
        scale = float(deviation.abs().max())
        stretched = 0.5 + deviation * (0.5 / scale) if scale > 1e-6 else frame
        label = (
            f"prompt {index + 1}: {_group_name(names, index)}" if prompts.count > 1 else "prompt"
        )
        frames.append((label, frame, stretched))
    return frames


def _prompts_section(context: _Context) -> h.Raw:
    anchor = f"{context.summary.anchor}-prompts"
    title = "Learned prompts"
    model = context.model
    if model is None:
        return h.section(anchor, title, h.skipped(_no_model_reason(context)))
    prompts = model.prompts
    method = context.summary.results.get("method")
    body: list[object] = []
    frames = _frames(context)
    for index, (_, frame, _) in enumerate(frames, start=1):
        _save_png(frame, context.path(f"prompt-{index}.png"))
    if not frames:
        body.append(
            h.skipped(
                f"method '{method}' has no visual prompt: test images enter the frozen model "
                "unchanged. The examples below show what the model sees and what it predicts."
            )
        )
    frame_caption = ""
    if frames:
        frame_caption = (
            "“frame” is each prompt on its own: "
            + (
                "sigmoid(θ) on the frame, the inside (where the image goes) grey; "
                if prompts.kind == "padding"
                else "its additive pattern applied to a mid-grey image; "
            )
            + "“stretched” is the same with its deviation from grey stretched to full contrast, "
            "to make faint patterns visible. Native-resolution frames: "
            + ", ".join(
                f'<a href="{h.esc(context.src(f"prompt-{i}.png"))}">prompt {i}</a>'
                for i in range(1, len(frames) + 1)
            )
            + ". "
        )
    images = context.images
    if images is None:
        if frames:
            plots.image_grid(
                context.path("prompts.png"),
                f"Learned prompts — {context.summary.title}",
                ["frame", "stretched"],
                [label for label, _, _ in frames],
                [[_to_image(f), _to_image(s)] for _, f, s in frames],
            )
            body.append(
                h.figure(context.src("prompts.png"), "learned prompt frames", h.Raw(frame_caption))
            )
        body.append(
            h.skipped(f"test images with the prompts applied: {_no_images_reason(context)}")
        )
        return h.section(anchor, title, h.join(body))

    from reprogram.data.images import as_float
    from reprogram.precision import autocast

    chosen = _example_indices(images.labels, context.options.examples)
    device = model.text_features.device
    batch = as_float(images.pixels[chosen].to(device))
    with torch.no_grad():
        prompted = prompts(batch).float()  # v×B×3×S×S, normalised
        shown = (prompted * prompts.std.float() + prompts.mean.float()).clamp(0, 1)
        with autocast(device, _dtype(context)):
            output = model(batch)
    probabilities = output.logits.float().softmax(dim=1)
    drivers = top_class_drivers(model, output.scores, output.logits)
    truth = [context.classnames[int(images.labels[i])] for i in chosen]
    if prompts.kind == "padding":  # the image enters shrunk; light grey marks the frame
        inputs = [
            _to_image(torch.nn.functional.pad(batch[i], (prompts.frame,) * 4, value=0.85))
            for i in range(len(chosen))
        ]
    else:
        inputs = [_to_image(batch[i]) for i in range(len(chosen))]
    columns = (["frame", "stretched"] if frames else []) + [
        f"{i}. {name}" for i, name in enumerate(truth, start=1)
    ]
    lead: list[None] = [None, None] if frames else []
    cells = [lead + inputs]
    for p, (_, frame, stretched) in enumerate(frames):
        cells.append(
            [_to_image(frame), _to_image(stretched)]
            + [_to_image(shown[p, i]) for i in range(len(chosen))]
        )
    plots.image_grid(
        context.path("prompts.png"),
        f"Learned prompts — {context.summary.title}",
        columns,
        ["input"] + [label for label, _, _ in frames],
        cells,
    )
    caption = (
        "Row “input”: test images (true class above) as they enter the model"
        + (
            ", shrunk to the inner size; light grey marks where the frame goes"
            if prompts.kind == "padding"
            else ""
        )
        + ". "
        + (
            "Other rows: each prompt applied to them, as the encoder sees it (before "
            "normalisation). "
            if frames
            else ""
        )
        + frame_caption
    )
    body.append(
        h.figure(
            context.src("prompts.png"), "learned prompts applied to test images", h.Raw(caption)
        )
    )
    rows = []
    for number, driver in enumerate(drivers, start=1):
        predicted = context.classnames[driver.class_index]
        correct = predicted == truth[number - 1]
        prompt_cell = "—"
        if driver.prompt is not None and driver.prompt_shares:
            prompt_cell = f"{driver.prompt} ({driver.prompt_shares[driver.prompt]:.0%} share)"
        description = driver.description
        if description is None:
            description = "— (one text per class: the class-name template)"
        rows.append(
            [
                number,
                truth[number - 1],
                h.Raw(f'<span class="{"good" if correct else "bad"}">{h.esc(predicted)}</span>'),
                f"{float(probabilities[number - 1, driver.class_index]):.2f}",
                prompt_cell,
                description,
            ]
        )
    body.append(
        h.table(
            ["#", "true class", "predicted", "p", "top prompt", "top description"],
            rows,
            numeric=(0, 3),
            caption="What drove each example's top class (the same computation as "
            "`reprogram predict`): the prompt with the largest share and the description with the "
            "largest contribution, among those that carry weight.",
        )
    )
    return h.section(anchor, title, h.join(body))


def _prm_section(context: _Context) -> h.Raw:
    anchor = f"{context.summary.anchor}-prm"
    model = context.model
    method = context.summary.results.get("method", "?")
    if model is None:
        return h.section(anchor, PRM_TITLE, h.skipped(_no_model_reason(context)))
    weights = prm_weights(model)
    names = context.classnames
    means = context.attribution.description_means if context.attribution is not None else None
    if weights is None:
        recipe = model.recipe
        body: list[object] = []
        if recipe.aggregation == "mean-top-k":
            reason = (
                f"method '{method}' has no PRM: each class logit is α·(mean of the top-k "
                "descriptive "
                "attribute scores) + (1 − α)·(mean of the top-k distinctive ones)."
            )
        elif recipe.needs_descriptions:
            reason = (
                f"method '{method}' has no PRM: each class logit is the mean of its "
                "description scores."
            )
        else:
            reason = (
                f"method '{method}' has no PRM and no descriptions: each class has one text, "
                f"the template “{context.run.config.template}” with the class name."
            )
        body.append(h.skipped(reason))
        if recipe.needs_descriptions and means is not None:
            body.append(
                h.paragraph(
                    "Instead, each class's descriptions ranked by their mean contribution to "
                    "the class logit "
                    "on the test images of that class:"
                )
            )
            body.append(_description_table(context, means))
        heading = "Descriptions (no PRM)" if recipe.needs_descriptions else PRM_TITLE
        return h.section(anchor, heading, h.join(body))

    groups = model.bank.groups.cpu().numpy()
    group_names = list(model.bank.group_names)
    keys = context.accuracy
    rows, limited = select_rows(
        [-k if not math.isnan(k) else 0.0 for k in keys], context.options.max_classes
    )
    rows = sorted(rows)  # class order
    selection = (
        f"{limited}: the {len(rows) // 2} with the lowest and the {len(rows) // 2} with the "
        "highest "
        "test accuracy"
        if limited
        else None
    )
    body = [
        h.paragraph(
            "ω[c, j] is the weight of description j in class c's logit, logit[c] = Σ_j "
            "ω[c,j]·z[c,j]. It starts at "
            "1/M and is re-estimated after each epoch as the fraction of training images of "
            "class c for which "
            "description j was among the top-k scores of that class: an empirical "
            "P(description | class)."
        )
    ]
    mass = group_mass(model).numpy()
    plots.heatmap(
        context.path("prm-groups.png"),
        mass[rows],
        [names[r] for r in rows],
        group_names,
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
            context.src("prm-groups.png"),
            "PRM weight per class and group",
            "How much of each class's weight goes to each group's descriptions (rows sum to 1). "
            f"Uniform would be {1 / len(group_names):.2f} per group when the groups are the "
            "same size." + (f" Classes: {selection}." if selection else ""),
        )
    )
    plots.prm_heatmap(
        context.path("prm.png"),
        weights.numpy()[rows],
        groups[rows],
        group_names,
        [names[r] for r in rows],
        "PRM ω: classes × descriptions",
    )
    body.append(
        h.figure(
            context.src("prm.png"),
            "PRM heatmap",
            "Each row is a class, each cell one of its descriptions, ordered by group then by "
            "weight. "
            "Hover over the cells of the table below to read the descriptions."
            + (f" Classes: {selection}." if selection else ""),
        )
    )
    titles = []
    order = np.lexsort((-weights.numpy(), groups), axis=1)
    sorted_groups = np.take_along_axis(groups, order, axis=1)
    sorted_weights = np.take_along_axis(weights.numpy(), order, axis=1)
    for r in rows:
        titles.append(
            [
                f"{names[r]} · {_group_name(group_names, groups[r, j])} · "
                f"ω = {weights[r, j]:.3f}\n{model.bank.texts[r][j]}"
                for j in order[r]
            ]
        )
    body.append(
        h.details(
            "Interactive PRM heatmap (hover over a cell for its description and weight)",
            h.heat_table(
                sorted_weights[rows], [names[r] for r in rows], titles, sorted_groups[rows]
            ),
            open_=True,
        )
    )
    body.append(
        h.paragraph(
            f"Each class's top {context.options.top_descriptions} descriptions by PRM weight "
            "(ties broken by the mean contribution on the test images):"
        )
    )
    body.append(_description_table(context, means))
    return h.section(anchor, PRM_TITLE, h.join(body))


def _description_table(context: _Context, means: torch.Tensor | None) -> h.Raw:
    model = context.model
    rows = []
    for c, name in enumerate(context.classnames):
        for rank, item in enumerate(
            top_descriptions(model, c, context.options.top_descriptions, means), start=1
        ):
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
    table = h.table(
        ["class", "rank", "group", "ω", "mean contribution", "description"], rows, numeric=(1, 3, 4)
    )
    if len(context.classnames) > context.options.max_classes:
        return h.details(f"Top descriptions of all {len(context.classnames)} classes", table)
    return table


def _contributions_section(context: _Context) -> h.Raw:
    anchor = f"{context.summary.anchor}-contributions"
    title = "Per-prompt contribution per class"
    model = context.model
    if model is None:
        return h.section(anchor, title, h.skipped(_no_model_reason(context)))
    count = prompt_count(model)
    if count <= 1:
        what = "no visual prompt" if model.prompts.kind == "none" else "a single prompt"
        return h.section(
            anchor,
            title,
            h.skipped(
                f"method '{context.summary.results.get('method')}' uses {what}: every class "
                "logit comes "
                "entirely from it, so there is nothing to split."
            ),
        )
    attribution = context.attribution
    if attribution is None:
        return h.section(anchor, title, h.skipped(_no_images_reason(context)))
    names = context.classnames
    group_names = [
        model.bank.group_names[p] if p < len(model.bank.group_names) else f"prompt {p + 1}"
        for p in range(count)
    ]
    shares = attribution.class_shares.numpy()
    present = [c for c in range(len(names)) if int(attribution.class_counts[c]) > 0]
    strength = [float(shares[c].max()) if c in present else -math.inf for c in range(len(names))]
    rows, limited = select_rows([strength[c] for c in present], context.options.max_classes)
    rows = [present[i] for i in rows]
    rows.sort(key=lambda c: (int(shares[c].argmax()), -float(shares[c].max())))
    negative = bool((shares[present] < 0).any())
    plots.heatmap(
        context.path("shares.png"),
        shares[rows],
        [names[r] for r in rows],
        group_names,
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
            context.src("shares.png"),
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
        context.path("shares-distribution.png"),
        shares[present],
        group_names,
        f"Distribution over all {len(present)} classes",
    )
    body.append(
        h.figure(
            context.src("shares-distribution.png"),
            "distribution of prompt shares over classes",
            "For each prompt, its mean share in every class's logit (one dot per class); the "
            "dashed "
            "line is an equal split.",
        )
    )
    threshold = dominance_threshold(count)
    ranking = dominant_prompts(attribution.class_shares, attribution.class_counts)
    dominated = [d for d in ranking if d.dominated]
    per_prompt = {name: 0 for name in group_names}
    for d in dominated:
        per_prompt[group_names[d.prompt_index]] += 1
    body.append(
        h.paragraph(
            f"{len(dominated)} of {len(ranking)} classes are dominated by one prompt (its "
            f"share ≥ {threshold:.2f}): "
            + ", ".join(f"{name} {k}" for name, k in per_prompt.items())
            + "."
        )
    )
    if dominated:
        shown = dominated[: context.options.max_classes]
        body.append(
            h.table(
                ["class", "dominant prompt", "share", "test accuracy", "other prompts' shares"],
                [
                    [
                        names[d.class_index],
                        group_names[d.prompt_index],
                        f"{d.share:.2f}",
                        _percent(context.accuracy[d.class_index]),
                        ", ".join(
                            f"{group_names[p]} {shares[d.class_index, p]:.2f}"
                            for p in range(count)
                            if p != d.prompt_index
                        ),
                    ]
                    for d in shown
                ],
                numeric=(2, 3),
                caption=(
                    "Classes where one prompt dominates, strongest first"
                    + (
                        f" (first {len(shown)} of {len(dominated)})"
                        if len(shown) < len(dominated)
                        else ""
                    )
                ),
            )
        )
    return h.section(anchor, title, h.join(body))


def _accuracy_section(context: _Context) -> h.Raw:
    anchor = f"{context.summary.anchor}-accuracy"
    title = "Per-class accuracy"
    names, accuracy = context.classnames, context.accuracy
    if not names or all(math.isnan(a) for a in accuracy):
        return h.section(anchor, title, h.skipped("results.json has no per-class accuracy"))
    overall = context.summary.results.get("test_accuracy")
    values = [0.0 if math.isnan(a) else a for a in accuracy]
    plots.accuracy_bars(
        context.path("accuracy.png"),
        names,
        values,
        "Test accuracy per class",
        context.options.max_classes,
        overall,
    )
    counts = _test_counts(context)
    caption = "Sorted, best first; the dashed line is the overall test accuracy."
    if len(names) > context.options.max_classes:
        caption += (
            " Left: every class as a sorted profile; right: the best and worst classes by name."
        )
    rows = sorted(range(len(names)), key=lambda c: (values[c], names[c]))
    table = h.table(
        ["class", "test images", "accuracy"],
        [[names[c], counts[c] if counts else "—", _percent(values[c])] for c in rows],
        numeric=(1, 2),
    )
    return h.section(
        anchor,
        title,
        h.join(
            [
                h.figure(context.src("accuracy.png"), "per-class test accuracy", caption),
                h.details(f"All {len(names)} classes, worst first", table),
            ]
        ),
    )


def _test_counts(context: _Context) -> list[int] | None:
    matrix = context.summary.results.get("test_confusion")
    if not matrix:
        return None
    return [int(sum(row)) for row in matrix]


def _confusion_section(context: _Context, worst: int = 10, columns: int = 16) -> h.Raw:
    anchor = f"{context.summary.anchor}-confusion"
    title = "Confusions of the worst classes"
    matrix = context.summary.results.get("test_confusion")
    names = context.classnames
    if not matrix or len(matrix) != len(names):
        return h.section(anchor, title, h.skipped("results.json has no test confusion matrix"))
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1)
    present = [c for c in range(len(names)) if totals[c] > 0]
    full = len(names) <= min(12, context.options.max_classes)
    if full:
        rows = present
        cols = list(range(len(names)))
        label = "Confusion matrix (all classes)"
    else:
        accuracy = {c: counts[c, c] / totals[c] for c in present}
        rows = sorted(present, key=lambda c: (accuracy[c], names[c]))[:worst]
        cols = list(rows)
        for c in rows:
            off = [(counts[c, p], p) for p in range(len(names)) if p != c and counts[c, p] > 0]
            for _, p in sorted(off, reverse=True)[:2]:
                if p not in cols and len(cols) < columns:
                    cols.append(p)
        label = f"Confusions of the {len(rows)} classes with the lowest test accuracy"
    shown = counts[np.ix_(rows, cols)]
    col_labels = [names[c] for c in cols]
    other = totals[rows] - shown.sum(axis=1)
    if other.any():
        shown = np.concatenate([shown, other[:, None]], axis=1)
        col_labels.append("(other classes)")
    plots.confusion(
        context.path("confusion.png"),
        shown,
        [names[r] for r in rows],
        col_labels,
        totals[rows],
        label,
    )
    pairs = [
        (int(counts[t, p]), t, p)
        for t in present
        for p in range(len(names))
        if p != t and counts[t, p] > 0
    ]
    pairs.sort(key=lambda item: (-item[0], names[item[1]]))
    body: list[object] = [
        h.figure(
            context.src("confusion.png"),
            "confusion matrix of the worst classes",
            "Rows: true class; columns: predicted class. Colour: fraction of the true class's "
            "test images; "
            "numbers: image counts."
            + (
                " Columns are these classes plus the classes they are most often "
                "mistaken for; the rest are summed in '(other classes)'."
                if not full
                else ""
            ),
        )
    ]
    if pairs:
        body.append(
            h.table(
                ["true class", "predicted as", "images", "fraction of the true class"],
                [[names[t], names[p], n, _percent(n / totals[t])] for n, t, p in pairs[:10]],
                numeric=(2, 3),
                caption="The most frequent confusions",
            )
        )
    return h.section(anchor, title, h.join(body))


def _curves_section(context: _Context) -> h.Raw:
    anchor = f"{context.summary.anchor}-curves"
    title = "Training curves"
    history = context.summary.history
    results = context.summary.results
    if not history:
        reason = (
            "nothing is trained for this method (zero-shot)"
            if not results.get("prompts")
            else "the run has no metrics.jsonl rows"
        )
        return h.section(anchor, title, h.skipped(reason))
    plots.training_curves(
        context.path("curves.png"),
        history,
        results.get("selected_epoch"),
        f"Training — {context.summary.title}",
    )
    speeds = [
        row["images_per_s"]
        for row in history
        if row.get("images_per_s") and not row.get("estimate_only")
    ]
    caption = (
        "Loss and accuracy per epoch. Train accuracy is measured during the training pass "
        "(with augmentation); "
        "validation accuracy on the few-shot validation split, every few epochs. The grey band "
        "marks epochs "
        "that only estimate the PRM; the dotted line the selected epoch."
        + (f" Median training speed {statistics.median(speeds):.0f} images/s." if speeds else "")
    )
    return h.section(anchor, title, h.figure(context.src("curves.png"), "training curves", caption))


def _files_section(context: _Context) -> h.Raw:
    anchor = f"{context.summary.anchor}-files"
    names = context.classnames
    attribution = context.attribution
    model = context.model
    header = ["class", "test_images", "test_accuracy"]
    counts = _test_counts(context)
    share_names: list[str] = []
    if attribution is not None and model is not None and prompt_count(model) > 1:
        share_names = [
            f"share_{n}" for n in model.bank.group_names[: attribution.class_shares.shape[1]]
        ]
    rows = []
    for c, name in enumerate(names):
        row: list[object] = [name, counts[c] if counts else "", f"{context.accuracy[c]:.6f}"]
        if share_names:
            row += [f"{float(v):.6f}" for v in attribution.class_shares[c]]
        rows.append(row)
    _write_csv(context.path("per_class.csv"), header + share_names, rows)
    links = [
        f'<a href="{h.esc(context.src("per_class.csv"))}">per_class.csv</a> (accuracy'
        + (" and prompt shares" if share_names else "")
        + " per class)"
    ]
    if model is not None and model.recipe.needs_descriptions:
        weights = prm_weights(model)
        means = attribution.description_means if attribution is not None else None
        description_rows = []
        for c, name in enumerate(names):
            for j, text in enumerate(model.bank.texts[c]):
                group = int(model.bank.groups[c, j])
                description_rows.append(
                    [
                        name,
                        j,
                        model.bank.group_names[group]
                        if group < len(model.bank.group_names)
                        else group,
                        f"{float(weights[c, j]):.6f}" if weights is not None else "",
                        f"{float(means[c, j]):.6f}" if means is not None else "",
                        text,
                    ]
                )
        _write_csv(
            context.path("descriptions.csv"),
            ["class", "index", "group", "prm_weight", "mean_contribution", "text"],
            description_rows,
        )
        links.append(
            f'<a href="{h.esc(context.src("descriptions.csv"))}">descriptions.csv</a> '
            "(every description with its group, PRM weight and mean contribution)"
        )
    return h.section(
        anchor,
        "Data files",
        h.Raw("<ul>" + "".join(f"<li>{link}</li>" for link in links) + "</ul>"),
    )


# ----------------------------------------------------------------------------- several runs


def _comparison_section(summaries: list[RunSummary], out_dir: Path, options: Options) -> h.Raw:
    body: list[object] = []
    rows = []
    for s in summaries:
        r = s.results
        speeds = [
            row["images_per_s"]
            for row in s.history
            if row.get("images_per_s") and not row.get("estimate_only")
        ]
        rows.append(
            [
                h.Raw(f'<a href="#{s.anchor}">{h.esc(r.get("method"))}</a>'),
                _dataset_name(str(r.get("dataset"))),
                (r.get("backbone") or {}).get("arch", "?"),
                r.get("seed"),
                r.get("shots"),
                r.get("epochs"),
                r.get("prompts", 0),
                f"{r.get('trainable_parameters', 0):,}",
                _percent(r.get("val_accuracy")),
                _percent(r.get("test_accuracy")),
                _seconds(r.get("wall_time_s")),
                f"{statistics.median(speeds):.0f}" if speeds else "—",
            ]
        )
    body.append(
        h.table(
            [
                "method",
                "dataset",
                "backbone",
                "seed",
                "shots",
                "epochs",
                "prompts",
                "trainable",
                "val acc",
                "test acc",
                "wall time",
                "train img/s",
            ],
            rows,
            numeric=tuple(range(3, 12)),
            caption="Every run (click a method for its section)",
        )
    )
    table = comparison_table([s.run_dir for s in summaries])
    if any(len(cell["seeds"]) > 1 for row in table["rows"] for cell in row["cells"].values()):
        datasets = table["datasets"]
        seed_rows = []
        for row in table["rows"]:
            cells = []
            for dataset in datasets:
                cell = row["cells"].get(dataset)
                cells.append(
                    f"{cell['mean']:.1f} ± {cell['std']:.1f} (n={len(cell['seeds'])})"
                    if cell
                    else "—"
                )
            seed_rows.append([row["method"], *cells])
        body.append(
            h.table(
                ["method", *[_dataset_name(d) for d in datasets]],
                seed_rows,
                numeric=tuple(range(1, len(datasets) + 1)),
                caption="Test accuracy (%), mean ± std over seeds",
            )
        )
    body.append(_differences(summaries, out_dir, options))
    return h.Raw(f'<section id="compare"><h2>Comparison</h2>{h.join(body)}</section>')


def _differences(summaries: list[RunSummary], out_dir: Path, options: Options) -> h.Raw:
    """Per dataset: each method's per-class accuracy (mean over seeds) minus the reference's."""
    by_dataset: dict[tuple[str, tuple[str, ...]], dict[str, list[list[float]]]] = {}
    for s in summaries:
        names = tuple(s.results.get("classnames") or ())
        per_class = s.results.get("per_class_accuracy") or {}
        if not names:
            continue
        methods = by_dataset.setdefault((str(s.results.get("dataset")), names), {})
        methods.setdefault(str(s.results.get("method")), []).append(
            [float(per_class.get(n, 0.0)) for n in names]
        )
    figures: list[object] = []
    made = 0
    for (dataset, names), methods in by_dataset.items():
        if len(methods) < 2:
            continue
        order = list(methods)
        reference = options.reference if options.reference in methods else order[0]
        base = np.mean(methods[reference], axis=0)
        for method in order:
            if method == reference:
                continue
            made += 1
            diff = np.mean(methods[method], axis=0) - base
            seeds = (
                f" (mean over {len(methods[method])} and {len(methods[reference])} seeds)"
                if len(methods[method]) > 1 or len(methods[reference]) > 1
                else ""
            )
            name = f"diff-{made}-{_slug(method)}-vs-{_slug(reference)}.png"
            plots.difference_bars(
                out_dir / name,
                list(names),
                diff,
                f"{method} − {reference} on {_dataset_name(dataset)}",
                options.max_classes,
            )
            better, worse = int((diff > 1e-9).sum()), int((diff < -1e-9).sum())
            figures.append(
                h.figure(
                    name,
                    f"per-class accuracy difference {method} minus {reference}",
                    f"Per-class test accuracy of {method} minus {reference} on "
                    f"{_dataset_name(dataset)}{seeds}: "
                    f"{better} classes better, {worse} worse, {len(names) - better - worse} "
                    "unchanged; mean "
                    f"difference {100 * float(diff.mean()):+.1f} points."
                    + (
                        " The largest gains and losses are shown."
                        if len(names) > options.max_classes
                        else ""
                    ),
                )
            )
    title = h.tag("h3", "Per-class differences between methods")
    if not made:
        return h.join(
            [
                title,
                h.skipped("per-class differences need two methods evaluated on the same dataset"),
            ]
        )
    return h.join([title, h.Raw(f'<div class="grid">{h.join(figures)}</div>')])


def _definitions() -> h.Raw:
    return h.Raw(
        '<section id="definitions"><h2>Definitions</h2>'
        + h.paragraph(
            "Description score z[c,j] = s·cos(f_img(P_g(c,j)(x)), f_txt(text_c,j)): the scaled "
            "cosine between "
            "the image with prompt g(c,j) applied and description j of class c. The class "
            "logit aggregates "
            "a class's own scores: the PRM's Σ_j ω[c,j]·z[c,j] for DVP, the mean for template and "
            "description-ensemble methods, α·mean-top-k(descriptive) + (1 − "
            "α)·mean-top-k(distinctive) "
            "for AttrVR. The contribution of description j is its term in that sum (for AttrVR: "
            "weight/k if it is among its set's top-k, else 0), so contributions add up to the "
            "logit exactly."
        )
        + h.note(SHARE_DEFINITION)
        + h.paragraph(
            "A class is dominated by a prompt when that prompt's share is at least "
            f"{dominance_threshold(3):.2f} "
            f"(at least {dominance_threshold(2):.2f} with two prompts)."
        )
        + "</section>"
    )


__all__ = ["Options", "explain", "read_history", "select_rows"]
