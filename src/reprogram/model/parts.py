"""The parts a method is made of, each owning what it means.

A method (:class:`~reprogram.model.recipes.Recipe`) is one part of each kind:

* :class:`PromptKind` — the visual prompt (padding, watermark, none) and whether it trains;
* :class:`TextSource` — where the texts come from (class-name template, descriptions, one
  attribute file, an attribute pair, one file per cause): which description files it needs, their
  packaged defaults, how it samples them;
* :class:`Grouping` — which prompt scores each text (single, by file, k-means);
* :class:`Aggregation` — how a class's scores become its logit (mean, mean-top-k, PRM, or a
  trained head: RVP's, a dense matrix, a linear probe), whether it needs estimation epochs or
  trains; the :class:`~reprogram.model.aggregation.Aggregator` it builds knows its linear weights
  for attribution.

Every part has a ``name`` (stored in nothing: runs store the method name), a short ``label`` for
listings and reports, and the config keys it reads (``options``): the
:class:`~reprogram.model.options.MethodOptions` fields declared, plus those its kind implies (a
source of description files reads ``descriptions`` and ``description_source``, one per cause also
``causes``; an estimated aggregation reads ``prm_warmup_epochs``). A setting no part of a run's
method reads is named in a warning (:func:`reprogram.engine.setup.unread_settings`).
Parts are compared by identity; comparing one with a string raises, so a leftover
``recipe.aggregation == "prm"`` fails loudly instead of being silently false.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from reprogram.errors import ReprogramError
from reprogram.model.aggregation import Aggregator, Mean, MeanTopK, ReweightingMatrix
from reprogram.model.heads import DenseHead, LinearProbe, StructuredHead
from reprogram.model.options import MethodOptions
from reprogram.model.prompts import PromptBank
from reprogram.text.descriptions import (
    TextBank,
    cluster_groups,
    concatenated_bank,
    sample_descriptions,
    single_group_bank,
    template_texts,
)

# A block of texts per class from one source file: (name, texts[class][j]).
Block = tuple[str, list[list[str]]]
Descriptions = Sequence[tuple[str, dict[str, list[str]]]]


class Part:
    """Shared behaviour of the parts: identity equality, no string comparison."""

    name: str
    label: str
    options: tuple[str, ...]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            raise TypeError(
                f"{type(self).__name__} '{self.name}' compared with the string '{other}': "
                "ask the part (e.g. recipe.aggregation.estimates) instead"
            )
        return self is other

    __hash__ = object.__hash__

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class PromptKind(Part):
    """The visual prompt: a :class:`~reprogram.model.prompts.PromptBank` kind."""

    name: str  # padding | watermark | none (PROMPT_KINDS)
    label: str
    trains: bool = True
    shrinks_image: bool = False  # the image enters shrunk to the inner size (padding)
    options: tuple[str, ...] = ("frame",)

    def build(self, count: int, backbone, frame: int | None) -> PromptBank:
        """``count`` prompts (one if this kind trains nothing) for ``backbone``'s input."""
        return PromptBank(
            self.name,
            count if self.trains else 1,
            backbone.input_size,
            backbone.mean,
            backbone.std,
            frame,
        )


@dataclass(frozen=True, eq=False)
class TextSource(Part):
    """Where a method's texts come from.

    ``kinds`` are the description files it reads, by published kind (``des``, ``dist``);
    ``per_cause`` sources read one file per cause instead (``cse_N``, or ``csl_N`` past 3).
    ``exact`` requires exactly ``len(kinds)`` files; ``as_sets`` keeps each file's texts a separate
    text set scored by the same prompt (AttrVR's descriptive/distinctive attributes).
    """

    name: str
    label: str
    kinds: tuple[str, ...] = ()
    per_cause: bool = False
    exact: bool = False
    as_sets: bool = False
    files_label: str = ""  # what ``exact`` asks for, in an error message
    options: tuple[str, ...] = ("m", "description_sampling", "description_length")

    def __post_init__(self) -> None:
        files = ("descriptions", "description_source") if self.needs_descriptions else ()
        implied = (*files, *(("causes",) if self.per_cause else ()))
        object.__setattr__(self, "options", tuple(dict.fromkeys((*self.options, *implied))))

    @property
    def needs_descriptions(self) -> bool:
        return self.per_cause or bool(self.kinds)

    def file_stems(self, causes: Sequence[int]) -> list[tuple[str, ...]]:
        """Per description file, the file stems that may hold it (first found wins)."""
        if self.per_cause:
            return [(f"cse_{n}", f"csl_{n}") for n in causes]
        return [(kind,) for kind in self.kinds]

    def packaged_specs(self, key: str, causes: Sequence[int], source: str = "") -> list[str]:
        """The ``packaged:`` files this source uses on published dataset ``key``."""
        from reprogram.text.packaged import published_attribute_specs, published_cause_specs

        if self.per_cause:
            return published_cause_specs(key, list(causes) or None, source)
        return published_attribute_specs(key, self.kinds, source)

    def blocks(
        self,
        method: str,
        classnames: Sequence[str],
        descriptions: Descriptions,
        options: MethodOptions,
        seed: int,
    ) -> list[Block]:
        """The texts per class, one block per description file (one template block)."""
        if not self.needs_descriptions:
            return [("template", template_texts(classnames, options.template))]
        if not descriptions:
            raise ReprogramError(
                f"method '{method}' needs description files (--descriptions FILE …)"
            )
        if self.exact and len(descriptions) != len(self.kinds):
            raise ReprogramError(
                f"method '{method}' needs {self.files_label}, got {len(descriptions)} files"
            )
        return [
            (
                Path(path).stem,
                sample_descriptions(
                    data,
                    classnames,
                    options.m,
                    seed,
                    source=str(path),
                    mode=options.description_sampling,
                    length=options.description_length,
                ),
            )
            for path, data in descriptions
        ]


@dataclass(frozen=True, eq=False)
class Grouping(Part):
    """Which prompt scores each text: ``by_file`` gives each block its own prompt;
    ``from_features`` (k-means) assigns texts to prompts from their text features."""

    name: str
    label: str
    by_file: bool = False
    from_features: bool = False
    on_new_classes: str | None = None  # how new classes get their groups (base-to-novel)
    options: tuple[str, ...] = ()

    @property
    def multi_prompt(self) -> bool:
        return self.by_file or self.from_features

    def arrange(self, blocks: list[Block], as_sets: bool) -> TextBank:
        """The text bank of the blocks (groups by file, or all under one prompt)."""
        names = [name for name, _ in blocks]
        texts = [block for _, block in blocks]
        if self.by_file:
            return concatenated_bank(texts, names)
        if as_sets:
            return concatenated_bank(texts, names, as_sets=True)
        if len(texts) == 1:
            return single_group_bank(texts[0], names[0])
        return single_group_bank(concatenated_bank(texts, names).texts, "+".join(names))

    def regroup(self, bank: TextBank, features: torch.Tensor, options: MethodOptions) -> None:
        """Assign texts to prompts from their C×M×d features (k-means only)."""
        if not self.from_features:
            return
        clusters = options.clusters or 3
        if clusters > bank.num_classes * bank.per_class:
            raise ReprogramError(
                f"clusters {clusters} is more than the {bank.num_classes * bank.per_class} "
                "descriptions to cluster (classes x m): lower clusters or raise m"
            )
        bank.groups = cluster_groups(features, clusters, options.kmeans_seed, options.kmeans_n_init)
        bank.group_names = [f"cluster {i + 1}" for i in range(clusters)]


@dataclass(frozen=True, eq=False)
class Aggregation(Part):
    """How a class's description scores become its logit.

    ``estimates``: the aggregator is estimated from training passes (the PRM), so a run spends its
    first ``prm_warmup_epochs`` estimating it. ``trains``: the aggregator holds parameters the
    engine trains (a head: see :mod:`reprogram.model.heads`). ``logit_rule`` says in words what a
    logit is (the report's text for methods without a PRM).
    """

    name: str
    label: str
    factory: Callable[[TextBank, MethodOptions], Aggregator]
    logit_rule: str
    estimates: bool = False
    trains: bool = False
    on_new_classes: str | None = None  # what new classes get (base-to-novel)
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        implied = ("prm_warmup_epochs",) if self.estimates else ()
        object.__setattr__(self, "options", tuple(dict.fromkeys((*self.options, *implied))))

    def build(self, bank: TextBank, options: MethodOptions) -> Aggregator:
        return self.factory(bank, options)


# The parts of the built-in methods.
NO_PROMPT = PromptKind("none", "no prompt (frozen CLIP)", trains=False, options=())
WATERMARK = PromptKind("watermark", "additive frame on the full image")
PADDING = PromptKind("padding", "padding frame around the shrunk image", shrinks_image=True)
ZERO_PADDING = PromptKind(
    "zero-padding",
    "shrunk image zero-padded, no prompt trained",
    trains=False,
    shrinks_image=True,
)

TEMPLATE_TEXTS = TextSource("template", "class-name template", options=("template",))
DESCRIPTIONS = TextSource("descriptions", "description files", kinds=("des",))
ATTRIBUTES = TextSource(
    "attributes", "one attribute file", kinds=("des",), exact=True, files_label="one attribute file"
)
ATTRIBUTE_PAIR = TextSource(
    "attribute-pair",
    "descriptive + distinctive attributes",
    kinds=("des", "dist"),
    exact=True,
    as_sets=True,
    files_label="a descriptive and a distinctive file",
)
CAUSES = TextSource("causes", "one description file per cause", per_cause=True)

SINGLE = Grouping("single", "one prompt")
BY_FILE = Grouping("by-file", "one prompt per file", by_file=True)
KMEANS = Grouping(
    "kmeans",
    "k-means clusters of the texts, one prompt each",
    from_features=True,
    on_new_classes="nearest trained centroid",
    options=("clusters", "kmeans_seed", "kmeans_n_init"),
)

MEAN = Aggregation(
    "mean",
    "mean",
    lambda bank, options: Mean(bank.num_classes, bank.per_class),
    logit_rule="the mean of its description scores",
)
MEAN_TOP_K = Aggregation(
    "mean-top-k",
    "α-mix of the per-set top-k means",
    lambda bank, options: MeanTopK(bank.sets, options.attr_top_k, options.alpha),
    logit_rule="α·(mean of the top-k descriptive attribute scores) + (1 − α)·(mean of the "
    "top-k distinctive ones)",
    options=("attr_top_k", "alpha"),
)
PRM_AGGREGATION = Aggregation(
    "prm",
    "probabilistic reweighting matrix (PRM)",
    lambda bank, options: ReweightingMatrix(bank.num_classes, bank.per_class, options.prm_top_k),
    logit_rule="the PRM-weighted sum of its description scores",
    estimates=True,
    on_new_classes="uniform over each novel class's own descriptions",
    options=("prm_top_k",),
)

# Trained heads (model/heads.py): their parameters are trained by the engine's head optimiser.
ZERO_HEAD = "the zero-initialised head: the uniform average over each class's descriptions"
RVP_HEAD = Aggregation(
    "rvp-head",
    "RVP head: softmax intra-class weights P, inter-class residual E",
    lambda bank, options: StructuredHead(bank.num_classes, bank.per_class),
    logit_rule="f·(I + E) with f[c] the softmax(P[c])-weighted sum of its description scores",
    trains=True,
    on_new_classes=ZERO_HEAD,
)
RVP_HEAD_NO_P = Aggregation(
    "rvp-head-no-p",
    "RVP head without P: uniform intra-class average, inter-class residual E",
    lambda bank, options: StructuredHead(bank.num_classes, bank.per_class, intra=False),
    logit_rule="f·(I + E) with f[c] the mean of its description scores",
    trains=True,
    on_new_classes=ZERO_HEAD,
)
RVP_HEAD_NO_E = Aggregation(
    "rvp-head-no-e",
    "RVP head without E: softmax intra-class weights P only",
    lambda bank, options: StructuredHead(bank.num_classes, bank.per_class, inter=False),
    logit_rule="the softmax(P[c])-weighted sum of its description scores",
    trains=True,
    on_new_classes=ZERO_HEAD,
)
DENSE_HEAD = Aggregation(
    "dense-head",
    "dense (C·M)×C matrix on all description scores",
    lambda bank, options: DenseHead(bank.num_classes, bank.per_class),
    logit_rule="a trained dense linear map of all classes' description scores",
    trains=True,
    on_new_classes=ZERO_HEAD,
)
LINEAR_PROBE = Aggregation(
    "linear-probe",
    "trained D×C linear layer on the image feature",
    lambda bank, options: LinearProbe(bank.num_classes, options.probe_init),
    logit_rule="a trained linear layer on the image feature (the texts are not used)",
    trains=True,
    on_new_classes="an untrained layer (probe_init: zero scores every new class 0)",
    options=("probe_init",),
)
