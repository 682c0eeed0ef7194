"""``reprogram tune SPEC.yaml``: an Optuna search for one task, then the best configuration over
the seeds, tested once (see docs/tune.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reprogram.cli.options import DeviceOpt


def register(app: typer.Typer) -> None:
    """Add ``tune`` to ``app``."""
    app.command("tune")(tune)


def tune(
    spec: Annotated[Path, typer.Argument(help="the tuning spec (YAML): see docs/tune.md")],
    out: Annotated[
        Path | None, typer.Option("--out", help="output folder (default: the spec's out)")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="the study's storage: a journal file (several workers or nodes on a shared "
            "file system) or a database URL (default: OUT/study.db, SQLite)"
        ),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="the study's name (default: the output folder's)")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="workers taking trials from the study (local processes or Slurm tasks)"),
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="the trial budget (default: the spec's)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="the time budget in seconds (default: the spec's)")
    ] = None,
    executor: Annotated[
        str | None, typer.Option("--executor", help="local or slurm (default: the spec's)")
    ] = None,
    search_only: Annotated[
        bool, typer.Option("--search-only", help="only search: no final runs")
    ] = False,
    device: DeviceOpt = None,
    partition: Annotated[str | None, typer.Option(help="slurm: partition")] = None,
    time: Annotated[
        str | None, typer.Option("--time", help="slurm: time per task (minutes or H:MM:SS)")
    ] = None,
    gpus_per_task: Annotated[int | None, typer.Option(help="slurm: GPUs per task")] = None,
    cpus_per_task: Annotated[int | None, typer.Option(help="slurm: CPUs per task")] = None,
    mem: Annotated[str | None, typer.Option(help="slurm: memory per task, e.g. 16G")] = None,
    account: Annotated[str | None, typer.Option(help="slurm: account")] = None,
    qos: Annotated[str | None, typer.Option(help="slurm: QoS")] = None,
) -> None:
    """Tune one task's hyper-parameters with Optuna (objective: validation accuracy of the
    selected epoch; the test split is never read), then train the best configuration once per
    seed and test it. Rerunning resumes the study."""
    from reprogram.tune import TuneOptions, load_tune_spec
    from reprogram.tune import tune as run_tune

    loaded = load_tune_spec(spec)
    slurm = {
        "partition": partition,
        "time": time,
        "gpus_per_task": gpus_per_task,
        "cpus_per_task": cpus_per_task,
        "mem": mem,
        "account": account,
        "qos": qos,
    }
    chosen = executor or loaded.sweep.executor
    given = {k: v for k, v in slurm.items() if v is not None}
    if given and chosen != "slurm":
        names = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        typer.echo(f"warning: {names} ignored with the {chosen} executor", err=True)
    options = TuneOptions(
        out=out,
        storage=storage,
        study=study,
        workers=workers,
        trials=trials,
        timeout=timeout,
        executor=executor,
        settings=given if chosen == "slurm" else {},
        device=device,
        final=not search_only,
    )
    result = run_tune(loaded, options, echo=typer.echo)
    if result.status is not None and result.status.count("failed"):
        raise typer.Exit(1)
