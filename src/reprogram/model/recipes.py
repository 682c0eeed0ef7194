"""Methods as registered recipes of parts (see :mod:`reprogram.model.parts`).

The built-in methods are the table :data:`BUILTIN`; a user method is one
``register_method(Recipe(...))`` call (see the README, "How to add a method"). The defaults of a
method's hyper-parameters are :class:`~reprogram.model.options.MethodOptions`' (written once);
:meth:`Recipe.defaults` lists those its parts read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from reprogram.errors import ReprogramError
from reprogram.model.options import MethodOptions
from reprogram.model.parts import (
    ATTRIBUTE_PAIR,
    ATTRIBUTES,
    BY_FILE,
    CAUSES,
    DESCRIPTIONS,
    KMEANS,
    MEAN,
    MEAN_TOP_K,
    NO_PROMPT,
    PADDING,
    PRM_AGGREGATION,
    SINGLE,
    TEMPLATE_TEXTS,
    WATERMARK,
    Aggregation,
    Grouping,
    PromptKind,
    TextSource,
)


@dataclass(frozen=True)
class Recipe:
    """A method: one part of each kind, and a one-line summary for listings and reports."""

    name: str
    prompt: PromptKind
    texts: TextSource
    grouping: Grouping
    aggregation: Aggregation
    summary: str

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

    @property
    def trainable(self) -> bool:
        return self.prompt.trains

    @property
    def needs_descriptions(self) -> bool:
        return self.texts.needs_descriptions

    @property
    def parts(self) -> tuple[PromptKind, TextSource, Grouping, Aggregation]:
        return (self.prompt, self.texts, self.grouping, self.aggregation)

    def defaults(self) -> dict[str, Any]:
        """The hyper-parameters this method's parts read, with their defaults."""
        used = {name for part in self.parts for name in part.options}
        base = MethodOptions()
        return {f.name: getattr(base, f.name) for f in fields(MethodOptions) if f.name in used}

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
    if name not in _REGISTRY:
        raise ReprogramError(f"unknown method '{name}' (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


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

for _recipe in BUILTIN:
    register_method(_recipe)
