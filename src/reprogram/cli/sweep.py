"""``reprogram sweep SPEC.yaml``: a grid of runs, locally or on Slurm (see docs/sweeps.md)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from reprogram.cli.options import DeviceOpt, options_of, with_options


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to ``app``."""
    app.command("sweep")(with_options(sweep, executor_options(EXECUTOR_HELP), first=False))


OutOpt = Annotated[Path | None, typer.Option(help="output folder (default: the spec's out)")]
ExecutorOpt = Annotated[str | None, typer.Option(help="local or slurm (default: the spec's)")]

# The executors' options, in --help order: each a field of LocalSettings or SlurmSettings (which
# hold the types and defaults); given ones change the spec's local:/slurm: settings.
EXECUTOR_HELP = {
    "workers": "local: worker processes",
    "gpus": "local: GPUs, e.g. 0,1,2,3 (one run per GPU at a time)",
    "threads": "local: torch threads per worker (0: cores/workers)",
    "partition": "slurm: partition",
    "time": "slurm: time per array task (minutes or H:MM:SS)",
    "gpus_per_task": "slurm: GPUs per array task",
    "cpus_per_task": "slurm: CPUs per array task",
    "mem": "slurm: memory per array task, e.g. 16G",
    "account": "slurm: account",
    "qos": "slurm: QoS",
    "runs_per_task": "slurm: runs one after another in each array task",
}
AS_TEXT = ("gpus", "time")  # parsed by the settings: 0,1,2,3; 90, 1:30:00 or 2-00:00:00


def executor_options(helps: Mapping[str, str]) -> list[inspect.Parameter]:
    """The options of the executors' settings named in ``helps``, each default shown as the
    spec's, else the settings class's."""
    from reprogram.sweep.executors import LocalSettings, SlurmSettings

    options = []
    for option in options_of(helps, {"local": LocalSettings, "slurm": SlurmSettings}):
        info = copy.copy(option.annotation.__metadata__[0])
        info.show_default = f"the spec's, else {info.show_default}"
        kind = str if option.name in AS_TEXT else option.annotation.__origin__
        options.append(option.replace(annotation=Annotated[kind, info]))
    return options


def executor_settings(chosen: str, values: Mapping[str, Any], names: Iterable[str]) -> dict:
    """The executor options among ``names`` given in ``values`` that executor ``chosen``
    takes; a warning names the given ones it does not."""
    from reprogram.sweep.executors import EXECUTOR_TYPES

    takes = {f.name for f in fields(EXECUTOR_TYPES[chosen])} if chosen in EXECUTOR_TYPES else set()
    given = {k: values[k] for k in names if values.get(k) is not None}
    ignored = [f"--{k.replace('_', '-')}" for k in given if k not in takes]
    if ignored:
        typer.echo(f"warning: {', '.join(ignored)} ignored with the {chosen} executor", err=True)
    return {k: v for k, v in given.items() if k in takes}


def sweep(
    spec: Annotated[Path, typer.Argument(help="the sweep's spec (YAML): see docs/sweeps.md")],
    out: OutOpt = None,
    executor: ExecutorOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only print the runs the spec expands into")
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="print the runs' states; start nothing")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="run failed runs again")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="slurm: return once the job array is submitted")
    ] = False,
    device: DeviceOpt = None,
    **values: Any,
) -> None:
    """Run a grid of runs (methods × datasets × backbones × shots × options × seeds) into
    ordinary run folders OUT/<dataset>/<method>/<backbone>/<shots>-shot/<options>/seed-N.
    Rerunning skips finished runs and resumes interrupted ones."""
    from reprogram.sweep import SweepOptions, load_spec, run_sweep, status_text, sweep_status

    loaded = load_spec(spec)
    if status:
        typer.echo(status_text(sweep_status(loaded, out)))
        return
    chosen = executor or loaded.executor
    settings = executor_settings(chosen, values, EXECUTOR_HELP)
    options = SweepOptions(
        out=out,
        executor=executor,
        settings=settings,
        retry_failed=retry_failed,
        dry_run=dry_run,
        wait=not detach,
        device=device,
    )
    final = run_sweep(loaded, options, echo=typer.echo)
    if not dry_run and final.count("failed"):
        raise typer.Exit(1)
