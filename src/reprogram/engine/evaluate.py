"""Evaluation: accuracy, per-class accuracy and the confusion matrix of a model on a split."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reprogram.data.images import DecodedImages, as_float
from reprogram.methods import Reprogrammer
from reprogram.precision import autocast


@dataclass
class Evaluation:
    accuracy: float
    per_class: list[float]
    confusion: torch.Tensor  # C×C counts, rows = true class
    count: int

    def to_dict(self, classnames: list[str]) -> dict:
        return {
            "accuracy": self.accuracy,
            "per_class_accuracy": dict(zip(classnames, self.per_class, strict=True)),
            "count": self.count,
        }


def batches(count: int, size: int):
    for start in range(0, count, size):
        yield start, min(start + size, count)


@torch.no_grad()
def predict_logits(
    model: Reprogrammer,
    images: DecodedImages,
    batch_size: int,
    dtype: torch.dtype,
    advance=lambda n=1, **_: None,
) -> torch.Tensor:
    """Logits (N×C, fp32, on the model's device) for every decoded image."""
    device = model.text_features.device
    outputs = []
    for start, stop in batches(len(images), batch_size):
        pixels = as_float(images.pixels[start:stop].to(device, non_blocking=True))
        with autocast(device, dtype):
            outputs.append(model(pixels).logits.float())
        advance(stop - start)
    return torch.cat(outputs) if outputs else torch.zeros(0, model.bank.num_classes, device=device)


def summarise(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Evaluation:
    labels = labels.to(logits.device)
    predictions = logits.argmax(dim=1)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=logits.device)
    confusion.index_add_(0, labels * num_classes + predictions, torch.ones_like(labels))
    confusion = confusion.view(num_classes, num_classes).cpu()
    totals = confusion.sum(dim=1)
    per_class = (confusion.diag().double() / totals.clamp_min(1)).tolist()
    count = int(totals.sum())
    accuracy = float(confusion.diag().sum()) / max(count, 1)
    return Evaluation(accuracy, per_class, confusion, count)


def evaluate(
    model: Reprogrammer,
    images: DecodedImages,
    batch_size: int,
    dtype: torch.dtype,
    advance=lambda n=1, **_: None,
) -> Evaluation:
    model.eval()
    logits = predict_logits(model, images, batch_size, dtype, advance)
    return summarise(logits, images.labels, model.bank.num_classes)
