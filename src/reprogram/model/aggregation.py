"""How a class's description scores z[c, :] become its logit.

Every aggregator maps scores B×C×M to logits B×C. ``observe``/``update`` let an aggregator learn
from training passes (only the PRM does). ``description_weights`` gives the weight each score has
in its logit (the aggregations are linear once a top-k choice is made; see model/attribution.py).
``linear_map`` gives the (C·M)×C matrix of an aggregation that is linear in z whatever the input
(mean, PRM), so that the head folds into one D×C matrix per prompt (see model/fold.py); it is
None where it is not (top-k means), and ``not_foldable_reason`` says why.
"""

from __future__ import annotations

import torch
from torch import nn

from reprogram.model.prm import PRM


class Aggregator(nn.Module):
    # why ``linear_map`` is None (an aggregation that gives a map leaves it unread)
    not_foldable_reason: str = "its aggregation gives no linear map of the description scores"

    def linear_map(self) -> torch.Tensor | None:
        """The (C·M)×C fp32 matrix A with ``self(z) == z.reshape(B, C * M) @ A`` for every z
        (B×C×M), or None where the aggregation is not linear in z (see ``not_foldable_reason``)."""
        return None

    reads_features = False  # a head on the image features (the linear probe), not on z

    def attach(self, text_features: torch.Tensor, logit_scale: float) -> None:
        """Called once the C×M×D text features are known (no-op by default)."""

    def logits(self, scores: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logits B×C from the scores z and the v×B×D image features (by default from z)."""
        return self(scores)

    def observe(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Called with each training batch's scores (no-op by default)."""

    def update(self) -> None:
        """Called at the end of each epoch (no-op by default)."""

    def reset_counts(self) -> None:
        """Called at the start of each epoch (no-op by default)."""

    def reduce_counts(self, all_reduce_sum) -> None:
        """Sum what ``observe`` collected across processes (no-op by default)."""

    def description_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """d logit / d z (B×C×M, fp32): z * weights sums to the logit for the positively
        homogeneous aggregations (all of this library's); subclasses give it in closed form."""
        return gradient_weights(self, scores)


def gradient_weights(aggregator: nn.Module, scores: torch.Tensor) -> torch.Tensor:
    """d logit / d z of any aggregator, by autograd."""
    with torch.enable_grad():
        z = scores.detach().float().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(aggregator(z).sum(), z)
    return grad.detach()


def block_diagonal(weights: torch.Tensor) -> torch.Tensor:
    """C×M weights -> the (C·M)×C map of ``logit[c] = sum_j weights[c, j] * z[c, j]``."""
    classes, per_class = weights.shape
    eye = torch.eye(classes, dtype=torch.float32, device=weights.device)
    return (weights.float().unsqueeze(-1) * eye.unsqueeze(1)).reshape(classes * per_class, classes)


class Mean(Aggregator):
    """The plain average of a class's scores (identity when M = 1).

    ``num_classes`` and ``per_class`` (the bank's C×M) are only needed by ``linear_map``."""

    def __init__(self, num_classes: int | None = None, per_class: int | None = None) -> None:
        super().__init__()
        self.shape = (num_classes, per_class)

    def linear_map(self) -> torch.Tensor:
        classes, per_class = self.shape
        if classes is None or per_class is None:
            raise ValueError("Mean() was built without the bank's shape (num_classes, per_class)")
        return block_diagonal(torch.full((classes, per_class), 1.0 / per_class))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.mean(dim=-1)

    def description_weights(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.full_like(scores.float(), 1.0 / scores.shape[-1])


class MeanTopK(Aggregator):
    """AttrVR: per text set, the mean of the top-k scores; sets mixed by alpha, 1 - alpha."""

    not_foldable_reason = (
        "its top-k means pick each image's own k highest description scores, so the weights "
        "of the scores depend on the input"
    )

    def __init__(self, sets: torch.Tensor, top_k: int = 3, alpha: float = 0.5) -> None:
        super().__init__()
        first_row = sets[0]
        if not bool((sets == first_row).all()):
            raise ValueError("MeanTopK needs the same text-set layout for every class")
        self.register_buffer("columns_a", torch.nonzero(first_row == 0).flatten())
        self.register_buffer("columns_b", torch.nonzero(first_row == 1).flatten())
        self.top_k = top_k
        self.alpha = alpha

    def _mean_top_k(self, scores: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        chosen = scores.index_select(-1, columns)
        return chosen.topk(min(self.top_k, chosen.shape[-1]), dim=-1).values.mean(dim=-1)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        first = self._mean_top_k(scores, self.columns_a)
        if self.columns_b.numel() == 0:
            return first
        return self.alpha * first + (1 - self.alpha) * self._mean_top_k(scores, self.columns_b)

    def description_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """``mix / k`` for each set's top-k scores (mix: alpha, 1 - alpha; 1 alone), else 0."""
        scores = scores.float()
        weights = torch.zeros_like(scores)
        two_sets = self.columns_b.numel() > 0
        mixes = (
            (self.columns_a, self.alpha if two_sets else 1.0),
            (self.columns_b, 1 - self.alpha),
        )
        for columns, mix in mixes:
            if columns.numel() == 0:
                continue
            columns = columns.to(scores.device)
            chosen = scores.index_select(-1, columns)
            k = min(self.top_k, chosen.shape[-1])
            top = chosen.topk(k, dim=-1).indices
            block = torch.zeros_like(chosen).scatter_(-1, top, mix / k)
            weights.index_copy_(weights.dim() - 1, columns, block)
        return weights


class ReweightingMatrix(Aggregator):
    """DVP's PRM as an aggregator."""

    def __init__(self, num_classes: int, per_class: int, top_k: int = 3) -> None:
        super().__init__()
        self.prm = PRM(num_classes, per_class, top_k)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return self.prm(scores)

    def description_weights(self, scores: torch.Tensor) -> torch.Tensor:
        return self.prm.weights.to(scores.device, torch.float32).expand_as(scores)

    def linear_map(self) -> torch.Tensor:
        """Block-diagonal: ``logit[c] = sum_j omega[c, j] * z[c, j]`` (the PRM's forward)."""
        return block_diagonal(self.prm.weights.detach())

    def observe(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.prm.observe(scores, labels)

    def update(self) -> None:
        self.prm.update()

    def reset_counts(self) -> None:
        self.prm.reset_counts()

    def reduce_counts(self, all_reduce_sum) -> None:
        all_reduce_sum(self.prm.counts)
