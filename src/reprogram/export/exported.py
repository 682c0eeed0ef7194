"""An exported model in memory: the image encoder, the prompts and the folded head.

``logits = Σ_g normalise(f_img(prompt_g(x))) @ W_g`` — no text encoder, no description file.
:func:`load_exported` reads a folder written by ``reprogram export``;
:meth:`ExportedModel.from_reprogrammer` folds a model in memory (tests, the speed bench).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from reprogram.backbones import Backbone, load_backbone
from reprogram.data.images import (
    as_float,
    center_crop,
    load_rgb,
    resize_short_side,
    to_rgb,
    to_uint8_chw,
)
from reprogram.engine.runs import DIVERGED, NonFiniteScores, Prediction
from reprogram.errors import ReprogramError
from reprogram.export.bundle import MANIFEST, read_export
from reprogram.model.attribution import prompt_name, shares
from reprogram.model.fold import fold_reprogrammer, folded_logits, prompt_logits
from reprogram.model.precision import Precision, resolve_device
from reprogram.model.prompts import PromptBank

ImageLike = str | Path | Image.Image


class ExportedModel(nn.Module):
    """Frozen image encoder + v prompts + a v×D×C folded head = logits."""

    def __init__(
        self,
        backbone: Backbone,
        prompts: PromptBank,
        head: torch.Tensor,
        classnames: Sequence[str],
        prompt_names: Sequence[str] = (),
        precision: str = "auto",
        manifest: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.prompts = prompts.to(backbone.device)
        self.register_buffer("head", head.float().to(backbone.device))
        self.classnames = list(classnames)
        self.prompt_names = list(prompt_names)
        self.precision = precision
        self.manifest = manifest or {}

    @classmethod
    def from_reprogrammer(
        cls, model, classnames: Sequence[str] | None = None, precision: str = "auto"
    ) -> ExportedModel:
        """``model``'s head folded, sharing its backbone and prompts (no copy)."""
        names = (
            classnames
            if classnames is not None
            else [f"class {i}" for i in range(len(model.groups))]
        )
        return cls(
            model.backbone,
            model.prompts,
            fold_reprogrammer(model),
            names,
            model.bank.group_names,
            precision,
            manifest={"method": model.recipe.name},
        )

    @property
    def image_size(self) -> int:
        """The side images have when they enter the prompts (the inner size for padding)."""
        return self.prompts.image_size

    @property
    def device(self) -> torch.device:
        return self.head.device

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """v×B×D normalised features of every prompt on ``pixels`` (B×3×s×s in [0, 1])."""
        prompted = self.prompts(pixels)
        count, batch = prompted.shape[:2]
        policy = Precision.resolve(self.precision, self.device)
        with policy.encoder():
            features = self.backbone.encode_image(prompted.flatten(0, 1))
        return features.float().view(count, batch, -1)

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits B×C (fp32) of B×3×s×s images in [0, 1]."""
        return folded_logits(self.image_features(pixels.to(self.device)), self.head)

    def pixels(self, images: Sequence[ImageLike] | torch.Tensor) -> torch.Tensor:
        """Images as the prompts take them: B×3×s×s in [0, 1] on the model's device. Files and
        PIL images are resized (short side, bicubic) and centre-cropped as in evaluation; a
        tensor must already have the size (uint8 or float in [0, 1])."""
        size = self.image_size
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
                raise ReprogramError(
                    f"images tensor {tuple(images.shape)}: expected B×3×{size}×{size}"
                )
            pixels = images
        else:
            arrays = []
            for image in images:
                rgb = to_rgb(image) if isinstance(image, Image.Image) else load_rgb(str(image))
                arrays.append(
                    torch.from_numpy(to_uint8_chw(center_crop(resize_short_side(rgb, size), size)))
                )
            pixels = (
                torch.stack(arrays) if arrays else torch.zeros(0, 3, size, size, dtype=torch.uint8)
            )
        pixels = pixels.to(self.device)
        return as_float(pixels) if pixels.dtype == torch.uint8 else pixels.float()

    def logits(
        self, images: Sequence[ImageLike] | torch.Tensor, batch_size: int = 64
    ) -> torch.Tensor:
        """Logits N×C (fp32) of image files, PIL images or a pixel tensor (see :meth:`pixels`)."""
        images = _as_batch(images)
        outputs = []
        for start in range(0, len(images), batch_size):
            outputs.append(self(self.pixels(images[start : start + batch_size])))
        return torch.cat(outputs) if outputs else torch.zeros(0, len(self.classnames))

    @torch.no_grad()
    def predict(
        self, images: Sequence[ImageLike] | torch.Tensor, top_k: int = 5, batch_size: int = 64
    ) -> list[Prediction]:
        """Top-k classes with probabilities; for several prompts, the prompt that contributed
        most to the top class and every prompt's share of its logit."""
        images = _as_batch(images)
        predictions = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            features = self.image_features(self.pixels(chunk))
            parts = prompt_logits(features, self.head)  # B×C×v
            logits = parts.sum(dim=-1)
            finite = torch.isfinite(logits).all(dim=1)
            if not bool(finite.all()):
                raise NonFiniteScores(
                    f"the exported prompts give non-finite class scores for "
                    f"{int((~finite).sum())} of {len(chunk)} images: {DIVERGED}"
                )
            probabilities = logits.softmax(dim=1)
            for i in range(len(logits)):
                values, indices = probabilities[i].topk(min(top_k, probabilities.shape[1]))
                top = [
                    (self.classnames[j], float(v))
                    for v, j in zip(values.tolist(), indices.tolist(), strict=True)
                ]
                path = chunk[i] if isinstance(chunk[i], (str, Path)) else f"image {start + i}"
                prediction = Prediction(str(path), top)
                if self.prompts.count > 1:
                    chosen = int(logits[i].argmax())
                    own = parts[i, chosen]
                    names = self.prompt_names
                    # a prompt whose head column is 0 (no weight on its texts) drives nothing
                    active = self.head[:, :, chosen].abs().sum(dim=1) > 0
                    best = own.masked_fill(~active, float("-inf")).argmax()
                    prediction.prompt = prompt_name(names, int(best))
                    prediction.prompt_shares = {
                        prompt_name(names, q): float(s) for q, s in enumerate(shares(own))
                    }
                predictions.append(prediction)
        return predictions


def _as_batch(images):
    """One image (a path or a PIL image) as a list of one; anything else as it is."""
    return [images] if isinstance(images, (str, Path, Image.Image)) else images


def load_exported(
    folder: str | Path,
    *,
    device: str = "auto",
    weights: str | None = None,
    precision: str | None = None,
    backbone: Backbone | None = None,
) -> ExportedModel:
    """The model ``reprogram export`` wrote to ``folder``: its backbone loaded as the manifest
    says (``weights`` if the weights file moved) and checked by fingerprint; only the image
    encoder is used. ``precision`` overrides the run's (auto: fp32 on CPU, bf16 on GPUs)."""
    manifest, tensors = read_export(folder)
    path = Path(folder) / MANIFEST
    spec = manifest["backbone"]
    chosen = weights if weights is not None else spec.get("weights")
    if backbone is None:
        try:
            backbone = load_backbone(
                spec["name"],
                chosen,
                device=resolve_device(device),
                quick_gelu=spec.get("quick_gelu"),
            )
        except ReprogramError as err:
            hint = (
                " (if the weights moved, pass --weights FILE)" if weights is None and chosen else ""
            )
            raise ReprogramError(f"{path}: the backbone does not load: {err}{hint}") from err
    if backbone.fingerprint != spec["fingerprint"]:
        raise ReprogramError(
            f"{path}: exported from backbone {spec['name']} with fingerprint "
            f"{spec['fingerprint']}, got fingerprint {backbone.fingerprint}"
            + (f" from {chosen}" if chosen else "")
            + ": pass --weights with the file the model was exported from"
        )
    shown = manifest["prompts"]
    processing = manifest["preprocessing"]
    try:
        prompts = PromptBank(
            shown["kind"],
            shown["count"],
            shown["input_size"],
            processing["mean"],
            processing["std"],
            shown["frame"] if shown["kind"] != "none" else None,
        )
    except (ValueError, ReprogramError) as err:  # a kind or frame this version cannot build
        raise ReprogramError(f"{path}: {err}") from err
    if prompts.input_size != backbone.input_size or prompts.image_size != processing["image_size"]:
        raise ReprogramError(
            f"{path}: prompts for {shown['input_size']}-px input, the backbone takes "
            f"{backbone.input_size} px"
        )
    with torch.no_grad():
        prompts.theta.copy_(tensors["prompts.theta"])
    return ExportedModel(
        backbone,
        prompts,
        tensors["head"],
        manifest["classnames"],
        shown.get("names") or [],
        precision or manifest["precision"],
        manifest,
    ).eval()
