"""The model a method builds: a frozen backbone, prompts, texts and an aggregation.

Every method is ``z[c, j] = s * cos(f_img(P_g(c,j)(x)), f_txt(e_cj))`` followed by an aggregation
per class (see docs/methods.md). A :class:`~reprogram.model.recipes.Recipe` names the parts;
:func:`build_reprogrammer` assembles a :class:`Reprogrammer` from a recipe, a backbone, class names
and description files, asking each part to do its share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from reprogram.backbones import Backbone
from reprogram.errors import ReprogramError
from reprogram.model.aggregation import Aggregator
from reprogram.model.options import MethodOptions
from reprogram.model.precision import Precision
from reprogram.model.prompts import PromptBank
from reprogram.model.recipes import Recipe, get_recipe, list_methods, register_method
from reprogram.text.descriptions import TextBank

__all__ = [
    "MethodOptions",
    "Recipe",
    "ReprogramOutput",
    "Reprogrammer",
    "build_aggregator",
    "build_reprogrammer",
    "build_text_bank",
    "get_recipe",
    "group_order",
    "list_methods",
    "register_method",
]


@dataclass
class ReprogramOutput:
    logits: torch.Tensor  # B×C
    scores: torch.Tensor  # B×C×M description scores z


class Reprogrammer(nn.Module):
    """Frozen backbone + prompt bank + text features + aggregation = logits."""

    def __init__(
        self,
        recipe: Recipe,
        backbone: Backbone,
        prompts: PromptBank,
        bank: TextBank,
        aggregator: Aggregator,
        text_features: torch.Tensor,
        logit_scale_cap: float | None = None,
    ) -> None:
        super().__init__()
        self.recipe = recipe
        self.backbone = backbone
        self.prompts = prompts
        self.bank = bank
        self.aggregator = aggregator
        self.register_buffer("text_features", text_features.float(), persistent=False)
        self.register_buffer("groups", bank.groups.clone(), persistent=False)
        order, self._group_sizes = group_order(self.groups)
        # Texts sorted by group (each prompt's texts contiguous) and the way back to class order.
        self.register_buffer("_grouped_texts", self.text_features.flatten(0, 1)[order], False)
        self.register_buffer("_ungroup", torch.argsort(order), persistent=False)
        scale = backbone.logit_scale  # the model's own, as published; capped on request
        self.logit_scale = scale if logit_scale_cap is None else min(scale, logit_scale_cap)

    @property
    def image_size(self) -> int:
        return self.prompts.image_size

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """v×B×d features of every prompt applied to every image, in one encoder call."""
        prompted = self.prompts(images)
        count, batch = prompted.shape[:2]
        features = self.backbone.encode_image(prompted.flatten(0, 1))
        return features.view(count, batch, -1)

    def enable_compile(self, scope: str = "blocks", **options) -> None:
        """Use ``torch.compile`` from now on, in training and evaluation (``options`` go to it).

        ``scope="blocks"`` compiles each repeated block of the image encoder: one compilation
        serves every block, so compile times stay short and a new batch size costs little.
        ``scope="model"`` compiles prompts and encoder as one graph (and is what backbones
        without known blocks get). Calling it again changes nothing.
        """
        if scope not in ("blocks", "model"):
            raise ValueError(f"compile scope must be 'blocks' or 'model', got '{scope}'")
        if getattr(self, "_compiled", False):
            return
        blocks = self.backbone.image_blocks() if scope == "blocks" else []
        for block in blocks:
            block.compile(**options)
        if not blocks:
            self.image_features = torch.compile(self.image_features, **options)
        self._compiled = True

    def scores_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """z (B×C×M): each text scored by its own prompt's image features only (fp32)."""
        features = features.float()
        classes, per_class = self.groups.shape
        parts, start = [], 0
        for prompt, size in enumerate(self._group_sizes):
            texts = self._grouped_texts[start : start + size]
            parts.append(features[prompt] @ texts.t())
            start += size
        grouped = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if len(parts) > 1:
            grouped = grouped.index_select(1, self._ungroup)
        return self.logit_scale * grouped.view(-1, classes, per_class)

    def forward(self, images: torch.Tensor, precision: Precision | None = None) -> ReprogramOutput:
        """Logits and scores; only the image encoder runs in ``precision``'s dtype (default
        fp32), everything after it in fp32 even inside a caller's autocast."""
        precision = precision or Precision(self.text_features.device.type)
        with precision.encoder():
            features = self.image_features(images)
        with precision.fp32():
            scores = self.scores_from_features(features)
            return ReprogramOutput(self.aggregator.logits(scores, features), scores)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The learned state: prompt parameters, aggregator buffers (PRM) and parameters
        (trained heads)."""
        return {
            k: v.detach().clone()
            for k, v in self.state_dict().items()
            if not k.startswith("backbone.")
        }

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        for key, value in state.items():
            if key not in own or own[key].shape != value.shape:
                raise ReprogramError(f"checkpoint entry '{key}' does not fit this model")
            own[key].copy_(value)

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [self.prompts.theta] if self.recipe.prompt.trains else []

    def head_parameters(self) -> list[nn.Parameter]:
        """The trained head's parameters (none for fixed or estimated aggregations)."""
        return [p for p in self.aggregator.parameters() if p.requires_grad]

    @property
    def head_parameter_count(self) -> int:
        return sum(p.numel() for p in self.head_parameters())

    @property
    def trainable_parameters(self) -> int:
        """Parameters training changes: the prompts' (under their frame) and the head's."""
        return self.prompts.trainable_parameters + self.head_parameter_count


def group_order(groups: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The flat text indices sorted by group (stable) and the number of texts of each group
    (groups numbered 0..v-1; a group without texts counts 0)."""
    flat = groups.flatten()
    order = torch.argsort(flat, stable=True)
    count = int(flat.max()) + 1 if flat.numel() else 1
    return order, torch.bincount(flat, minlength=count).tolist()


def build_text_bank(
    recipe: Recipe,
    classnames: Sequence[str],
    descriptions: Sequence[tuple[str, dict[str, list[str]]]],
    options: MethodOptions,
    seed: int,
) -> TextBank:
    """Texts per class for a recipe (grouping by cluster needs features, done by the caller)."""
    blocks = recipe.texts.blocks(recipe.name, classnames, descriptions, options, seed)
    bank = recipe.grouping.arrange(blocks, recipe.texts.as_sets)
    if recipe.texts.needs_descriptions:
        bank.sampling = options.description_sampling
    return bank


def build_aggregator(recipe: Recipe, bank: TextBank, options: MethodOptions) -> Aggregator:
    return recipe.aggregation.build(bank, options)


def build_reprogrammer(
    method: str,
    backbone: Backbone,
    classnames: Sequence[str],
    descriptions: Sequence[tuple[str, dict[str, list[str]]]] = (),
    options: MethodOptions | None = None,
    seed: int = 1,
    bank: TextBank | None = None,
) -> Reprogrammer:
    """Assemble a method's model. Pass ``bank`` to rebuild exactly the texts of a saved run."""
    recipe = get_recipe(method)
    options = options or recipe.options()
    fresh = bank is None
    if bank is None:
        bank = build_text_bank(recipe, classnames, descriptions, options, seed)
    features = backbone.encode_text(bank.flat()).view(bank.num_classes, bank.per_class, -1)
    if fresh:
        recipe.grouping.regroup(bank, features, options)
    prompts = recipe.prompt.build(len(bank.group_names), backbone, options.frame)
    prompts = prompts.to(features.device)
    aggregator = build_aggregator(recipe, bank, options)
    model = Reprogrammer(
        recipe, backbone, prompts, bank, aggregator, features, options.logit_scale_cap
    )
    aggregator.attach(features, float(model.logit_scale))  # the scale the scores use
    aggregator.to(features.device)
    return model
