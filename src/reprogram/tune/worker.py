"""A tuning worker: it takes trials from the study until the budget is spent, each an ordinary
run folder ``OUT/trials/trial-NNNN`` trained by the engine with the test split never read
(``skip_test``), its validation curve reported to the pruner epoch by epoch.

The objective is the validation accuracy of the selected epoch (selection on validation), the
value a trial reports at each evaluated epoch the best validation accuracy so far.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprogram.engine.config import TrainConfig, load_config
from reprogram.engine.train import StopRun, fit
from reprogram.tune.spec import Param, Pruner
from reprogram.tune.study import (
    STATE,
    Heartbeat,
    counted,
    make_pruner,
    make_sampler,
    open_study,
    retire,
    retire_lost,
    study_lock,
)

TRIALS = "trials"  # the trials' run folders, under the output folder
POLL_S = 2.0


@dataclass
class WorkerJob:
    """What a worker needs (picklable: it travels to spawned processes and Slurm tasks)."""

    out: str
    storage: str
    study: str
    base: dict[str, Any]  # the task's config values
    params: dict[str, Param]
    trials: int  # the budget, all workers together
    seed: int  # the trials' training seed
    sampler: str = "tpe"
    sampler_seed: int = 0
    pruner: Pruner = field(default_factory=Pruner)
    heartbeat: float = 30.0
    deadline: float | None = None  # time.time() after which no trial starts
    runtime: dict[str, Any] = field(default_factory=dict)  # device, …
    index: int = 0  # the worker's index (its sampler's seed offset)

    @property
    def max_epochs(self) -> int:
        """The most epochs a trial trains (the pruner's largest budget)."""
        searched = self.params.get("epochs")
        if searched is not None:
            return int(searched.high if searched.kind == "int" else max(searched.choices))
        return int(self.base.get("epochs") or TrainConfig().optim.epochs)


def trial_config(job: WorkerJob, values: dict[str, Any]) -> TrainConfig:
    """A trial's config: the task, the trial's values, the trials' seed; the test split never
    read."""
    fixed = {"seed": job.seed, "skip_test": True, "quiet": True}
    return load_config(None, {**job.base, **values, **fixed, **job.runtime})


def suggest(trial: Any, params: dict[str, Param]) -> dict[str, Any]:
    values = {}
    for key, p in params.items():
        if p.kind == "choice":
            values[key] = trial.suggest_categorical(key, list(p.choices))
        elif p.kind == "int":
            values[key] = trial.suggest_int(key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return values


class Pruning:
    """The engine's ``on_epoch`` observer: report the best validation accuracy so far at each
    evaluated epoch, and stop the run when the pruner says so."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.pruned_at: int | None = None

    def __call__(self, row: dict[str, Any]) -> None:
        if "val_acc" not in row or row.get("selected_epoch", 0) <= 0:
            return
        self.trial.report(float(row["selected_score"]), step=int(row["epoch"]))
        if self.trial.should_prune():
            self.pruned_at = int(row["epoch"])
            raise StopRun("pruned")


def run_trial(study: Any, trial: Any, job: WorkerJob, log: Any = None) -> str:
    """Train trial ``trial`` into its run folder and tell the study; its final state."""
    from optuna.trial import TrialState

    run_dir = Path(job.out) / TRIALS / f"trial-{trial.number:04d}"
    pruning = Pruning(trial)
    try:
        with Heartbeat(trial, job.heartbeat):
            values = suggest(trial, job.params)
            trial.set_user_attr("run", str(run_dir.relative_to(job.out)))
            results = fit(trial_config(job, values), run_dir, on_epoch=pruning)
            trial.set_user_attr("selected_epoch", results.get("selected_epoch"))
    except (KeyboardInterrupt, SystemExit):
        retire(study, study._storage.get_trial(trial._trial_id))
        raise
    except Exception as err:  # this trial's failure, never the study's
        line = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        if log is not None:
            traceback.print_exc(file=log)
        trial.set_user_attr("error", line)
        study.tell(trial, state=TrialState.FAIL)
        return "failed"
    if pruning.pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned"
    study.tell(trial, float(results["val_accuracy"]))
    return "complete"


def next_trial(study: Any, job: WorkerJob) -> tuple[Any, bool]:
    """Under the study lock: retire lost trials, then ask for a trial if the budget (or a
    queued retry) allows. ``(trial or None, whether others still run)``."""
    from optuna.trial import TrialState

    with study_lock(Path(job.out)):
        retire_lost(study, job.heartbeat)
        trials = study.get_trials(deepcopy=False)
        running = any(t.state == TrialState.RUNNING for t in trials)
        if job.deadline is not None and time.time() >= job.deadline:
            return None, False
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if counted(trials) < job.trials or waiting:
            return study.ask(), running
    return None, running


def work(job: WorkerJob, after_trial: Callable[[], None] | None = None) -> dict[str, int]:
    """Take trials until the budget is spent (or the time is up) and no other trial runs
    (a trial lost meanwhile is queued again); the states of the trials run here.
    ``after_trial()`` is called after each trial and while waiting."""
    sampler = make_sampler(job.sampler, job.sampler_seed + job.index)
    study = open_study(job.storage, job.study, sampler, make_pruner(job.pruner, job.max_epochs))
    done: dict[str, int] = {}
    log_path = Path(job.out) / STATE / f"worker-{job.index}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        while True:
            trial, others = next_trial(study, job)
            if trial is None:
                if not others:
                    return done
                time.sleep(POLL_S)
                if after_trial is not None:
                    after_trial()
                continue
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} pid {os.getpid()}: trial {trial.number}", file=log, flush=True)
            with _output_to(log):
                state = run_trial(study, trial, job, log)
            print(f"trial {trial.number}: {state}", file=log, flush=True)
            done[state] = done.get(state, 0) + 1
            if after_trial is not None:
                after_trial()


@contextlib.contextmanager
def _output_to(log: Any):
    """A trial's printed output (warnings, the engine's lines) into the worker's log."""
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield
        finally:
            sys.stdout.flush()


def work_in_process(job: WorkerJob, env: dict[str, str], threads: int) -> dict[str, int]:
    """A spawned local worker: its threads, then :func:`work`."""
    os.environ.update(env)
    import torch

    torch.set_num_threads(threads)
    return work(job)
