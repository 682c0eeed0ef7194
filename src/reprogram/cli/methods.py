"""``reprogram methods``: the registered methods, their parts and defaults."""

from __future__ import annotations

from typing import Any

import typer

# How a default that is resolved later reads in the listing.
_RESOLVED_LATER = {
    "clusters": "(the dataset's published v, else 3)",
    "kmeans_n_init": "(scikit-learn's default)",
    "frame": "(scaled from the paper's width)",
    "logit_scale_cap": "(none: the model's own scale)",
}


def _value(name: str, value: Any) -> str:
    return _RESOLVED_LATER.get(name, "None") if value is None else repr(value)


def parameter_line(recipe) -> str:
    """The trained parameters at the papers' setting (C = 100, m = 20, 224 px, D = 512, 3
    causes or clusters), counted on the parts' modules."""
    counts = recipe.parameter_count()
    total = counts["prompt"] + counts["head"]
    split = f" (prompt {counts['prompt']:,} + head {counts['head']:,})" if counts["head"] else ""
    return f"parameters: {total:,}{split} at C=100, m=20, 224 px, D=512, 3 groups"


def method_lines() -> list[str]:
    """Per method: its name and parts, its summary, the defaults of the options it reads (its
    own, overriding MethodOptions', marked ``*``), its trained parameters."""
    from reprogram.model.recipes import get_recipe, list_methods

    lines = []
    for name in list_methods():
        recipe = get_recipe(name)
        lines.append(
            f"{name:<16}{recipe.describe()}{'' if recipe.trainable else '  (no training)'}"
        )
        lines.append(f"{'':<16}{recipe.summary}")
        lines.append(f"{'':<16}parts: {'; '.join(part.label for part in recipe.parts)}")
        defaults = ", ".join(
            f"{k}={_value(k, v)}{'*' if k in recipe.overrides else ''}"
            for k, v in recipe.defaults().items()
        )
        lines.append(f"{'':<16}defaults: {defaults}")
        lines.append(f"{'':<16}{parameter_line(recipe)}")
    return lines


def register(app: typer.Typer) -> None:
    """Add the ``methods`` command to ``app``."""

    @app.command("methods")
    def methods_command() -> None:
        """List the methods: parts (prompt · texts · grouping · aggregation), summary, defaults;
        with those of the installed method plugins (entry points ``reprogram.methods``)."""
        from reprogram.model.recipes import load_method_plugins

        for problem in load_method_plugins():
            typer.echo(f"warning: method plugin not loaded: {problem}", err=True)
        typer.echo("\n".join(method_lines()))
