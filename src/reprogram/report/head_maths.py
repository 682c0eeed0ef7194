"""What a trained head learned, as numbers: small pure functions on its matrices.

A head that exposes an intra-class matrix ``P`` (C×M) with ``intra_weights()`` (P̃, each row a
softmax) and/or an inter-class matrix ``E`` (C×C) with ``base_logits(scores)`` (f, so that the
logits are ``f·(I + E)``) gets the report's head sections; :func:`intra_weights` and
:func:`inter_matrix` ask the aggregator for them (RVP's ``StructuredHead`` has both, its
ablations one of them, other aggregations none). Nothing here tests which method a run is.

The analyses are those RVP (Li et al., 2026) uses to explain E:

* the share of predictions E changes: ``argmax f != argmax f·(I + E)``;
* the relative correction of one image, ``‖f·E‖ / ‖f‖`` (f a row vector), averaged over images;
* E's stable rank ``‖E‖_F² / ‖E‖_2²`` (1 for rank one, C for the identity), also under a null that
  permutes E's entries at random;
* the diagonal fraction ``‖diag E‖_F / ‖E‖_F`` (near 0: E is genuinely inter-class);
* r90/C of the class prototypes: prototype c is the mean of class c's L2-normalised description
  embeddings (not normalised again); r90 is the smallest number of eigenvalues of the C×C Gram
  matrix of the prototypes holding 90 % of its trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-12


# ---------------------------------------------------------------- what the aggregator exposes


def intra_weights(aggregator: object) -> torch.Tensor | None:
    """P̃ (C×M, fp32, CPU) of a head with a trained intra-class matrix P, else None."""
    if not isinstance(getattr(aggregator, "P", None), torch.Tensor):
        return None
    if not callable(getattr(aggregator, "intra_weights", None)):
        return None
    return aggregator.intra_weights().detach().float().cpu()


def inter_matrix(aggregator: object) -> torch.Tensor | None:
    """E (C×C, fp32, CPU) of a head with an inter-class matrix (logits = f·(I + E)), else None."""
    matrix = getattr(aggregator, "E", None)
    if not isinstance(matrix, torch.Tensor):
        return None
    if not callable(getattr(aggregator, "base_logits", None)):
        return None
    return matrix.detach().float().cpu()


# ------------------------------------------------------------------------------ intra-class P


def effective_counts(weights: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of each row of a row-stochastic matrix: M for uniform rows, 1 for one-hot."""
    weights = weights.double()
    entropy = -(weights * weights.clamp_min(EPS).log()).sum(dim=-1)
    return entropy.exp().float()


def rank_descriptions(
    weights: Sequence[float], means: Sequence[float] | None, count: int
) -> list[int]:
    """The ``count`` indices with the highest weight (ties: higher mean, then lower index)."""
    keys = [
        (float(weights[j]), float(means[j]) if means is not None else 0.0, -j)
        for j in range(len(weights))
    ]
    return sorted(range(len(weights)), key=lambda j: keys[j], reverse=True)[:count]


# ------------------------------------------------------------------------------ inter-class E


def mixed_logits(base: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
    """f·(I + E) for base logits f (B×C)."""
    base = base.float()
    return base + base @ inter.to(base.device, base.dtype)


def changed_predictions(base: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
    """Per image (B, bool): whether E changes the top class, argmax f != argmax f·(I + E)."""
    return base.float().argmax(dim=1) != mixed_logits(base, inter).argmax(dim=1)


def relative_corrections(base: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
    """Per image (B): ``‖f·E‖ / ‖f‖`` (0 for f = 0)."""
    base = base.float()
    correction = base @ inter.to(base.device, base.dtype)
    return correction.norm(dim=1) / base.norm(dim=1).clamp_min(EPS)


def stable_rank(matrix: torch.Tensor) -> float:
    """``‖A‖_F² / ‖A‖_2²`` (NaN for the zero matrix)."""
    singular = torch.linalg.svdvals(matrix.double())
    if singular.numel() == 0 or float(singular[0]) <= EPS:
        return float("nan")
    return float((singular**2).sum() / singular[0] ** 2)


def null_draws(classes: int) -> int:
    """Permutations for the stable-rank null: 10 up to 200 classes, 3 beyond (each costs an SVD
    of C×C, and the null's spread shrinks as C grows)."""
    return 10 if classes <= 200 else 3


def permuted_stable_rank(matrix: torch.Tensor, draws: int = 10, seed: int = 0) -> float:
    """The mean stable rank of ``matrix`` with its entries randomly permuted (a null that keeps
    the values and destroys their arrangement); fixed seed, so the report is reproducible."""
    generator = torch.Generator().manual_seed(seed)
    flat = matrix.detach().double().cpu().flatten()
    ranks = [
        stable_rank(flat[torch.randperm(flat.numel(), generator=generator)].view(matrix.shape))
        for _ in range(draws)
    ]
    return float(sum(ranks) / len(ranks)) if ranks else float("nan")


def diagonal_fraction(matrix: torch.Tensor) -> float:
    """``‖diag A‖_F / ‖A‖_F`` (NaN for the zero matrix)."""
    matrix = matrix.double()
    total = float(matrix.norm())
    if total <= EPS:
        return float("nan")
    return float(torch.diagonal(matrix).norm()) / total


@dataclass(frozen=True)
class Pair:
    """One off-diagonal entry E[row, column]: a high base logit of ``row`` moves ``column``'s."""

    row: int
    column: int
    value: float


def strongest_pairs(matrix: torch.Tensor, count: int) -> list[Pair]:
    """The ``count`` non-zero off-diagonal entries of largest magnitude (ties: row, then
    column)."""
    values = matrix.detach().double().cpu()
    size = values.shape[0]
    magnitude = values.abs().masked_fill(torch.eye(size, dtype=torch.bool), 0.0).flatten()
    order = torch.argsort(-magnitude, stable=True)[: min(count, int((magnitude > 0).sum()))]
    flat = values.flatten()
    return [Pair(k // size, k % size, float(flat[k])) for k in order.tolist()]


def pair_confusions(
    labels: torch.Tensor, predictions: torch.Tensor, first: int, second: int
) -> int:
    """Images of either class predicted as the other."""
    one = (labels == first) & (predictions == second)
    other = (labels == second) & (predictions == first)
    return int((one | other).sum())


@dataclass(frozen=True)
class Effect:
    """What E does to the predictions on a set of labelled images."""

    images: int
    changed: float  # share of images whose top class E changes
    fixed: int  # changed from wrong to right
    broken: int  # changed from right to wrong
    base_accuracy: float  # argmax f
    accuracy: float  # argmax f·(I + E)
    mean_correction: float  # mean over images of ‖f·E‖ / ‖f‖


def effect(
    labels: torch.Tensor,
    base_predictions: torch.Tensor,
    predictions: torch.Tensor,
    corrections: torch.Tensor,
) -> Effect:
    """The :class:`Effect` of per-image labels, argmax f, argmax f·(I + E) and ‖f·E‖/‖f‖."""
    count = len(labels)
    changed = base_predictions != predictions

    def mean(values: torch.Tensor) -> float:
        return float(values.double().mean()) if count else float("nan")

    return Effect(
        images=count,
        changed=mean(changed),
        fixed=int((changed & (predictions == labels)).sum()),
        broken=int((changed & (base_predictions == labels)).sum()),
        base_accuracy=mean(base_predictions == labels),
        accuracy=mean(predictions == labels),
        mean_correction=mean(corrections),
    )


class InterClassPass:
    """Collects, batch by batch, argmax f, argmax f·(I + E) and ‖f·E‖/‖f‖ per image
    (``observe`` is the hook of :func:`reprogram.model.attribution.attribute`); it keeps
    N-long vectors, never N×C."""

    def __init__(self, aggregator: object) -> None:
        inter = inter_matrix(aggregator)
        if inter is None:
            raise ValueError("the aggregator has no inter-class matrix E")
        self.aggregator, self.inter = aggregator, inter
        self._parts: dict[str, list[torch.Tensor]] = {
            "labels": [],
            "base": [],
            "mixed": [],
            "corrections": [],
        }

    def observe(self, output, labels: torch.Tensor) -> None:
        base = self.aggregator.base_logits(output.scores.float()).detach().float().cpu()
        self._parts["labels"].append(labels.detach().cpu().long())
        self._parts["base"].append(base.argmax(dim=1))
        self._parts["mixed"].append(mixed_logits(base, self.inter).argmax(dim=1))
        self._parts["corrections"].append(relative_corrections(base, self.inter).double())

    def _cat(self, name: str) -> torch.Tensor:
        parts = self._parts[name]
        dtype = torch.float64 if name == "corrections" else torch.long
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)

    @property
    def labels(self) -> torch.Tensor:
        return self._cat("labels")

    @property
    def base_predictions(self) -> torch.Tensor:
        """argmax f per image."""
        return self._cat("base")

    @property
    def predictions(self) -> torch.Tensor:
        """argmax f·(I + E) per image."""
        return self._cat("mixed")

    @property
    def corrections(self) -> torch.Tensor:
        """‖f·E‖ / ‖f‖ per image."""
        return self._cat("corrections")

    def effect(self) -> Effect:
        return effect(self.labels, self.base_predictions, self.predictions, self.corrections)


# ----------------------------------------------------------------------- the text prototypes


def class_prototypes(text_features: torch.Tensor) -> torch.Tensor:
    """C×D: the uniform mean of each class's L2-normalised description embeddings (C×M×D)."""
    return F.normalize(text_features.double(), dim=-1).mean(dim=1)


def mass_rank(prototypes: torch.Tensor, mass: float = 0.9) -> int:
    """The smallest number of eigenvalues of the Gram matrix ``T Tᵀ`` holding ``mass`` of its
    trace (r90 for ``mass=0.9``; 0 for all-zero prototypes)."""
    gram = prototypes.double() @ prototypes.double().t()
    eigenvalues = torch.linalg.eigvalsh(gram).clamp_min(0).flip(0)
    total = float(eigenvalues.sum())
    if total <= EPS:
        return 0
    cumulative = torch.cumsum(eigenvalues, 0) / total
    return int((cumulative < mass - 1e-9).sum()) + 1


def r90_over_classes(text_features: torch.Tensor) -> float:
    """r90 / C of the class prototypes of C×M×D description embeddings."""
    return mass_rank(class_prototypes(text_features)) / text_features.shape[0]


__all__ = [
    "Effect",
    "InterClassPass",
    "Pair",
    "changed_predictions",
    "class_prototypes",
    "diagonal_fraction",
    "effect",
    "effective_counts",
    "inter_matrix",
    "intra_weights",
    "mass_rank",
    "mixed_logits",
    "null_draws",
    "pair_confusions",
    "permuted_stable_rank",
    "r90_over_classes",
    "rank_descriptions",
    "relative_corrections",
    "stable_rank",
    "strongest_pairs",
]
