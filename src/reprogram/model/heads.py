"""Trained output mappings ("heads"): aggregations with parameters the engine optimises.

A head is an :class:`~reprogram.model.aggregation.Aggregator` with ``nn.Parameter`` s; the
engine trains whatever ``Reprogrammer.head_parameters()`` returns with its own optimiser
(``head_lr``, ``head_optimizer``, ``head_schedule``), saves them in the checkpoint with the
prompts and restores them on ``--resume``. Nothing in the engine knows which head it trains.

* :class:`StructuredHead` — RVP (Li et al., 2026, eqs 3-4): an intra-class matrix P (C×M,
  row softmax, zero init = the uniform average) and an inter-class residual E (C×C, zero init):
  ``f_c = sum_m softmax(P_c)[m] * z[c, m]``, ``logits = f (I + E)``. Either may be switched off
  (the paper's "w/o P", "w/o E" ablations).
* :class:`DenseHead` — the paper's "attribute & LP": one dense (C·M)×C matrix on the flattened
  scores, initialised to the block-diagonal uniform average (so it starts as the mean).
* :class:`LinearProbe` — a D×C layer on the (normalised, mean over prompts) image feature;
  it reads the features, not z (``reads_features``).

Fold contract: ``linear_map()`` is the (C·M)×C matrix A with ``head(z) == z.reshape(B, C*M) @ A``
(None where the head is not a function of z: the linear probe, whose ``feature_map()`` is its
D×C weight: ``logits == normalise(mean_p features) @ W``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprogram.model.aggregation import Aggregator


def block_diagonal(weights: torch.Tensor) -> torch.Tensor:
    """C×M per-class weights as the (C·M)×C matrix with ``weights[c]`` in column c's block."""
    classes, per_class = weights.shape
    eye = torch.eye(classes, dtype=weights.dtype, device=weights.device)
    return (weights.unsqueeze(-1) * eye.unsqueeze(1)).reshape(classes * per_class, classes)


class StructuredHead(Aggregator):
    """RVP's head: intra-class softmax weights P and an inter-class residual E (both optional)."""

    def __init__(
        self, num_classes: int, per_class: int, intra: bool = True, inter: bool = True
    ) -> None:
        super().__init__()
        self.num_classes, self.per_class = num_classes, per_class
        self.P = nn.Parameter(torch.zeros(num_classes, per_class)) if intra else None
        self.E = nn.Parameter(torch.zeros(num_classes, num_classes)) if inter else None

    def intra_weights(self) -> torch.Tensor:
        """P̃ (C×M): each row a softmax over the class's descriptions (uniform without P)."""
        if self.P is None:
            return torch.full((self.num_classes, self.per_class), 1.0 / self.per_class)
        return torch.softmax(self.P.float(), dim=-1)

    def base_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """f (B×C): each class's P̃-weighted description scores."""
        return (scores * self.intra_weights().to(scores.device, scores.dtype)).sum(dim=-1)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        base = self.base_logits(scores)
        return base if self.E is None else base + base @ self.E.to(base.dtype)

    def description_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """P̃ per description: the base logit f splits exactly into them (E mixes f after)."""
        return self.intra_weights().to(scores.device, torch.float32).expand_as(scores)

    def mixing(self) -> torch.Tensor:
        """I + E (C×C; the identity without E)."""
        eye = torch.eye(self.num_classes, device=self._device())
        return eye if self.E is None else eye + self.E.detach().float()

    def linear_map(self) -> torch.Tensor:
        """A = W₁ (I + E), W₁ block-diagonal with P̃_c in class c's block: (C·M)×C."""
        weights = self.intra_weights().detach().to(self._device(), torch.float32)
        return block_diagonal(weights) @ self.mixing()

    def _device(self) -> torch.device:
        tensor = self.P if self.P is not None else self.E
        return tensor.device if tensor is not None else torch.device("cpu")


class DenseHead(Aggregator):
    """A dense (C·M)×C matrix on the flattened scores (init: block-diagonal 1/M, the mean)."""

    def __init__(self, num_classes: int, per_class: int) -> None:
        super().__init__()
        uniform = torch.full((num_classes, per_class), 1.0 / per_class)
        self.A = nn.Parameter(block_diagonal(uniform))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.flatten(1) @ self.A.to(scores.dtype)

    def description_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """The block-diagonal part of A: each description's weight in its own class's logit."""
        classes = scores.shape[1]
        blocks = self.A.detach().float().view(classes, -1, classes)
        own = torch.diagonal(blocks, dim1=0, dim2=2).t()  # C×M
        return own.to(scores.device).expand_as(scores)

    def linear_map(self) -> torch.Tensor:
        return self.A.detach().float()


class LinearProbe(Aggregator):
    """A D×C linear layer on the normalised image feature (mean over prompts; one prompt:
    that prompt's feature). ``init="zero"`` (default) or ``"text"``: the class texts' mean
    feature times CLIP's logit scale, so it starts as the texts' zero-shot head."""

    reads_features = True

    def __init__(self, num_classes: int, init: str = "zero") -> None:
        super().__init__()
        if init not in ("zero", "text"):
            raise ValueError(f"probe_init must be 'zero' or 'text', got '{init}'")
        self.num_classes, self.init = num_classes, init
        self.W = nn.Parameter(torch.zeros(0, num_classes))

    def attach(self, text_features: torch.Tensor, logit_scale: float) -> None:
        """Size W from the feature width D (and take the text init, if asked)."""
        dim = text_features.shape[-1]
        weight = torch.zeros(dim, self.num_classes, device=text_features.device)
        if self.init == "text":
            weight = logit_scale * F.normalize(text_features.float().mean(dim=1), dim=-1).t()
        self.W = nn.Parameter(weight.contiguous())

    def logits(self, scores: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        feature = F.normalize(features.float().mean(dim=0), dim=-1)
        return feature @ self.W

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        raise TypeError("LinearProbe reads image features: call logits(scores, features)")

    def description_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """No description score enters its logits."""
        return torch.zeros_like(scores.float())

    def linear_map(self) -> None:
        return None

    def feature_map(self) -> torch.Tensor:
        """W (D×C): logits = normalise(image feature) @ W."""
        return self.W.detach().float()
