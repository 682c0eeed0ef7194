"""Evaluation: accuracy, per-class accuracy and the confusion matrix of a model on a split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from reprogram.data.images import DecodedImages, as_float
from reprogram.engine.distributed import World
from reprogram.model.methods import Reprogrammer
from reprogram.model.precision import Precision


@dataclass
class Evaluation:
    accuracy: float
    per_class: list[float | None]  # None: no image of that class
    confusion: torch.Tensor  # C×C counts, rows = true class
    count: int
    nonfinite: int = 0  # images whose class scores are not all finite (a diverged model)


Advance = Callable[..., None]  # advance(n): n more images done (a progress bar's step)


def no_progress(n: int = 1, **_: Any) -> None:
    """The ``advance`` of a pass that shows no progress."""


def batches(count: int, size: int):
    for start in range(0, count, size):
        yield start, min(start + size, count)


@torch.no_grad()
def predict_logits(
    model: Reprogrammer,
    images: DecodedImages,
    batch_size: int,
    dtype: Precision | torch.dtype,
    advance: Advance = no_progress,
) -> torch.Tensor:
    """Logits (N×C, fp32, on the model's device) for every decoded image."""
    device = model.text_features.device
    precision = Precision.of(dtype, device)
    outputs = []
    for start, stop in batches(len(images), batch_size):
        pixels = as_float(images.pixels[start:stop].to(device, non_blocking=True))
        outputs.append(model(pixels, precision).logits)
        advance(stop - start)
    return torch.cat(outputs) if outputs else torch.zeros(0, model.bank.num_classes, device=device)


def summarise(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int, world: World = World()
) -> Evaluation:
    """Accuracy, per-class accuracy and confusion; under ``world`` the confusion counts of
    every process's shard are summed first (integers: the same numbers as one process)."""
    labels = labels.to(logits.device)
    predictions = logits.argmax(dim=1)
    # the C×C counts, then the count of images with non-finite scores: one sum across processes
    counts = torch.zeros(num_classes * num_classes + 1, dtype=torch.long, device=logits.device)
    counts.index_add_(0, labels * num_classes + predictions, torch.ones_like(labels))
    counts[-1] = (~torch.isfinite(logits).all(dim=1)).sum()
    counts = world.all_reduce_sum(counts).cpu()
    confusion, nonfinite = counts[:-1].view(num_classes, num_classes), int(counts[-1])
    totals = confusion.sum(dim=1)
    rates = (confusion.diag().double() / totals.clamp_min(1)).tolist()
    # a class without images has no accuracy (None, null in JSON), not 0.0
    per_class = [r if n > 0 else None for r, n in zip(rates, totals.tolist(), strict=True)]
    count = int(totals.sum())
    accuracy = float(confusion.diag().sum()) / max(count, 1)
    return Evaluation(accuracy, per_class, confusion, count, nonfinite)


def evaluate(
    model: Reprogrammer,
    images: DecodedImages,
    batch_size: int,
    dtype: Precision | torch.dtype,
    advance: Advance = no_progress,
    world: World = World(),
) -> Evaluation:
    """Evaluate ``images``; under ``world`` (torchrun) each process runs its shard of whole
    batches and the counts are gathered, so every process returns the full evaluation."""
    model.eval()
    start, stop = shard_range(len(images), batch_size, world)
    shard = DecodedImages(
        images.pixels[start:stop], images.labels[start:stop], images.sizes[start:stop], []
    )
    logits = predict_logits(model, shard, batch_size, dtype, advance)
    return summarise(logits, shard.labels, model.bank.num_classes, world)


def shard_range(count: int, batch_size: int, world: World) -> tuple[int, int]:
    """This process's contiguous share of ``count`` images, in whole batches of ``batch_size``
    (the batches one process would run, so each image's logits are the same); shards may be
    uneven or empty."""
    total = -(-count // batch_size)
    per = -(-total // world.size)
    first = min(world.rank * per, total)
    last = min(first + per, total)
    return min(first * batch_size, count), min(last * batch_size, count)
