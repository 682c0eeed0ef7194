"""The Optuna study of a tuning spec: its storage, sampler and pruner, the trial budget shared by
every worker, and the trials a dead worker left behind.

Storage: an SQLite file ``OUT/study.db`` by default; a database URL (``scheme://…``) as is; any
other path is an Optuna journal file (``JournalStorage`` with a file backend: for several workers
or nodes on a shared file system). Rerunning a spec loads its study (``load_if_exists``).

Workers ask for trials one at a time under a file lock in the output folder, so the budget is
exact: every trial counts, except one lost with its worker. A running trial records its worker
(host, pid) and a heartbeat; a trial whose worker is gone (its process is dead on this host, or
its heartbeat is older than three intervals) is marked failed and lost, and its parameters are
queued again: killing a worker loses at most its running trial.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError
from reprogram.storage.files import pid_alive
from reprogram.tune.spec import Param, Pruner

DATABASE = "study.db"
STATE = ".tune"  # the lock and the workers' logs, in the output folder
LOST = "lost"  # user attribute of a trial failed because its worker died
RETRY_OF = "retry_of"


def require_optuna() -> None:
    """One line, not a traceback, where Optuna is not installed."""
    try:
        import optuna  # noqa: F401
    except ImportError as err:
        raise ReprogramError(
            f"reprogram tune needs optuna ({err}): pip install 'reprogram[sweep]'"
        ) from None


def storage_location(out: Path, given: str = "") -> str:
    """The study's storage: a database URL, or a journal file's absolute path."""
    if not given:
        return f"sqlite:///{(Path(out) / DATABASE).absolute()}"
    if "://" in given:
        return given
    return str(Path(given).expanduser().absolute())


def open_storage(location: str) -> Any:
    import optuna

    if "://" not in location:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(location)
        return optuna.storages.JournalStorage(backend)
    if location.startswith("sqlite:///"):
        Path(location[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 60}}  # several workers write to one file
        return optuna.storages.RDBStorage(location, engine_kwargs=kwargs)
    try:
        return optuna.storages.RDBStorage(location)
    except Exception as err:  # a driver missing, a server not reachable, a bad URL
        raise ReprogramError(f"storage {location}: {err}") from None


def make_sampler(kind: str, seed: int) -> Any:
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(pruner: Pruner, max_epochs: int) -> Any:
    import optuna

    if pruner.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_epochs
        )
    if pruner.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_epochs,
            max_resource=max(max_epochs, pruner.min_epochs),
            reduction_factor=pruner.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def space_record(params: dict[str, Param], base: dict[str, Any], seed: int) -> dict[str, Any]:
    """What a study searches: kept with it, so that a rerun with another search is refused."""
    task = {k: v for k, v in base.items() if k != "seed"}
    return {"params": {k: asdict(p) for k, p in params.items()}, "task": task, "seed": seed}


def _plain(value: Any) -> Any:
    """JSON's view of ``value`` (tuples as lists), as a study's attribute is read back."""
    import json

    return json.loads(json.dumps(value, default=str))


def open_study(
    location: str,
    name: str,
    sampler: Any = None,
    pruner: Any = None,
    space: dict[str, Any] | None = None,
) -> Any:
    """Create or load the study ``name``; ``space``: check it searches the same as before."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(location),
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
    if space is not None:
        space = _plain(space)
        known = study.user_attrs.get("space")
        if known is None:
            study.set_user_attr("space", space)
        elif known != space:
            changed = sorted(
                k for k in set(known["params"]) | set(space["params"])
                if known["params"].get(k) != space["params"].get(k)
            ) or ["the task"]  # fmt: skip
            raise ReprogramError(
                f"study '{name}' in {location} searched another space ({', '.join(changed)} "
                "differ): use another output folder, study name or storage"
            )
    return study


@contextlib.contextmanager
def study_lock(out: Path):
    """One worker at a time asks for a trial (an exclusive lock on ``OUT/.tune/lock``)."""
    folder = Path(out) / STATE
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def worker_record() -> dict[str, Any]:
    job = os.environ.get("SLURM_JOB_ID")
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": job}


def _gone(trial: Any, now: float, interval: float) -> bool:
    """Whether a running trial's worker is gone (dead here, or silent for three heartbeats)."""
    worker = trial.user_attrs.get("worker") or {}
    here = worker.get("host") == socket.gethostname() and isinstance(worker.get("pid"), int)
    if here and not pid_alive(worker["pid"]):
        return True
    beat = trial.user_attrs.get("heartbeat")
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    return beat is not None and now - float(beat) > 3 * interval + 5


def retire(study: Any, trial: Any) -> bool:
    """Fail a running trial as lost and queue its parameters again; whether this call did."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, LOST, True)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number}, skip_if_exists=False)
    return True


def retire_lost(study: Any, interval: float) -> list[int]:
    """Retire the running trials whose worker is gone (see the module); their numbers."""
    from optuna.trial import TrialState

    now = time.time()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t.number for t in running if _gone(t, now, interval) and retire(study, t)]


def counted(trials: list[Any]) -> int:
    """The trials that count against the budget: all but those lost with their worker."""
    from optuna.trial import TrialState

    return sum(not (t.state == TrialState.FAIL and t.user_attrs.get(LOST)) for t in trials)


class Heartbeat:
    """While a trial runs: its worker and, every ``interval`` seconds, the time (user attrs)."""

    def __init__(self, trial: Any, interval: float) -> None:
        self.trial, self.interval = trial, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat is made up by the next one
                self.trial.set_user_attr("heartbeat", time.time())

    def __enter__(self) -> Heartbeat:
        self.trial.set_user_attr("worker", worker_record())
        self.trial.set_user_attr("heartbeat", time.time())
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
