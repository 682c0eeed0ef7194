"""The learned prompts as images, applied to a few test images, with what drove each prediction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from reprogram.model.attribution import Driver, prompt_name, top_class_drivers
from reprogram.report import html as h
from reprogram.report import plots
from reprogram.report.common import Output, save_png, to_image
from reprogram.report.load import RunData

TITLE = "Learned prompts"


@dataclass
class Frame:
    """One prompt on its own (3×S×S in [0, 1]) and a contrast-stretched copy."""

    label: str
    frame: torch.Tensor
    stretched: torch.Tensor


@dataclass
class Example:
    """A test image as it enters the model, with each prompt applied and the prediction."""

    truth: str
    predicted: str
    probability: float  # of the predicted class
    driver: Driver
    input: np.ndarray  # H×W×3 in [0, 1]
    prompted: list[np.ndarray]  # per prompt, as the encoder sees it (before normalisation)

    @property
    def correct(self) -> bool:
        return self.predicted == self.truth


@dataclass
class PromptsView:
    anchor: str
    run_title: str
    method: str
    skipped: str | None = None  # no model: nothing can be shown
    kind: str = "none"  # padding, watermark or none
    shrinks_image: bool = False  # padding: the image enters shrunk, the frame around it
    frames: list[Frame] = field(default_factory=list)
    examples: list[Example] | None = None  # None: no test images
    images_reason: str = ""


def example_indices(labels: torch.Tensor, count: int) -> list[int]:
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


def frames(model) -> list[Frame]:
    """Per prompt: its frame on its own and a contrast-stretched copy.

    Padding prompts: sigmoid(theta) on the frame, the inside (where the image goes) mid-grey.
    Watermark prompts: the additive pattern applied to a mid-grey image, in pixel units.
    The stretched copy maps the largest deviation from mid-grey on the frame to full contrast.
    """
    prompts, kind = model.prompts, model.recipe.prompt
    if not kind.trains:
        return []
    patterns = prompts.patterns().detach().float().cpu()
    mask = prompts.mask.float().cpu()
    std = prompts.std.view(3, 1, 1).float().cpu()
    names = model.bank.group_names
    made = []
    for index in range(prompts.count):
        if kind.shrinks_image:
            frame = patterns[index] + (1 - mask) * 0.5
        else:
            frame = 0.5 + patterns[index] * std
        frame = frame.clamp(0, 1)
        deviation = (frame - 0.5) * mask
        scale = float(deviation.abs().max())
        stretched = 0.5 + deviation * (0.5 / scale) if scale > 1e-6 else frame
        label = (
            f"prompt {index + 1}: {prompt_name(names, index)}" if prompts.count > 1 else "prompt"
        )
        made.append(Frame(label, frame, stretched))
    return made


def _examples(data: RunData) -> list[Example]:
    from reprogram.data.images import as_float
    from reprogram.model.precision import Precision

    model, images = data.model, data.images
    prompts = model.prompts
    chosen = example_indices(images.labels, data.options.examples)
    device = model.text_features.device
    batch = as_float(images.pixels[chosen].to(device))
    with torch.no_grad():
        prompted = prompts(batch).float()  # v×B×3×S×S, normalised
        shown = (prompted * prompts.std.float() + prompts.mean.float()).clamp(0, 1)
        output = model(batch, Precision.of(data.dtype, device))
    probabilities = output.logits.float().softmax(dim=1)
    drivers = top_class_drivers(model, output.scores, output.logits)
    examples = []
    for i, index in enumerate(chosen):
        if model.recipe.prompt.shrinks_image:  # light grey marks the frame around it
            image = torch.nn.functional.pad(batch[i], (prompts.frame,) * 4, value=0.85)
        else:
            image = batch[i]
        driver = drivers[i]
        examples.append(
            Example(
                truth=data.classnames[int(images.labels[index])],
                predicted=data.classnames[driver.class_index],
                probability=float(probabilities[i, driver.class_index]),
                driver=driver,
                input=to_image(image),
                prompted=[to_image(shown[p, i]) for p in range(prompts.count)]
                if model.recipe.prompt.trains
                else [],
            )
        )
    return examples


def compute_prompts(data: RunData) -> PromptsView:
    view = PromptsView(f"{data.summary.anchor}-prompts", data.summary.title, data.method)
    model = data.model
    if model is None:
        view.skipped = data.no_model_reason()
        return view
    view.kind = model.recipe.prompt.name
    view.shrinks_image = model.recipe.prompt.shrinks_image
    view.frames = frames(model)
    if data.images is None:
        view.images_reason = data.no_images_reason()
    else:
        view.examples = _examples(data)
    return view


def _frame_caption(view: PromptsView, out: Output) -> str:
    if not view.frames:
        return ""
    return (
        "“frame” is each prompt on its own: "
        + (
            "sigmoid(θ) on the frame, the inside (where the image goes) grey; "
            if view.shrinks_image
            else "its additive pattern applied to a mid-grey image; "
        )
        + "“stretched” is the same with its deviation from grey stretched to full contrast, "
        "to make faint patterns visible. Native-resolution frames: "
        + ", ".join(
            f'<a href="{h.esc(out.src(f"prompt-{i}.png"))}">prompt {i}</a>'
            for i in range(1, len(view.frames) + 1)
        )
        + ". "
    )


def _driver_table(examples: list[Example]) -> h.Raw:
    rows = []
    for number, example in enumerate(examples, start=1):
        driver = example.driver
        prompt_cell = "—"
        if driver.prompt is not None and driver.prompt_shares:
            prompt_cell = f"{driver.prompt} ({driver.prompt_shares[driver.prompt]:.0%} share)"
        description = driver.description
        if description is None:
            description = "— (one text per class: the class-name template)"
        css = "good" if example.correct else "bad"
        rows.append(
            [
                number,
                example.truth,
                h.Raw(f'<span class="{css}">{h.esc(example.predicted)}</span>'),
                f"{example.probability:.2f}",
                prompt_cell,
                description,
            ]
        )
    return h.table(
        ["#", "true class", "predicted", "p", "top prompt", "top description"],
        rows,
        numeric=(0, 3),
        caption="What drove each example's top class (the same computation as "
        "`reprogram predict`): the prompt with the largest share and the description with the "
        "largest contribution, among those that carry weight.",
    )


def render_prompts(view: PromptsView, out: Output) -> h.Raw:
    if view.skipped is not None:
        return h.section(view.anchor, TITLE, h.skipped(view.skipped))
    body: list[object] = []
    for index, frame in enumerate(view.frames, start=1):
        save_png(frame.frame, out.path(f"prompt-{index}.png"))
    if not view.frames:
        body.append(
            h.skipped(
                f"method '{view.method}' has no visual prompt: test images enter the frozen model "
                "unchanged. The examples below show what the model sees and what it predicts."
            )
        )
    frame_caption = _frame_caption(view, out)
    figure_title = f"Learned prompts — {view.run_title}"
    frame_cells = [[to_image(f.frame), to_image(f.stretched)] for f in view.frames]
    if view.examples is None:
        if view.frames:
            plots.image_grid(
                out.path("prompts.png"),
                figure_title,
                ["frame", "stretched"],
                [f.label for f in view.frames],
                frame_cells,
            )
            body.append(
                h.figure(out.src("prompts.png"), "learned prompt frames", h.Raw(frame_caption))
            )
        body.append(h.skipped(f"test images with the prompts applied: {view.images_reason}"))
        return h.section(view.anchor, TITLE, h.join(body))

    examples = view.examples
    columns = (["frame", "stretched"] if view.frames else []) + [
        f"{i}. {example.truth}" for i, example in enumerate(examples, start=1)
    ]
    lead: list[None] = [None, None] if view.frames else []
    cells = [lead + [example.input for example in examples]]
    for p, lead_cells in enumerate(frame_cells):
        cells.append(lead_cells + [example.prompted[p] for example in examples])
    plots.image_grid(
        out.path("prompts.png"),
        figure_title,
        columns,
        ["input"] + [f.label for f in view.frames],
        cells,
    )
    caption = (
        "Row “input”: test images (true class above) as they enter the model"
        + (
            ", shrunk to the inner size; light grey marks where the frame goes"
            if view.shrinks_image
            else ""
        )
        + ". "
        + (
            "Other rows: each prompt applied to them, as the encoder sees it (before "
            "normalisation). "
            if view.frames
            else ""
        )
        + frame_caption
    )
    body.append(
        h.figure(out.src("prompts.png"), "learned prompts applied to test images", h.Raw(caption))
    )
    body.append(_driver_table(examples))
    return h.section(view.anchor, TITLE, h.join(body))
