"""Zero-shot accuracy with class-name prompts: the held-out-combination check and any task folder.

The held-out check task has one class per pair in :data:`~reprogram.toy.world.HELD_OUT_PAIRS`
(30 (shape, colour) pairs that never occur in a pretraining image), named ``"<colour> <shape>"``,
e.g. ``"red circle"``; its images draw the other factors (texture, size, position, background)
freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from reprogram.errors import ReprogramError
from reprogram.toy import world

TEMPLATE = "This is a photo of {}."
HELDOUT_SEED = 20250601


class Encoder(Protocol):
    """What the check needs of a model (a :class:`~reprogram.backbones.Backbone` has all of it)."""

    input_size: int
    mean: Sequence[float]
    std: Sequence[float]

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor: ...


def pair_classname(shape: str, color: str) -> str:
    return f"{color} {shape}"


def heldout_classnames() -> list[str]:
    return [pair_classname(shape, color) for shape, color in world.HELD_OUT_PAIRS]


def heldout_images(
    per_class: int = 40, size: int = 64, seed: int = HELDOUT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×S×S×3 images, int labels) of the held-out check task, class-major order."""
    shapes = [s for s, _ in world.HELD_OUT_PAIRS for _ in range(per_class)]
    colors = [c for _, c in world.HELD_OUT_PAIRS for _ in range(per_class)]
    scenes = world.sample_scenes(len(shapes), seed, fixed={"shape": shapes, "color": colors})
    labels = np.repeat(np.arange(len(world.HELD_OUT_PAIRS)), per_class)
    return world.render(scenes, size), labels


def to_pixels(
    images: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 N×H×W×3 → normalised float N×3×size×size (antialiased bilinear resize)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    m = torch.tensor(list(mean), dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(list(std), dtype=torch.float32)[None, :, None, None]
    return (x - m) / s


@torch.no_grad()
def zeroshot_predict(
    model: Encoder,
    images: np.ndarray,
    classnames: Sequence[str],
    *,
    template: str = TEMPLATE,
    batch_size: int = 256,
) -> np.ndarray:
    """Predicted labels: argmax of cos(image, text(template.format(class)))."""
    text = model.encode_text([template.format(c) for c in classnames]).float().cpu()
    predictions = []
    for start in range(0, len(images), batch_size):
        pixels = to_pixels(
            images[start : start + batch_size], model.input_size, model.mean, model.std
        )
        device = getattr(model, "device", torch.device("cpu"))
        features = model.encode_image(pixels.to(device)).float().cpu()
        predictions.append((features @ text.T).argmax(dim=1).numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def zeroshot_accuracy(
    model: Encoder, images: np.ndarray, labels: np.ndarray, classnames: Sequence[str]
) -> float:
    predicted = zeroshot_predict(model, images, classnames)
    return float((predicted == np.asarray(labels)).mean())


def heldout_accuracy(model: Encoder, per_class: int = 40, seed: int = HELDOUT_SEED) -> float:
    """Zero-shot accuracy on the 30 held-out (shape, colour) classes (chance: 1/30)."""
    images, labels = heldout_images(per_class, model.input_size, seed)
    return zeroshot_accuracy(model, images, labels, heldout_classnames())


def read_task_split(
    task_dir: str | Path, split: str = "test"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (uint8 N×S×S×3), labels and class names of one split of a task folder."""
    from PIL import Image

    root = Path(task_dir)
    names_file = root / "classnames.txt"
    if names_file.is_file():
        classnames = [line for line in names_file.read_text(encoding="utf-8").splitlines() if line]
    else:
        classnames = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classnames):
        folder = root / split / name
        if not folder.is_dir():
            raise ReprogramError(f"{root}: split '{split}' has no folder for class '{name}'")
        for path in sorted(folder.glob("*.png")):
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB")))
            labels.append(label)
    if not images:
        raise ReprogramError(f"{root}/{split}: no images")
    return np.stack(images), np.array(labels), classnames


def task_accuracy(model: Encoder, task_dir: str | Path, split: str = "test") -> float:
    """Zero-shot accuracy (class-name prompts) on a task folder written by :func:`make_task`."""
    images, labels, classnames = read_task_split(task_dir, split)
    return zeroshot_accuracy(model, images, labels, classnames)


class TrainingEncoder:
    """Adapts a raw open_clip ``CLIP`` being trained to :class:`Encoder` (no freezing, no cache)."""

    def __init__(self, model: torch.nn.Module, tokenizer, input_size: int, mean, std) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.input_size, self.mean, self.std = input_size, mean, std

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixels), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts))), dim=-1)
