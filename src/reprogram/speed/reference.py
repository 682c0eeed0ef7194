"""A training loop with the structure of the official DVP scripts, for ``reprogram bench``.

This is our reading of how the official scripts spend their time (see
/work/shared/reference/dvp.md and docs/benchmarks.md), written from that description; it is not
their code. What makes it "reference-style":

* images are decoded from their files every epoch, in the main process (``DataLoader`` with
  ``num_workers=0``), by PIL and torchvision transforms (train: Resize + RandomResizedCrop +
  flip + ToTensor; test: Resize + CenterCrop + ToTensor, bicubic);
* the v prompts run one after another: one image-encoder call per prompt and batch;
* fp32 weights under fp16 autocast on GPUs (no gradient scaler); plain fp32 on CPU;
* epoch 0 only estimates the PRM; every epoch ends with a full test evaluation whose best
  accuracy is kept;
* one SGD optimiser and one cosine schedule (per step) per prompt;
* the running loss is read back to the host every step (as a progress bar's postfix does).

The maths is the same as :class:`reprogram.model.methods.Reprogrammer` (that is checked by
:func:`compare_logits`); only the structure differs.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from reprogram.data.readers import Sample
from reprogram.model.methods import Reprogrammer
from reprogram.model.precision import Precision


def reference_dtype(device: torch.device) -> torch.dtype:
    """The official scripts' precision: fp16 autocast over fp32 weights on GPUs (fp32 on CPU)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def reference_transforms(size: int):
    """(train, test) torchvision pipelines at the prompt bank's inner image size."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    train = T.Compose(
        [
            T.Resize(size, interpolation=bicubic),
            T.RandomResizedCrop(size, interpolation=bicubic),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
        ]
    )
    test = T.Compose([T.Resize(size, interpolation=bicubic), T.CenterCrop(size), T.ToTensor()])
    return train, test


class FileImages(torch.utils.data.Dataset):
    """(image tensor, label) pairs decoded from their files on every access."""

    def __init__(self, samples: list[Sample], transform) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        with Image.open(sample.path) as image:
            return self.transform(image.convert("RGB")), sample.label


class ReferenceModel(nn.Module):
    """One prompt tensor per prompt, applied and encoded one after another.

    Built from a :class:`Reprogrammer` (:meth:`from_reprogrammer`) so that both share the frozen
    backbone, the text features and the aggregation; prompts and aggregator state are copied.
    Each prompt's image features are scored against every text and masked to the texts that
    prompt owns; the masked score matrices are summed (each text is owned by one prompt).
    """

    def __init__(self, model: Reprogrammer) -> None:
        super().__init__()
        bank = model.prompts
        if bank.kind not in ("padding", "watermark"):
            raise ValueError(
                f"the reference loop trains prompts; method '{model.recipe.name}' has none"
            )
        self.kind = bank.kind
        self.frame = bank.frame
        self.backbone = model.backbone
        self.theta = nn.ParameterList(
            [nn.Parameter(bank.theta.detach()[i].clone()) for i in range(bank.count)]
        )
        self.register_buffer("mask", bank.mask.clone())
        self.register_buffer("mean", bank.mean.clone())
        self.register_buffer("std", bank.std.clone())
        features = model.text_features
        self.num_classes, self.per_class = features.shape[:2]
        self.register_buffer("text_features", features.reshape(-1, features.shape[-1]).clone())
        self.register_buffer(
            "owned", torch.stack([(model.groups == i).float() for i in range(bank.count)])
        )
        self.logit_scale = model.logit_scale
        self.aggregator = copy.deepcopy(model.aggregator)
        self.image_size = bank.image_size

    @classmethod
    def from_reprogrammer(cls, model: Reprogrammer) -> ReferenceModel:
        return cls(model)

    def prompt(self, i: int, images: torch.Tensor) -> torch.Tensor:
        """Prompt i applied to a batch: B×3×S×S, normalised."""
        if self.kind == "padding":
            f = self.frame
            padded = F.pad(images, (f, f, f, f), value=0.0)
            return (padded + torch.sigmoid(self.theta[i]) * self.mask - self.mean) / self.std
        return (images - self.mean) / self.std + self.theta[i] * self.mask

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits B×C, description scores B×C×M), one encoder call per prompt."""
        scores = None
        for i in range(len(self.theta)):
            features = self.backbone.encode_image(self.prompt(i, images))
            similarity = self.logit_scale * (features.float() @ self.text_features.t())
            masked = similarity.view(-1, self.num_classes, self.per_class) * self.owned[i]
            scores = masked if scores is None else scores + masked
        return self.aggregator(scores), scores


@dataclass
class ReferenceOptimiser:
    """One SGD optimiser and one per-step cosine schedule per prompt, as the scripts make them."""

    optimizers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]

    @classmethod
    def build(
        cls, model: ReferenceModel, lr: float, momentum: float, total_steps: int
    ) -> ReferenceOptimiser:
        optimizers = [torch.optim.SGD([p], lr=lr, momentum=momentum) for p in model.theta]
        schedulers = [
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(1, total_steps))
            for o in optimizers
        ]
        return cls(optimizers, schedulers)


def train_step(
    model: ReferenceModel,
    optimiser: ReferenceOptimiser,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
) -> float:
    """One training step in the scripts' structure; returns the loss read back to the host."""
    for optimizer in optimiser.optimizers:
        optimizer.zero_grad()
    with Precision.of(dtype, device).everywhere():
        logits, scores = model(images)
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    for optimizer, scheduler in zip(optimiser.optimizers, optimiser.schedulers, strict=True):
        optimizer.step()
        scheduler.step()
    model.aggregator.observe(scores.detach(), labels)
    return loss.item()


@torch.no_grad()
def evaluate_files(
    model: ReferenceModel, loader, device: torch.device, dtype: torch.dtype
) -> tuple[float, int]:
    """Accuracy over a loader that decodes the files (the scripts' per-epoch test pass)."""
    correct, count = 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with Precision.of(dtype, device).everywhere():
            logits, _ = model(images)
        correct += int((logits.argmax(dim=1) == labels).sum().item())
        count += len(labels)
    return correct / max(count, 1), count


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class ReferenceRun:
    epochs_run: int
    epoch_rows: list[dict] = field(default_factory=list)
    best_test_accuracy: float = 0.0
    wall_s: float = 0.0


def reference_fit(
    model: ReferenceModel,
    train: list[Sample],
    test: list[Sample],
    *,
    epochs: int,
    total_epochs: int | None = None,
    batch_size: int = 64,
    lr: float = 40.0,
    momentum: float = 0.9,
    seed: int = 1,
    device: torch.device,
    dtype: torch.dtype | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> ReferenceRun:
    """Run ``epochs`` epochs of the scripts' loop (epoch 0 only estimates the PRM).

    ``total_epochs`` sets the length of the cosine schedule (the run being benchmarked may be
    cut short and extrapolated; the schedule is the full run's).
    """
    dtype = dtype or reference_dtype(device)
    torch.manual_seed(seed)
    train_tf, test_tf = reference_transforms(model.image_size)
    train_loader = torch.utils.data.DataLoader(
        FileImages(train, train_tf), batch_size=batch_size, shuffle=True, num_workers=0
    )
    test_loader = torch.utils.data.DataLoader(
        FileImages(test, test_tf), batch_size=batch_size, shuffle=False, num_workers=0
    )
    total = max(1, total_epochs or epochs) * len(train_loader)  # the published T_max: all epochs
    optimiser = ReferenceOptimiser.build(model, lr, momentum, total)
    run = ReferenceRun(epochs_run=0)
    started = time.perf_counter()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.aggregator.reset_counts()
        running = 0.0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            if epoch == 0:
                with torch.no_grad(), Precision.of(dtype, device).everywhere():
                    _, scores = model(images)
                model.aggregator.observe(scores, labels)
            else:
                running += train_step(model, optimiser, images, labels, device, dtype)
        model.aggregator.update()
        _sync(device)
        t1 = time.perf_counter()
        accuracy, count = evaluate_files(model, test_loader, device, dtype)
        run.best_test_accuracy = max(run.best_test_accuracy, accuracy)
        t2 = time.perf_counter()
        row = {
            "epoch": epoch,
            "estimate_only": epoch == 0,
            "train_s": t1 - t0,
            "train_images_per_s": len(train) / max(t1 - t0, 1e-9),
            "test_s": t2 - t1,
            "test_images_per_s": count / max(t2 - t1, 1e-9),
            "epoch_s": t2 - t0,
            "loss": running / max(1, math.ceil(len(train) / batch_size)) if epoch else None,
            "test_accuracy": accuracy,
        }
        run.epoch_rows.append(row)
        run.epochs_run = epoch + 1
        if on_epoch is not None:
            on_epoch(row)
    run.wall_s = time.perf_counter() - started
    return run


@dataclass
class LogitCheck:
    """How far the reference's logits (and prompt gradients) are from ours on one batch."""

    precision: str
    max_abs_diff: float
    max_abs_logit: float
    relative: float
    tolerance: float
    grad_relative: float | None = None
    passed: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@contextlib.contextmanager
def strict_fp32():
    """No TF32 in matmuls and convolutions (GPUs): fp32 means fp32 for the comparison."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def compare_logits(
    model: Reprogrammer,
    reference: ReferenceModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    ours_dtype: torch.dtype,
    tolerance_fp32: float = 1e-4,
    tolerance_low: float = 5e-2,
) -> list[LogitCheck]:
    """Logits of both models on the same batch: in fp32 (with prompt gradients), then each in
    its own mixed precision (ours ``ours_dtype``, the reference's fp16 on GPUs) if either is not
    fp32. ``relative`` is the largest absolute difference over the largest absolute logit."""
    checks = []
    model.zero_grad(set_to_none=True)
    reference.zero_grad(set_to_none=True)
    with strict_fp32():
        ours = model(images).logits.float()
        F.cross_entropy(ours, labels, reduction="sum").backward()
        theirs, _ = reference(images)
        theirs = theirs.float()
        F.cross_entropy(theirs, labels, reduction="sum").backward()
    grad_ours = model.prompts.theta.grad
    grad_ref = torch.stack([p.grad for p in reference.theta])
    grad_rel = float((grad_ours - grad_ref).abs().max() / grad_ref.abs().max().clamp_min(1e-30))
    checks.append(_check("fp32", ours.detach(), theirs.detach(), tolerance_fp32, grad_rel))
    model.zero_grad(set_to_none=True)
    reference.zero_grad(set_to_none=True)
    ref_dtype = reference_dtype(device)
    if ours_dtype != torch.float32 or ref_dtype != torch.float32:
        with torch.no_grad():
            ours_low = model(images, Precision.of(ours_dtype, device)).logits
            with Precision.of(ref_dtype, device).everywhere():
                theirs_low = reference(images)[0].float()
        ours_name, ref_name = (str(d).removeprefix("torch.") for d in (ours_dtype, ref_dtype))
        name = f"ours {ours_name} vs reference {ref_name}"
        checks.append(_check(name, ours_low, theirs_low, tolerance_low))
    return checks


def _check(
    name: str, ours: torch.Tensor, theirs: torch.Tensor, tolerance: float, grad_rel=None
) -> LogitCheck:
    diff = float((ours - theirs).abs().max())
    scale = float(theirs.abs().max())
    relative = diff / max(scale, 1e-30)
    passed = relative <= tolerance and (grad_rel is None or grad_rel <= tolerance)
    return LogitCheck(name, diff, scale, relative, tolerance, grad_rel, passed)
