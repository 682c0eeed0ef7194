"""What several commands share: option types, config building and the ``--help`` defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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

    chosen = overrides(**values)
    chosen.update(parse_set_options(sets or []))
    return load_config(config_file, chosen)


def config_of(values: dict[str, Any], skip: tuple[str, ...] = ()):
    """The config a command's parameters (its ``locals()``) describe, less those in ``skip``."""
    options = {k: v for k, v in values.items() if k not in ("config_file", "sets", *skip)}
    return config_from(values.get("config_file"), values.get("sets"), **options)


def warn_ignored(command: str, because: str, **options) -> None:
    """Warn about options that have no effect (``--checkpoint`` or ``--resume`` decides)."""
    names = [f"--{k.replace('_', '-')}" for k, v in options.items() if given(v)]
    if names:
        typer.echo(
            f"warning: {command}: {', '.join(names)} ignored with {because} "
            "(the run's own settings are used)",
            err=True,
        )


# defaults that TrainConfig leaves to the data (None / empty), as --help should say them
SHOWN_DEFAULTS = {
    "clusters": "the dataset's published v, else 3",
    "causes": "1,2,3",
    "description_source": "the papers' own sets",
    "descriptions": "packaged for published datasets; DIR/descriptions/ for folder:DIR",
}


def show_config_defaults(command: Any) -> Any:
    """Show TrainConfig's defaults in ``--help`` for options left ``None`` (the config decides)."""
    import copy
    import inspect

    from reprogram.engine.config import TrainConfig, flat_items

    defaults = flat_items(TrainConfig(), runtime=True)
    signature = inspect.signature(command, eval_str=True)
    params = []
    for param in signature.parameters.values():
        meta = getattr(param.annotation, "__metadata__", ())
        if param.name in defaults and param.default is None and meta:
            value = defaults[param.name]
            info = copy.copy(meta[0])
            info.show_default = SHOWN_DEFAULTS.get(param.name) or (
                "none"
                if value in (None, [], "")
                else ",".join(map(str, value))
                if isinstance(value, list)
                else str(value)
            )
            param = param.replace(annotation=Annotated[param.annotation.__origin__, info])
        params.append(param)
    command.__signature__ = signature.replace(parameters=params)
    return command
