"""The head folded for inference: one D×C matrix per prompt.

A method's logits are ``A``-weighted sums of description scores
``z[c, j] = s * f_g(c,j) · t[c, j]`` (f_g: the normalised image feature under prompt g, t: the
normalised text features). When the aggregation is linear in z whatever the input, with map
``A`` ((C·M)×C, see :meth:`~reprogram.model.aggregation.Aggregator.linear_map`), the texts and
the aggregation fold into ``W_g = s · T_gᵀ A_g`` per prompt g (T_g: the texts prompt g scores,
A_g: their rows of A), and ``logits = Σ_g f_g @ W_g``: inference needs neither the text encoder
nor the descriptions. Top-k means are not linear in z and do not fold.
"""

from __future__ import annotations

import torch

from reprogram.errors import ReprogramError


class NotFoldable(ReprogramError):
    """A method whose head is not one linear map of the description scores."""


def fold_head(
    text_features: torch.Tensor,
    groups: torch.Tensor,
    linear_map: torch.Tensor,
    logit_scale: float,
    prompts: int,
) -> torch.Tensor:
    """The v×D×C folded head (fp32, computed in fp64).

    ``text_features``: C×M×D normalised; ``groups``: C×M, the prompt scoring each text (0..v-1);
    ``linear_map``: (C·M)×C; ``logit_scale``: s; ``prompts``: v (a prompt without texts gets 0).
    """
    classes, per_class, dim = text_features.shape
    if groups.shape != (classes, per_class):
        raise ValueError(f"groups {tuple(groups.shape)} do not fit texts {(classes, per_class)}")
    if linear_map.ndim != 2 or linear_map.shape[0] != classes * per_class:
        raise ValueError(
            f"linear map {tuple(linear_map.shape)} does not fit {classes * per_class} texts"
        )
    texts = text_features.reshape(classes * per_class, dim).double()
    weights = linear_map.double().to(texts.device)
    flat = groups.reshape(-1).to(texts.device)
    head = texts.new_zeros(prompts, dim, linear_map.shape[-1])
    for g in range(prompts):
        own = flat == g
        head[g] = logit_scale * texts[own].t() @ weights[own]
    return head.float()


def folded_logits(features: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Logits B×C (fp32) from v×B×D normalised image features and the v×D×C head."""
    return torch.einsum("vbd,vdc->bc", features.float(), head.float())


def prompt_logits(features: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Each prompt's share of every logit: B×C×v (sums to :func:`folded_logits` over v)."""
    return torch.einsum("vbd,vdc->bcv", features.float(), head.float())


def fold_reprogrammer(model) -> torch.Tensor:
    """The folded head of a :class:`~reprogram.model.methods.Reprogrammer` (v×D×C, fp32);
    :class:`NotFoldable` (one line naming the method and why) for a non-linear aggregation."""
    linear_map = model.aggregator.linear_map()
    if linear_map is None:
        raise NotFoldable(
            f"method '{model.recipe.name}' does not fold into a linear head: "
            f"{model.aggregator.not_foldable_reason}"
        )
    return fold_head(
        model.text_features,
        model.groups,
        linear_map.detach(),  # a trained head's map: its values, not its graph
        model.logit_scale,
        model.prompts.count,
    )
