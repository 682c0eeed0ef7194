"""What drives a run's logits: per-description and per-prompt contributions, as numbers.

Every method computes ``logit[c] = A(z[c, :])`` from description scores ``z`` (B×C×M). The
aggregations in this library (mean, AttrVR's mean-top-k mix, DVP's PRM) are all *linear once the
top-k choice is made*, so each logit splits exactly into per-description contributions::

    logit[c] = sum_j contribution[c, j]
    PRM:        contribution[c, j] = omega[c, j] * z[c, j]
    mean:       contribution[c, j] = z[c, j] / M
    mean-top-k: contribution[c, j] = w * z[c, j] / k   if j is among its set's top-k, else 0
                (w = alpha for the descriptive set, 1 - alpha for the distinctive set)

Summing the contributions of the descriptions scored by prompt ``p`` gives that prompt's part of
the logit. Because scores are scaled cosines, a part can be negative, so the **share** of prompt
``p`` in class ``c``'s logit is defined as

    share[c, p] = part[c, p] / sum_q |part[c, q]|

which lies in [-1, 1]; the absolute shares sum to 1, and when every part is positive (the usual case
with CLIP, whose image-text cosines are positive) it is the plain fraction of the logit.

:func:`top_class_drivers` (used by ``reprogram predict`` and the report) names, for each image, the
description and the prompt that contributed most to its top class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from reprogram.model.aggregation import ReweightingMatrix, gradient_weights
from reprogram.model.methods import Reprogrammer

EPS = 1e-12


def description_weights(model: Reprogrammer, scores: torch.Tensor) -> torch.Tensor:
    """The weight each description score gets in its class logit (B×C×M, fp32).

    Constant for the mean and the PRM; 0 or ``mix / k`` for AttrVR's top-k (it depends on z).
    Each aggregator knows its own (``Aggregator.description_weights``).
    """
    return model.aggregator.description_weights(scores.float())


def description_contributions(model: Reprogrammer, scores: torch.Tensor) -> torch.Tensor:
    """Per-description contributions (B×C×M, fp32) that sum over M to the model's logits."""
    return scores.float() * description_weights(model, scores)


_gradient = gradient_weights  # any other aggregator: d logit / d z


def prompt_count(model: Reprogrammer) -> int:
    """v: the number of prompts the texts are spread over (1 for single-prompt methods)."""
    groups = model.bank.groups
    return max(model.prompts.count, int(groups.max()) + 1 if groups.numel() else 1)


def prompt_parts(
    model: Reprogrammer, contributions: torch.Tensor, classes: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum description contributions by the prompt that scores each description.

    B×C×M -> B×C×v; or, with ``classes`` (B), one class per row: B×M -> B×v.
    """
    groups = model.bank.groups.to(contributions.device)
    index = (
        groups.expand_as(contributions) if classes is None else groups[classes.to(groups.device)]
    )
    parts = contributions.new_zeros(*contributions.shape[:-1], prompt_count(model))
    return parts.scatter_add_(-1, index, contributions)


def shares(parts: torch.Tensor) -> torch.Tensor:
    """``part / sum(|part|)`` over the last dimension (see the module docstring)."""
    return parts / parts.abs().sum(dim=-1, keepdim=True).clamp_min(EPS)


@dataclass
class Driver:
    """Why an image got a class: the description and prompt that contributed most to its logit.

    ``description`` is None for template methods (their only text is the class-name template);
    ``prompt`` and ``prompt_shares`` are None for single-prompt methods.
    """

    class_index: int
    logit: float
    description_index: int
    description: str | None
    description_contribution: float
    prompt_index: int
    prompt: str | None
    prompt_shares: dict[str, float] | None


def top_class_drivers(
    model: Reprogrammer,
    scores: torch.Tensor,
    logits: torch.Tensor | None = None,
    classes: Sequence[int] | torch.Tensor | None = None,
) -> list[Driver]:
    """For each image, what drove the logit of its top class (or of ``classes[i]`` if given).

    ``scores`` and ``logits`` are a :class:`~reprogram.model.methods.ReprogramOutput`'s fields.
    """
    weights = description_weights(model, scores)
    contributions = scores.float() * weights
    if classes is None:
        logits = contributions.sum(-1) if logits is None else logits.float()
        chosen = logits.argmax(dim=1)
    else:
        chosen = torch.as_tensor(classes, device=contributions.device).long()
    return _drivers(model, contributions, weights, chosen)


def _drivers(
    model: Reprogrammer, contributions: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor
) -> list[Driver]:
    """The largest contribution among the descriptions (and prompts) that carry weight: a
    description with weight 0 contributes exactly 0 and never "drives" a logit, even when the
    weighted ones are negative."""
    rows = torch.arange(len(chosen), device=contributions.device)
    own = contributions[rows, chosen]  # B×M
    active = weights[rows, chosen] != 0
    parts = prompt_parts(model, own, chosen)  # B×v
    active_prompts = prompt_parts(model, active.float(), chosen) > 0
    own_shares = shares(parts).tolist()
    best_description = own.masked_fill(~active, float("-inf")).argmax(dim=1).tolist()
    best_prompt = parts.masked_fill(~active_prompts, float("-inf")).argmax(dim=1).tolist()
    logits, own = own.sum(dim=1).tolist(), own.tolist()
    names = model.bank.group_names
    multi_prompt = model.prompts.count > 1
    texts_are_descriptions = model.recipe.needs_descriptions
    drivers = []
    for i, c in enumerate(chosen.tolist()):
        j, p = best_description[i], best_prompt[i]
        drivers.append(
            Driver(
                class_index=c,
                logit=logits[i],
                description_index=j,
                description=model.bank.texts[c][j] if texts_are_descriptions else None,
                description_contribution=own[i][j],
                prompt_index=p,
                prompt=prompt_name(names, p) if multi_prompt else None,
                prompt_shares=(
                    {prompt_name(names, q): s for q, s in enumerate(own_shares[i])}
                    if multi_prompt
                    else None
                ),
            )
        )
    return drivers


def prompt_name(names: Sequence[str], index: int) -> str:
    """The name of prompt ``index`` (its cause or cluster), or ``prompt N`` past the names."""
    index = int(index)
    return names[index] if index < len(names) else f"prompt {index + 1}"


@dataclass
class Attribution:
    """Contributions accumulated over a set of labelled images (the test split in the report).

    Per class ``c``, averages run over the images whose true class is ``c`` and look at the
    logit of ``c`` itself.
    """

    labels: torch.Tensor  # N
    predictions: torch.Tensor  # N
    image_shares: torch.Tensor  # N×v: prompt shares of each image's true-class logit
    class_shares: torch.Tensor  # C×v: mean of image_shares over the images of each class
    class_counts: torch.Tensor  # C
    description_means: torch.Tensor  # C×M: mean contribution of each description to its class logit
    drivers: list[Driver]  # per image, for its predicted class

    @property
    def accuracy(self) -> float:
        return (
            float((self.labels == self.predictions).float().mean())
            if len(self.labels)
            else float("nan")
        )


@torch.no_grad()
def attribute(
    model: Reprogrammer,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 128,
    dtype: torch.dtype = torch.float32,
    observe: Callable[[object, torch.Tensor], None] | None = None,
) -> Attribution:
    """Run the model over uint8 images (N×3×S×S) and accumulate contributions per class.

    ``observe(output, labels)``, if given, also sees each batch's ``ReprogramOutput`` (so that a
    report section can collect more from the same pass)."""
    from reprogram.data.images import as_float
    from reprogram.model.precision import Precision

    model.eval()
    device = model.text_features.device
    num_classes, per_class = model.bank.num_classes, model.bank.per_class
    count = prompt_count(model)
    share_sum = torch.zeros(num_classes, count, dtype=torch.float64)
    description_sum = torch.zeros(num_classes, per_class, dtype=torch.float64)
    class_counts = torch.zeros(num_classes, dtype=torch.float64)
    all_shares, all_predictions, drivers = [], [], []
    for start in range(0, len(labels), batch_size):
        batch = as_float(pixels[start : start + batch_size].to(device))
        truth = labels[start : start + batch_size].to(device).long()
        output = model(batch, Precision.of(dtype, device))
        if observe is not None:
            observe(output, truth)
        weights = description_weights(model, output.scores)
        contributions = output.scores.float() * weights
        rows = torch.arange(len(truth), device=device)
        own = contributions[rows, truth]  # B×M
        image_shares = shares(prompt_parts(model, own, truth)).cpu().double()
        share_sum.index_add_(0, truth.cpu(), image_shares)
        description_sum.index_add_(0, truth.cpu(), own.cpu().double())
        class_counts.index_add_(0, truth.cpu(), torch.ones(len(truth), dtype=torch.float64))
        predicted = output.logits.float().argmax(dim=1)
        all_shares.append(image_shares.float())
        all_predictions.append(predicted.cpu())
        drivers += _drivers(model, contributions, weights, predicted)
    denominator = class_counts.clamp_min(1).unsqueeze(1)
    return Attribution(
        labels=labels.cpu().long(),
        predictions=torch.cat(all_predictions)
        if all_predictions
        else torch.zeros(0, dtype=torch.long),
        image_shares=torch.cat(all_shares) if all_shares else torch.zeros(0, count),
        class_shares=(share_sum / denominator).float(),
        class_counts=class_counts.long(),
        description_means=(description_sum / denominator).float(),
        drivers=drivers,
    )


def dominance_threshold(prompts: int) -> float:
    """A class is *dominated* by a prompt whose mean share reaches this: 0.5 (0.75 when v = 2)."""
    return max(0.5, 1.5 / max(prompts, 1))


@dataclass
class Dominance:
    class_index: int
    prompt_index: int
    share: float  # the prompt's mean share of the class logit
    dominated: bool  # share >= dominance_threshold(v)


def dominant_prompts(
    class_shares: torch.Tensor, class_counts: torch.Tensor | None = None
) -> list[Dominance]:
    """Each class's strongest prompt and its share, most dominated first (classes with images)."""
    threshold = dominance_threshold(class_shares.shape[1])
    values, indices = class_shares.max(dim=1)
    order = torch.argsort(values, descending=True, stable=True).tolist()
    rows = []
    for c in order:
        if class_counts is not None and int(class_counts[c]) == 0:
            continue
        share = float(values[c])
        rows.append(Dominance(c, int(indices[c]), share, share >= threshold))
    return rows


@dataclass
class DescriptionRank:
    index: int  # column j in the class's texts
    text: str
    group: str  # the cause or cluster (the prompt that scores it)
    weight: float | None  # PRM omega[c, j]; None without a PRM
    contribution: float | None  # mean contribution to the class logit on the test images of c


def prm_weights(model: Reprogrammer) -> torch.Tensor | None:
    """omega (C×M) for PRM methods, else None."""
    aggregator = model.aggregator
    return (
        aggregator.prm.weights.detach().float().cpu()
        if isinstance(aggregator, ReweightingMatrix)
        else None
    )


def top_descriptions(
    model: Reprogrammer,
    class_index: int,
    count: int = 5,
    description_means: torch.Tensor | None = None,
) -> list[DescriptionRank]:
    """A class's descriptions, highest PRM weight first (ties: higher mean contribution).

    Without a PRM they are ranked by mean contribution on the test images instead.
    """
    weights = prm_weights(model)
    texts = model.bank.texts[class_index]
    groups = model.bank.groups[class_index].tolist()
    names = model.bank.group_names
    means = description_means[class_index].tolist() if description_means is not None else None
    keys = []
    for j in range(len(texts)):
        weight = float(weights[class_index, j]) if weights is not None else None
        mean = means[j] if means is not None else None
        keys.append((weight if weight is not None else 0.0, mean if mean is not None else 0.0, -j))
    order = sorted(range(len(texts)), key=lambda j: keys[j], reverse=True)[:count]
    return [
        DescriptionRank(
            j,
            texts[j],
            prompt_name(names, groups[j]),
            float(weights[class_index, j]) if weights is not None else None,
            means[j] if means is not None else None,
        )
        for j in order
    ]


def group_mass(model: Reprogrammer) -> torch.Tensor | None:
    """PRM weight per class summed over each prompt's descriptions (C×v), or None without a PRM."""
    weights = prm_weights(model)
    if weights is None:
        return None
    return torch.zeros(weights.shape[0], prompt_count(model)).scatter_add_(
        1, model.bank.groups.cpu(), weights
    )


__all__ = [
    "Attribution",
    "DescriptionRank",
    "Dominance",
    "Driver",
    "attribute",
    "description_contributions",
    "description_weights",
    "dominance_threshold",
    "dominant_prompts",
    "group_mass",
    "prm_weights",
    "prompt_count",
    "prompt_name",
    "prompt_parts",
    "shares",
    "top_class_drivers",
    "top_descriptions",
]
