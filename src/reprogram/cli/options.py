"""What several commands share: option types, config building and the ``--help`` defaults.

An option that a library function or dataclass takes is declared once, there: :func:`options_of`
makes the command's options from its parameters (type and default) and a table of help texts,
:func:`arguments_for` hands the given ones back, and :func:`options_like` lends one command's
options to another (``base2novel`` and ``eval`` take ``train``'s)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

C = TypeVar("C", bound=Callable)
KEYWORD = inspect.Parameter.KEYWORD_ONLY

MethodOpt = Annotated[
    str,
    typer.Option("--method", help="a method name (see: reprogram methods)"),
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="a published name (dtd, …), folder:PATH or csv:FILE")
]
RootOpt = Annotated[
    str | None, typer.Option("--root", help="folder holding the published datasets")
]
BackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--backbone", help="architecture (ViT-B-16, …), random:ARCH, local-dir:DIR, hf:DIR"
    ),
]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="local weights file or folder")]
DescriptionsOpt = Annotated[
    list[str] | None,
    typer.Option("--descriptions", help="description files (one per cause for dvp-cse)"),
]
# describe and descriptions check: the classes, from a file or a published dataset
ClassListOpt = Annotated[
    Path | None, typer.Option("--classes", help="Class names: one per line, or a JSON list.")
]
PublishedDatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="A published dataset (dtd, …): its classes.")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="any config key: --set key=value")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:1")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")]
ShotsOpt = Annotated[int | None, typer.Option(help="shots per class (0 = all)")]
SeedOpt = Annotated[int | None, typer.Option(help="random seed (few-shot draw, order, init)")]
EpochsOpt = Annotated[int | None, typer.Option()]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size")]
LrOpt = Annotated[float | None, typer.Option()]


def given(value: Any) -> bool:
    """Whether an option was given: not ``None``, an unset flag (``False``) or an empty list."""
    return not (value is None or value is False or (isinstance(value, list) and not value))


def overrides(**values) -> dict:
    """The options that were given (see :func:`given`), as config overrides."""
    return {k: v for k, v in values.items() if given(v)}


def config_from(config_file: Path | None, sets: list[str] | None, **values):
    """``--config`` file, then the given options, then ``--set key=value``."""
    from reprogram.engine.config import load_config, parse_set_options

    chosen = [*overrides(**values).items(), *parse_set_options(sets or []).items()]
    return load_config(config_file, chosen)  # an option and a --set of one key must agree


def config_of(values: dict[str, Any], skip: tuple[str, ...] = ()):
    """The config a command's parameters (its ``locals()``) describe, less those in ``skip``."""
    options = {k: v for k, v in values.items() if k not in ("config_file", "sets", *skip)}
    return config_from(values.get("config_file"), values.get("sets"), **options)


def warn_ignored(
    command: str, because: str, why: str = "the run's own settings are used", **options
) -> None:
    """Warn about options that have no effect (``--checkpoint`` or ``--resume`` decides)."""
    names = [f"--{k.replace('_', '-')}" for k, v in options.items() if given(v)]
    if names:
        typer.echo(
            f"warning: {command}: {', '.join(names)} ignored with {because} ({why})", err=True
        )


# defaults that TrainConfig leaves to the data (None / empty), as --help should say them
SHOWN_DEFAULTS = {
    "clusters": "the dataset's published v, else 3",
    "causes": "1,2,3",
    "description_source": "the papers' own sets",
    "descriptions": "packaged for published datasets; DIR/descriptions/ for folder:DIR",
}


def shown(value: Any) -> str:
    """A default as ``--help`` says it: ``none`` for nothing, on/off, lists comma-separated."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value in (None, [], ""):
        return "none"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def show_defaults(command: C, defaults: Mapping[str, str]) -> C:
    """Show ``defaults[name]`` in ``--help`` for each option left ``None`` (the library decides)."""
    signature = inspect.signature(command, eval_str=True)
    params = []
    for param in signature.parameters.values():
        meta = getattr(param.annotation, "__metadata__", ())
        if param.name in defaults and param.default is None and meta:
            info = copy.copy(meta[0])
            info.show_default = defaults[param.name]
            param = param.replace(annotation=Annotated[param.annotation.__origin__, info])
        params.append(param)
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return command


def show_config_defaults(command: C) -> C:
    """Show TrainConfig's defaults in ``--help`` for options left ``None`` (the config decides)."""
    from reprogram.engine.config import TrainConfig, flat_items

    defaults = flat_items(TrainConfig(), runtime=True)
    return show_defaults(
        command, {k: SHOWN_DEFAULTS.get(k) or shown(v) for k, v in defaults.items()}
    )


def options_of(
    helps: Mapping[str, str], targets: Mapping[str, Callable]
) -> list[inspect.Parameter]:
    """One ``--name`` option per entry of ``helps``, each a parameter of the functions or
    dataclasses in ``targets`` (label -> target): typed as there, left ``None`` so that the
    target's default applies, and that default shown in ``--help`` (``64``, or ``47; --scale:
    1000`` where the targets differ). Give them to a command with :func:`with_options`."""
    defaults = {label: _defaults(target) for label, target in targets.items()}
    types = {k: v for t in reversed(list(targets.values())) for k, v in _hints(t).items()}
    options = []
    for name, text in helps.items():
        flag = "--" + name.replace("_", "-")
        kind = types[name]
        [(_, first), *others] = [(label, d[name]) for label, d in defaults.items() if name in d]
        default = "; ".join([shown(first)] + [f"{k}: {shown(v)}" for k, v in others if v != first])
        decl = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
        info = typer.Option(decl, help=text, show_default=default)
        annotation = Annotated[kind | None, info]  # type: ignore[operator]
        options.append(inspect.Parameter(name, KEYWORD, default=None, annotation=annotation))
    return options


def _hints(target: Callable) -> dict[str, Any]:
    return get_type_hints(target.__init__ if isinstance(target, type) else target)


def _defaults(target: Callable) -> dict[str, Any]:
    params = inspect.signature(target).parameters.values()
    made = {}  # a dataclass field's default_factory: what it makes ([], {}), not "<factory>"
    if dataclasses.is_dataclass(target):
        made = {f.name: f.default_factory for f in dataclasses.fields(target)}
    return {
        p.name: made[p.name]() if made.get(p.name, MISSING) is not MISSING else p.default
        for p in params
        if p.default is not p.empty
    }


def arguments_for(target: Callable, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that ``target`` (a function or dataclass) takes and that were
    given (not ``None``): its keyword arguments, its own defaults deciding the rest."""
    names = inspect.signature(target).parameters
    return {k: v for k, v in values.items() if k in names and v is not None}


def options_like(
    command: Callable, only: Sequence[str] | None = None, **defaults: Any
) -> list[inspect.Parameter]:
    """``command``'s options (as its ``--help`` shows them; ``only`` those named), with other
    ``defaults``."""
    params = inspect.signature(command, eval_str=True).parameters.values()
    return [
        p.replace(default=defaults[p.name]) if p.name in defaults else p
        for p in params
        if only is None or p.name in only
    ]


def with_options(command: C, options: Sequence[inspect.Parameter], first: bool = True) -> C:
    """Give ``command``, which takes ``**values``, ``options`` before its own parameters (after
    them unless ``first``; a second call replaces the options of the first)."""
    names = {p.name for p in options}
    own = inspect.signature(command, eval_str=True).parameters.values()
    kept = [p for p in own if p.kind is not p.VAR_KEYWORD and p.name not in names]
    params = [*options, *kept] if first else [*kept, *options]
    signature = inspect.Signature([p.replace(kind=KEYWORD) for p in params])
    command.__signature__ = signature  # type: ignore[attr-defined]
    return command
