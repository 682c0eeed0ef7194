"""``reprogram tune SPEC.yaml``: an Optuna search for one task, then the best configuration over
the seeds, tested once (see docs/tune.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reprogram.cli.options import DeviceOpt, with_options
from reprogram.cli.sweep import (
    EXECUTOR_HELP,
    ExecutorOpt,
    OutOpt,
    executor_options,
    executor_settings,
)


def register(app: typer.Typer) -> None:
    """Add ``tune`` to ``app``."""
    options = executor_options({k: EXECUTOR_HELP[k] for k in SLURM_OPTIONS})
    app.command("tune")(with_options(tune, options, first=False))


# the Slurm executor's settings that tune takes (its --workers are the search's)
SLURM_OPTIONS = ("partition", "time", "gpus_per_task", "cpus_per_task", "mem", "account", "qos")


def tune(
    spec: Annotated[Path, typer.Argument(help="the tuning spec (YAML): see docs/tune.md")],
    out: OutOpt = None,
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
    executor: ExecutorOpt = None,
    search_only: Annotated[
        bool, typer.Option("--search-only", help="only search: no final runs")
    ] = False,
    device: DeviceOpt = None,
    **values: Any,
) -> None:
    """Tune one task's hyper-parameters with Optuna (objective: validation accuracy of the
    selected epoch; the test split is never read), then train the best configuration once per
    seed and test it. Rerunning resumes the study."""
    from reprogram.tune import TuneOptions, load_tune_spec
    from reprogram.tune import tune as run_tune

    loaded = load_tune_spec(spec)
    chosen = executor or loaded.sweep.executor
    settings = executor_settings(chosen, values, SLURM_OPTIONS)
    options = TuneOptions(
        out=out,
        storage=storage,
        study=study,
        workers=workers,
        trials=trials,
        timeout=timeout,
        executor=executor,
        settings=settings,
        device=device,
        final=not search_only,
    )
    result = run_tune(loaded, options, echo=typer.echo)
    if result.status is not None and result.status.count("failed"):
        raise typer.Exit(1)
