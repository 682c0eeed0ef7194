"""The ``reprogram`` command line: a thin layer over the library.

Every command lives in a module of this package by group and is added by that module's
``register(app)``; :func:`register_subcommands` calls each once. A new command group is one
module with ``register`` and one entry in :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import os
import sys

import typer

from reprogram.cli import describe, descriptions, evaluate, methods, report, speed, toy, train
from reprogram.cli import sweep as sweep_cli
from reprogram.cli import tune as tune_cli
from reprogram.errors import ReprogramError, routed_warnings

app = typer.Typer(
    name="reprogram",
    help="Visual reprogramming of frozen CLIP: DVP (decoupled visual prompts) and baselines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# In the order of ``reprogram --help``.
COMMAND_MODULES = (train, evaluate, methods, toy, describe, descriptions, report, speed)
COMMAND_MODULES += (sweep_cli,)
COMMAND_MODULES += (tune_cli,)

# Options taking several values after one flag (``--seeds 1 2 3``); typer repeats the flag.
MULTI_VALUE_OPTIONS = ("--descriptions", "--seeds", "--tasks", "--methods")


def register_subcommands(target: typer.Typer) -> typer.Typer:
    """Add every command to ``target``, once (a second call changes nothing)."""
    if not getattr(target, "_reprogram_registered", False):
        for module in COMMAND_MODULES:
            module.register(target)
        target._reprogram_registered = True  # type: ignore[attr-defined]
    return target


def expand_multi_value_options(argv: list[str]) -> list[str]:
    """``--seeds 1 2 3`` -> ``--seeds 1 --seeds 2 --seeds 3`` (typer repeats the flag instead)."""
    result: list[str] = []
    current = None
    for token in argv:
        if token in MULTI_VALUE_OPTIONS:
            current = token
            continue
        if current is not None:
            if token.startswith("-"):
                current = None
            else:
                result += [current, token]
                continue
        result.append(token)
    return result


def main(argv: list[str] | None = None) -> None:
    register_subcommands(app)
    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        from typer import rich_utils

        # not a terminal: no width to fit, so do not wrap help at rich's default 80 columns
        rich_utils.MAX_WIDTH = rich_utils.MAX_WIDTH or 160
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    try:
        with routed_warnings(_warn_once(set())):  # a run's own are kept in its results too
            app(args=args, prog_name="reprogram", standalone_mode=True)
    except ReprogramError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is saved (use --resume to continue)", err=True)
        sys.exit(130)
    finally:
        _leave_process_group()


def _warn_once(shown: set[str]):
    """Print a Python user warning as one ``warning:`` line, each message once."""

    def warn(message: str) -> None:
        if message not in shown:
            shown.add(message)
            typer.echo(f"warning: {message}", err=True)

    return warn


def _leave_process_group() -> None:
    """Under torchrun, leave the process group the run joined before the process exits (only
    ``engine.distributed`` joins one: a command that did not load it has nothing to leave)."""
    distributed = sys.modules.get("reprogram.engine.distributed")
    if distributed is not None:
        distributed.close_world()
