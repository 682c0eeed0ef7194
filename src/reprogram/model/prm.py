"""The probabilistic reweighting matrix (PRM) of DVP.

omega[c, j] weighs description j of class c; a class logit only mixes that class's own
description scores: ``logit[c] = sum_j omega[c, j] * z[c, j]``. omega starts uniform (1/M) and is
re-estimated after each epoch as the empirical P(description | class): for every training sample
of class y, the top-k entries of z[y, :] from that same forward pass are counted.
"""

from __future__ import annotations

import torch
from torch import nn


class PRM(nn.Module):
    """Block-structured reweighting matrix, estimated from top-k counts."""

    def __init__(self, num_classes: int, per_class: int, top_k: int = 3) -> None:
        super().__init__()
        self.top_k = min(top_k, per_class)
        self.register_buffer("weights", torch.full((num_classes, per_class), 1.0 / per_class))
        self.register_buffer("counts", torch.zeros(num_classes, per_class))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores B×C×M -> logits B×C."""
        return (scores * self.weights.to(scores.dtype)).sum(dim=-1)

    @torch.no_grad()
    def observe(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Count the top-k descriptions of each sample's true class (no Python loop)."""
        own = scores[torch.arange(len(labels), device=scores.device), labels]  # B×M
        top = own.float().topk(self.top_k, dim=-1).indices  # B×k
        rows = labels.unsqueeze(1).expand_as(top)
        self.counts.index_put_(
            (rows, top), torch.ones_like(top, dtype=self.counts.dtype), accumulate=True
        )

    @torch.no_grad()
    def update(self) -> None:
        """omega <- counts normalised per class; classes with no count keep their weights."""
        totals = self.counts.sum(dim=1, keepdim=True)
        estimated = self.counts / totals.clamp_min(1.0)
        self.weights.copy_(torch.where(totals > 0, estimated, self.weights))
        self.counts.zero_()

    def reset_counts(self) -> None:
        self.counts.zero_()
