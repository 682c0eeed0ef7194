"""Tuning a task: the search, then the best configuration trained over the seeds and tested once
through the sweep machinery, then the report.

:func:`tune` is restartable: rerunning it loads the study (finished trials are kept and count
against the budget; a trial lost with its worker runs again), and the final runs are a sweep
(finished ones are skipped). Nothing is written before the executor has said it can run here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError
from reprogram.sweep.executors import EXECUTOR_TYPES, make_settings, settings_with
from reprogram.sweep.expand import expand
from reprogram.sweep.run import SweepOptions, check_inputs, prepare_datasets, run_sweep
from reprogram.sweep.spec import Axis, SweepSpec
from reprogram.sweep.state import SweepStatus
from reprogram.tune.launch import get_workers
from reprogram.tune.report import REPORT_MD, best_trial, write_report
from reprogram.tune.spec import TuneSpec
from reprogram.tune.study import (
    counted,
    open_study,
    require_optuna,
    space_record,
    storage_location,
)
from reprogram.tune.worker import WorkerJob

Echo = Callable[[str], None]
BEST = "best"  # the best configuration's runs, under the output folder


@dataclass
class TuneOptions:
    """How a search runs (the command line's options); ``None``: the spec's setting."""

    out: Path | None = None  # default: the spec's out, else runs/tune
    storage: str | None = None  # a journal file or a database URL (default: OUT/study.db)
    study: str | None = None
    workers: int | None = None
    trials: int | None = None
    timeout: float | None = None
    executor: str | None = None  # local | slurm (default: the spec's)
    settings: dict[str, Any] = field(default_factory=dict)  # executor settings over the spec's
    device: str | None = None
    final: bool = True  # after the search: the best configuration over the seeds, tested


@dataclass
class TuneResult:
    out: Path
    best: dict[str, Any] | None  # {"number", "value", "params"}
    table: dict[str, Any] | None  # the final runs' test table (engine.runs.comparison_table)
    status: SweepStatus | None  # the final runs' states
    summary: dict[str, Any] = field(default_factory=dict)


def _echo(text: str) -> None:
    print(text, flush=True)


def output_folder(spec: TuneSpec, options: TuneOptions) -> Path:
    if options.out is not None:
        return Path(options.out)
    return spec.sweep.out if spec.sweep.out is not None else Path("runs") / "tune"


def _settings(spec: TuneSpec, name: str, options: TuneOptions) -> Any:
    if name not in EXECUTOR_TYPES:
        known = ", ".join(EXECUTOR_TYPES)
        raise ReprogramError(f"unknown executor '{name}' (known: {known})")
    settings = make_settings(name, spec.sweep.executors.get(name, {}), f"{spec.where.file}: ")
    return settings_with(name, settings, **options.settings)


def search(spec: TuneSpec, options: TuneOptions | None = None, echo: Echo = _echo) -> Any:
    """Run the search until its budget is spent; returns the study (Optuna's)."""
    options = options or TuneOptions()
    require_optuna()
    out = output_folder(spec, options)
    name = options.executor or spec.sweep.executor
    settings = _settings(spec, name, options)
    workers = options.workers or len(getattr(settings, "gpus", [])) or spec.workers
    launcher = get_workers(name, workers, settings, out)
    launcher.check()  # before anything is written
    check_inputs(spec.sweep)
    prepare_datasets(spec.sweep, out, echo)
    base = spec.base_values(out)
    location = storage_location(out, options.storage or spec.storage)
    study_name = options.study or spec.study or out.absolute().name
    study = open_study(location, study_name, space=space_record(spec.params, base, spec.seed))
    trials = options.trials or spec.trials
    timeout = options.timeout if options.timeout is not None else spec.timeout
    job = WorkerJob(
        out=str(out.absolute()),
        storage=location,
        study=study_name,
        base=base,
        params=spec.params,
        trials=trials,
        seed=spec.seed,
        sampler=spec.sampler,
        sampler_seed=spec.sampler_seed,
        pruner=spec.pruner,
        heartbeat=spec.heartbeat,
        deadline=None if timeout is None else time.time() + timeout,
        runtime={"device": options.device} if options.device else {},
    )
    before = counted(study.get_trials(deepcopy=False))
    echo(
        f"tuning {', '.join(spec.params)} in {out}: study '{study_name}' ({location}), "
        f"{before}/{trials} trials so far, {workers} {name} worker{'s' * (workers > 1)}, "
        f"pruner {spec.pruner.name}"
        + (f", time budget {timeout:g} s" if timeout is not None else "")
    )
    progress = Progress(study, trials, echo)
    launcher.run(job, progress)
    progress(force=True)
    return study


class Progress:
    """A line when the trials' counts change: by state, and the best so far."""

    def __init__(self, study: Any, budget: int, echo: Echo) -> None:
        self.study, self.budget, self.echo = study, budget, echo
        self.shown: tuple = ()

    def __call__(self, force: bool = False) -> None:
        trials = self.study.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        if tuple(sorted(counts.items())) == self.shown and not (force and not self.shown):
            return
        self.shown = tuple(sorted(counts.items()))
        best = best_trial(self.study)
        text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        line = f"trials {counted(trials)}/{self.budget}: {text}"
        if best is not None:
            line += f"; best {best['value']:.4f} (trial {best['number']})"
        self.echo(line)


def best_spec(spec: TuneSpec, params: dict[str, Any], out: Path) -> SweepSpec:
    """The task's sweep with the best values as options (each a one-value axis, so that the run
    folders name them), into ``OUT/best``; toy tasks read from the search's ``OUT/data``."""
    data = (out / "data").absolute()
    datasets = [
        dataclasses.replace(d, root=d.root or str(data)) if d.toy_task is not None else d
        for d in spec.sweep.datasets
    ]
    options = {**spec.sweep.options, **{k: Axis((v,)) for k, v in params.items()}}
    return dataclasses.replace(spec.sweep, datasets=datasets, options=options, out=out / BEST)


def train_best(
    spec: TuneSpec, params: dict[str, Any], options: TuneOptions, echo: Echo = _echo
) -> tuple[SweepStatus, dict[str, Any] | None]:
    """Train the best configuration once per seed, tested once (a sweep); its test table."""
    from reprogram.engine.checkpoint import RESULTS
    from reprogram.engine.runs import comparison_table

    out = output_folder(spec, options)
    best = best_spec(spec, params, out)
    name = options.executor or spec.sweep.executor
    settings = dict(options.settings)
    if name == "local":
        settings.setdefault("workers", min(options.workers or spec.workers, len(spec.sweep.seeds)))
    sweep = SweepOptions(
        out=out / BEST, executor=name, settings=settings, device=options.device, live=False
    )
    status = run_sweep(best, sweep, echo)
    runs = [out / BEST / run.name for run in expand(best, out / BEST)]
    done = [run for run in runs if (run / RESULTS).is_file()]
    return status, comparison_table(done) if done else None


def tune(spec: TuneSpec, options: TuneOptions | None = None, echo: Echo = _echo) -> TuneResult:
    """Search, train the best configuration over the seeds (tested once), write the report."""
    options = options or TuneOptions()
    out = output_folder(spec, options)
    study = search(spec, options, echo)
    best = best_trial(study)
    status, table = None, None
    if options.final:
        if best is None:
            raise ReprogramError(f"{out}: no trial completed: no best configuration to train")
        echo(f"best trial {best['number']}: validation {best['value']:.4f} with {best['params']}")
        status, table = train_best(spec, best["params"], options, echo)
    method, dataset = spec.sweep.methods[0].name, spec.sweep.datasets[0].label
    summary = {
        "task": f"{method} on {dataset}",
        "study": study.study_name,
        "storage": storage_location(out, options.storage or spec.storage),
        "seeds": spec.sweep.seeds,
        "trial_seed": spec.seed,
        "budget": options.trials or spec.trials,
    }
    summary = write_report(out, study, summary, table)
    echo(f"report: {out / REPORT_MD}")
    return TuneResult(out, best, table, status, summary)
