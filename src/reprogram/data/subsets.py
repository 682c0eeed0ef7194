"""Class subsets: CoCoOp's base/novel halves and the restriction of a dataset to some classes."""

from __future__ import annotations

import math
from dataclasses import replace

from reprogram.data.readers import Sample, Splits
from reprogram.errors import ReprogramError

SUBSETS = ("all", "base", "novel")


def base_novel_labels(num_classes: int) -> tuple[list[int], list[int]]:
    """CoCoOp's ``subsample_classes``: the first ``ceil(C / 2)`` labels are base, the rest novel."""
    half = math.ceil(num_classes / 2)
    return list(range(half)), list(range(half, num_classes))


def restrict_classes(splits: Splits, labels: list[int]) -> Splits:
    """Keep only the samples of ``labels`` and relabel them 0..len(labels)-1 in that order."""
    relabel = {old: new for new, old in enumerate(labels)}

    def keep(samples: list[Sample]) -> list[Sample]:
        return [Sample(s.path, relabel[s.label]) for s in samples if s.label in relabel]

    parents = getattr(splits, "parent_classes", None)
    extra = {} if parents is None else {"parent_classes": [parents[i] for i in labels]}
    return replace(
        splits,
        **extra,
        classnames=[splits.classnames[i] for i in labels],
        train=keep(splits.train),
        val=keep(splits.val),
        test=keep(splits.test),
    )


def subsample_classes(splits: Splits, subset: str) -> Splits:
    """``all`` (unchanged), ``base`` (first half) or ``novel`` (second half), relabelled."""
    if subset not in SUBSETS:
        raise ReprogramError(f"subsample_classes must be all, base or novel, got '{subset}'")
    if subset == "all":
        return splits
    if splits.num_classes < 2:
        raise ReprogramError(f"{splits.name}: base-to-novel needs at least 2 classes")
    base, novel = base_novel_labels(splits.num_classes)
    return restrict_classes(splits, base if subset == "base" else novel)


def subset_mapping(source: list[str], target: list[str], where: str) -> list[int]:
    """For each class of ``target``, its index among ``source``.

    A name spelled twice (ImageNet's two "crane"s) maps occurrence by occurrence: the k-th
    "crane" of the target is the k-th "crane" of the source.
    """
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(source):
        positions.setdefault(name, []).append(i)
    seen: dict[str, int] = {}
    mapping, missing = [], []
    for name in target:
        k = seen.get(name, 0)
        seen[name] = k + 1
        if k < len(positions.get(name, [])):
            mapping.append(positions[name][k])
        else:
            missing.append(name)
    if missing:
        raise ReprogramError(
            f"{where}: {len(missing)} class(es) are not classes of the run: "
            + ", ".join(repr(n) for n in missing[:5])
        )
    return mapping
