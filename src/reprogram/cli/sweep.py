"""``reprogram sweep SPEC.yaml``: a grid of runs, locally or on Slurm (see docs/sweeps.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reprogram.cli.options import DeviceOpt


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to ``app``."""
    app.command("sweep")(sweep)


Int = Annotated[int | None, typer.Option()]
Text = Annotated[str | None, typer.Option()]


def sweep(
    spec: Annotated[Path, typer.Argument(help="the sweep's spec (YAML): see docs/sweeps.md")],
    out: Annotated[
        Path | None, typer.Option("--out", help="output folder (default: the spec's out)")
    ] = None,
    executor: Annotated[
        str | None, typer.Option("--executor", help="local or slurm (default: the spec's)")
    ] = None,
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
    workers: Annotated[int | None, typer.Option(help="local: worker processes")] = None,
    gpus: Annotated[
        str | None, typer.Option(help="local: GPUs, e.g. 0,1,2,3 (one run per GPU at a time)")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="local: torch threads per worker (default: cores/workers)")
    ] = None,
    partition: Annotated[str | None, typer.Option(help="slurm: partition")] = None,
    time: Annotated[
        str | None, typer.Option("--time", help="slurm: time per array task (minutes or H:MM:SS)")
    ] = None,
    gpus_per_task: Annotated[int | None, typer.Option(help="slurm: GPUs per array task")] = None,
    cpus_per_task: Annotated[int | None, typer.Option(help="slurm: CPUs per array task")] = None,
    mem: Annotated[str | None, typer.Option(help="slurm: memory per array task, e.g. 16G")] = None,
    account: Annotated[str | None, typer.Option(help="slurm: account")] = None,
    qos: Annotated[str | None, typer.Option(help="slurm: QoS")] = None,
    runs_per_task: Annotated[
        int | None, typer.Option(help="slurm: runs one after another in each array task")
    ] = None,
) -> None:
    """Run a grid of runs (methods × datasets × backbones × shots × options × seeds) into
    ordinary run folders OUT/<dataset>/<method>/<backbone>/<shots>-shot/<options>/seed-N.
    Rerunning skips finished runs and resumes interrupted ones."""
    from reprogram.sweep import SweepOptions, load_spec, run_sweep, status_text, sweep_status

    loaded = load_spec(spec)
    if status:
        typer.echo(status_text(sweep_status(loaded, out)))
        return
    local = {"workers": workers, "gpus": gpus, "threads": threads}
    slurm = {
        "partition": partition,
        "time": time,
        "gpus_per_task": gpus_per_task,
        "cpus_per_task": cpus_per_task,
        "mem": mem,
        "account": account,
        "qos": qos,
        "runs_per_task": runs_per_task,
    }
    chosen = executor or loaded.executor
    settings = local if chosen == "local" else slurm
    other = slurm if chosen == "local" else local
    ignored = [f"--{k.replace('_', '-')}" for k, v in other.items() if v is not None]
    if ignored:
        typer.echo(f"warning: {', '.join(ignored)} ignored with the {chosen} executor", err=True)
    options = SweepOptions(
        out=out,
        executor=executor,
        settings={k: v for k, v in settings.items() if v is not None},
        retry_failed=retry_failed,
        dry_run=dry_run,
        wait=not detach,
        device=device,
    )
    final = run_sweep(loaded, options, echo=typer.echo)
    if not dry_run and final.count("failed"):
        raise typer.Exit(1)
