"""Methods as registered recipes of parts (see :mod:`reprogram.model.parts`).

The built-in methods are the table :data:`BUILTIN`; a user method is one
``register_method(Recipe(...))`` call (see the README, "How to add a method"), or an entry point
of the group ``reprogram.methods`` in an installed package (:func:`load_method_plugins`).

A method's hyper-parameters default to :class:`~reprogram.model.options.MethodOptions`' values
(the paper's, written once); a recipe's ``overrides`` are its own defaults on top of those.
:meth:`Recipe.defaults` lists the merged values of the options its parts read, and
:meth:`Recipe.options` is the full set a run of it starts from.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from reprogram.errors import ReprogramError, lookup
from reprogram.model.options import MethodOptions
from reprogram.model.parts import (
    ATTRIBUTE_PAIR,
    ATTRIBUTES,
    BY_FILE,
    CAUSES,
    DENSE_HEAD,
    DESCRIPTIONS,
    KMEANS,
    LINEAR_PROBE,
    MEAN,
    MEAN_TOP_K,
    NO_PROMPT,
    PADDING,
    PRM_AGGREGATION,
    RVP_HEAD,
    RVP_HEAD_NO_E,
    RVP_HEAD_NO_P,
    SINGLE,
    TEMPLATE_TEXTS,
    WATERMARK,
    ZERO_PADDING,
    Aggregation,
    Grouping,
    PromptKind,
    TextSource,
)

PLUGIN_GROUP = "reprogram.methods"  # entry points: a Recipe, a list of Recipes, or a callable
OPTION_NAMES = tuple(f.name for f in fields(MethodOptions))
SHARED_OPTIONS = ("logit_scale_cap",)  # read by every method's Reprogrammer, whatever its parts


@dataclass(frozen=True)
class Recipe:
    """A method: one part of each kind, a one-line summary for listings and reports, and its own
    defaults (``overrides``: MethodOptions field -> value) for options its parts read."""

    name: str
    prompt: PromptKind
    texts: TextSource
    grouping: Grouping
    aggregation: Aggregation
    summary: str
    overrides: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        kinds = (
            ("prompt", self.prompt, PromptKind),
            ("texts", self.texts, TextSource),
            ("grouping", self.grouping, Grouping),
            ("aggregation", self.aggregation, Aggregation),
        )
        for field_name, part, kind in kinds:
            if not isinstance(part, kind):
                raise ReprogramError(
                    f"method '{self.name}': {field_name} must be a part of kind "
                    f"{kind.__name__} (see reprogram.model.parts), got {part!r}"
                )
        if self.grouping.multi_prompt and not self.prompt.trains:
            raise ReprogramError(
                f"method '{self.name}': grouping '{self.grouping.name}' needs several prompts, "
                f"prompt '{self.prompt.name}' has none"
            )
        if self.grouping.multi_prompt and not self.texts.needs_descriptions:
            raise ReprogramError(
                f"method '{self.name}': grouping '{self.grouping.name}' needs description texts"
            )
        object.__setattr__(self, "overrides", dict(self.overrides))  # its own copy
        for key, value in self.overrides.items():
            self._check_override(key, value)

    def _check_override(self, key: str, value: Any) -> None:
        if key not in OPTION_NAMES:
            raise ReprogramError(
                f"method '{self.name}': default '{key}' is no method option "
                f"(known: {', '.join(OPTION_NAMES)})"
            )
        if key not in self.read_options:
            raise ReprogramError(
                f"method '{self.name}': default '{key}' is read by none of its parts "
                f"({self.describe()}); they read: {', '.join(sorted(self.read_options))}"
            )
        base = getattr(MethodOptions(), key)
        kinds = (int, float) if isinstance(base, float) else (type(base),)
        if base is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise ReprogramError(
                f"method '{self.name}': default {key}={value!r} must be of type "
                f"{type(base).__name__}, like MethodOptions' {base!r}"
            )

    @property
    def trainable(self) -> bool:
        """Whether a run trains anything: its prompts or its head."""
        return self.prompt.trains or self.aggregation.trains

    def parameter_count(
        self,
        classes: int = 100,
        m: int = 20,
        input_size: int = 224,
        feature_dim: int = 512,
        groups: int = 3,
    ) -> dict[str, int]:
        """Trained parameters ``{"prompt", "head"}`` of this method at ``classes`` classes, ``m``
        texts per class and file, ``groups`` cause files or clusters, counted on the parts'
        own modules (defaults: the papers' Aircraft setting, ViT-B/16's 224 px and D = 512)."""
        from types import SimpleNamespace

        import torch

        files = groups if self.texts.per_cause else max(1, len(self.texts.kinds))
        per_file = m if self.texts.needs_descriptions else 1
        blocks = [
            (f"f{i}", [[f"t{c}.{j}" for j in range(per_file)] for c in range(classes)])
            for i in range(files)
        ]
        bank = self.grouping.arrange(blocks, self.texts.as_sets)
        prompts = groups if self.grouping.from_features else len(bank.group_names)
        backbone = SimpleNamespace(input_size=input_size, mean=(0.0,) * 3, std=(1.0,) * 3)
        options = self.options()
        bank_prompts = self.prompt.build(prompts, backbone, options.frame)
        head = self.aggregation.build(bank, options)
        head.attach(torch.zeros(bank.num_classes, bank.per_class, feature_dim), 1.0)
        trained = sum(p.numel() for p in head.parameters() if p.requires_grad)
        return {"prompt": bank_prompts.trainable_parameters, "head": trained}

    @property
    def needs_descriptions(self) -> bool:
        return self.texts.needs_descriptions

    @property
    def parts(self) -> tuple[PromptKind, TextSource, Grouping, Aggregation]:
        return (self.prompt, self.texts, self.grouping, self.aggregation)

    @property
    def read_options(self) -> set[str]:
        """The config keys its parts read (MethodOptions fields and those the parts imply), and
        those every method reads."""
        return {name for part in self.parts for name in part.options} | set(SHARED_OPTIONS)

    def options(self) -> MethodOptions:
        """Every method option at this method's default: MethodOptions', then its overrides."""
        return MethodOptions(**self.overrides)

    def defaults(self) -> dict[str, Any]:
        """The hyper-parameters this method's parts read, with their defaults (merged)."""
        merged = self.options()
        return {name: getattr(merged, name) for name in OPTION_NAMES if name in self.read_options}

    def describe(self) -> str:
        """One line of its parts: ``padding · causes · by-file · prm``."""
        return " · ".join(part.name for part in self.parts)


_REGISTRY: dict[str, Recipe] = {}


def register_method(recipe: Recipe, *, replace: bool = False) -> Recipe:
    """Make ``recipe`` a method every command and library call knows by its name."""
    if not recipe.name or recipe.name != recipe.name.strip() or " " in recipe.name:
        raise ReprogramError(f"method name '{recipe.name}' must be one word (e.g. 'dvp-mean')")
    if recipe.name in _REGISTRY and not replace and _REGISTRY[recipe.name] != recipe:
        raise ReprogramError(
            f"method '{recipe.name}' is already registered: pick another name or pass replace=True"
        )
    _REGISTRY[recipe.name] = recipe
    return recipe


def unregister_method(name: str) -> None:
    """Forget a registered method (built-in ones included; meant for tests)."""
    _REGISTRY.pop(name, None)


def list_methods() -> list[str]:
    """The registered method names, built-in ones first, in registration order."""
    return list(_REGISTRY)


def get_recipe(name: str) -> Recipe:
    """The method ``name``; an unknown name first loads the installed method plugins."""
    broken = [] if name in _REGISTRY else load_method_plugins()
    hint = f"; method plugins that failed: {'; '.join(broken)}" if broken else ""
    return lookup(_REGISTRY, name, "method", hint)


_PLUGINS: dict[tuple[str, str], str] = {}  # entry point (name, value) -> "" or why it failed


def load_method_plugins() -> list[str]:
    """Register the methods of the installed packages' ``reprogram.methods`` entry points.

    Each entry point is a :class:`Recipe`, a list of them, or a callable that registers its
    methods (or returns them). Each loads once per process; nothing loads on import. Returns one
    line per entry point that failed (the others still load)."""
    broken = []
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        key = (entry.name, entry.value)
        if key not in _PLUGINS:
            try:
                for recipe in _plugin_recipes(entry.load()):
                    register_method(recipe)
                _PLUGINS[key] = ""
            except KeyboardInterrupt:
                raise
            except BaseException as err:  # broken (even sys.exit on import): one line, not exit
                _PLUGINS[key] = (
                    f"entry point '{entry.name} = {entry.value}' ({PLUGIN_GROUP}): "
                    f"{type(err).__name__}: {err}"
                )
        if _PLUGINS[key]:
            broken.append(_PLUGINS[key])
    return broken


def _plugin_recipes(found: Any, called: bool = False) -> list[Recipe]:
    """The recipes an entry point gave: a Recipe, a list of them, or a callable's result."""
    if isinstance(found, Recipe):
        return [found]
    if isinstance(found, (list, tuple)) and all(isinstance(r, Recipe) for r in found):
        return list(found)
    if called and found is None:  # the callable registered its methods itself
        return []
    if callable(found) and not called:
        return _plugin_recipes(found(), called=True)
    raise ReprogramError(f"gave {found!r}: expected a Recipe, a list of Recipes or a callable")


BUILTIN: tuple[Recipe, ...] = (
    Recipe(
        "zero-shot",
        NO_PROMPT,
        TEMPLATE_TEXTS,
        SINGLE,
        MEAN,
        "Frozen CLIP with the class-name template; nothing is trained.",
    ),
    Recipe(
        "zero-shot-desc",
        NO_PROMPT,
        DESCRIPTIONS,
        SINGLE,
        MEAN,
        "Frozen CLIP scored by the average over each class's descriptions; nothing is trained.",
    ),
    Recipe(
        "vp",
        WATERMARK,
        TEMPLATE_TEXTS,
        SINGLE,
        MEAN,
        "VP: an unconstrained additive frame on the full-size normalised image; template logits.",
    ),
    Recipe(
        "ar",
        PADDING,
        TEMPLATE_TEXTS,
        SINGLE,
        MEAN,
        "AR: one padding prompt (image shrunk, sigmoid frame around it), template logits.",
    ),
    Recipe(
        "attrvr",
        PADDING,
        ATTRIBUTE_PAIR,
        SINGLE,
        MEAN_TOP_K,
        "AttrVR: one padding prompt; alpha * mean-top-k descriptive + (1 - alpha) * "
        "mean-top-k distinctive attribute scores.",
    ),
    Recipe(
        "dvp-cse",
        PADDING,
        CAUSES,
        BY_FILE,
        PRM_AGGREGATION,
        "DVP-cse: one padding prompt per cause, each scored against its cause's "
        "descriptions, combined by the PRM.",
    ),
    Recipe(
        "dvp-cls",
        PADDING,
        ATTRIBUTES,
        KMEANS,
        PRM_AGGREGATION,
        "DVP-cls: attribute descriptions k-means clustered into v groups, one padding "
        "prompt per cluster, combined by the PRM.",
    ),
)

# RVP (Li et al., 2026), its ablations and neighbours (the paper's Tables 4 and 12), and a new
# combination: methods whose aggregation is a trained head (model/heads.py).
TRAINED_HEADS: tuple[Recipe, ...] = (
    Recipe(
        "rvp",
        PADDING,
        ATTRIBUTES,
        SINGLE,
        RVP_HEAD,
        "RVP: one padding prompt; attribute scores weighted per class by softmax(P), mixed "
        "across classes by (I + E); P, E trained with the prompt.",
    ),
    Recipe(
        "rvp-no-p",
        PADDING,
        ATTRIBUTES,
        SINGLE,
        RVP_HEAD_NO_P,
        "RVP without P (ablation): the uniform average of a class's attribute scores, then E.",
    ),
    Recipe(
        "rvp-no-e",
        PADDING,
        ATTRIBUTES,
        SINGLE,
        RVP_HEAD_NO_E,
        "RVP without E (ablation): softmax(P)-weighted attribute scores, no inter-class mix.",
    ),
    Recipe(
        "rvp-no-prompt",
        ZERO_PADDING,
        ATTRIBUTES,
        SINGLE,
        RVP_HEAD,
        "RVP without the prompt (ablation): zero-padded images, only P and E trained.",
    ),
    Recipe(
        "linear-probe",
        PADDING,
        TEMPLATE_TEXTS,
        SINGLE,
        LINEAR_PROBE,
        "Linear probe (RVP ablation): a D×C layer on the prompted image feature, trained with "
        "one padding prompt.",
    ),
    Recipe(
        "attribute-lp",
        PADDING,
        ATTRIBUTES,
        SINGLE,
        DENSE_HEAD,
        "Attribute & LP (RVP ablation): a dense (C·M)×C matrix on all attribute scores, trained "
        "with one padding prompt.",
    ),
    Recipe(
        "dvp-one",
        PADDING,
        ATTRIBUTES,
        SINGLE,
        PRM_AGGREGATION,
        "DVP with one group (RVP's Table 12): one padding prompt, all attribute descriptions, "
        "the PRM.",
    ),
    Recipe(
        "dvp-cse-rvp",
        PADDING,
        CAUSES,
        BY_FILE,
        RVP_HEAD,
        "DVP-cse's prompts with RVP's head: one padding prompt per cause, the cause "
        "descriptions' scores combined by softmax(P) per class and (I + E) across classes.",
    ),
)

for _recipe in (*BUILTIN, *TRAINED_HEADS):
    register_method(_recipe)
