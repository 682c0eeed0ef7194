"""Executors: where a sweep's runs execute, behind one interface (as submitit's executors).

An executor is made from its settings (a dataclass: from the spec's ``local:``/``slurm:``
mapping, then the command line), says whether it can run here (:meth:`Executor.check`, before
anything is written), and executes a list of runs (:meth:`Executor.execute`), calling
``progress()`` now and then so that the caller can show the sweep's state. Adding one (another
scheduler submitit supports, say) is a settings class, an executor class and one entry in
:data:`EXECUTOR_TYPES`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from reprogram.errors import ReprogramError

if typing.TYPE_CHECKING:
    from reprogram.sweep.expand import SweepRun
    from reprogram.sweep.spec import Where


@dataclass
class LocalSettings:
    """This machine: ``workers`` processes, or one per GPU in ``gpus``."""

    workers: int = 1  # 0: one after another in the calling process
    gpus: list[int] = field(default_factory=list)  # one worker per GPU (CUDA_VISIBLE_DEVICES)
    threads: int = 0  # torch threads per worker; 0 = this machine's cores / workers


@dataclass
class SlurmSettings:
    """A Slurm job array through submitit; ``runs_per_task`` runs one after another per task."""

    partition: str = ""
    time: int = 60  # minutes per array task
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem: str = ""  # e.g. 16G; empty: the partition's default
    account: str = ""
    qos: str = ""
    runs_per_task: int = 1
    array_parallelism: int = 256  # array tasks running at once
    setup: list[str] = field(default_factory=list)  # shell lines before the task (module load …)
    additional: dict[str, Any] = field(default_factory=dict)  # any other sbatch option


class Executor(Protocol):
    name: str

    def check(self) -> None:
        """Raise a one-line ReprogramError if this executor cannot run here."""

    @property
    def slots(self) -> int:
        """How many runs execute at once (for the ETA)."""

    def execute(
        self,
        runs: list[SweepRun],
        out: Path,
        retry_failed: bool,
        runtime: dict[str, Any],
        progress: Callable[[], None],
    ) -> None:
        """Execute ``runs`` into ``out``; return when they have ended (or were submitted)."""


# each executor's name and settings
EXECUTOR_TYPES: dict[str, type] = {"local": LocalSettings, "slurm": SlurmSettings}


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        items = value if isinstance(value, list) else [v for v in str(value).split(",") if v != ""]
        return [_coerce(name, typing.get_args(hint)[0], v) for v in items]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value!r}")
        return dict(value)
    if hint is int:
        bad = isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
        if bad or not str(value).strip().lstrip("-").isdigit() and not isinstance(value, float):
            raise ValueError(f"expected a whole number, got {value!r}")
        return int(value)
    return str(value)


def _time_minutes(value: Any) -> int:
    """``90``, ``"90"``, ``"1:30:00"`` or ``"2-00:00:00"`` as minutes (Slurm's forms)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        minutes = parts[0]
    elif len(parts) == 2:
        minutes = parts[0] + (parts[1] > 0)  # MM:SS
    else:
        minutes = parts[0] * 60 + parts[1] + (parts[2] > 0)
    return minutes + 24 * 60 * int(days or 0)


def make_settings(name: str, values: dict[str, Any], source: str = "") -> Any:
    """The settings of executor ``name`` from ``values``; an unknown or bad key is one line."""
    kind = EXECUTOR_TYPES[name]
    hints = typing.get_type_hints(kind)
    known = {f.name for f in fields(kind)}
    chosen = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        where = f"{source}{name}.{key}"
        if key not in known:
            raise ReprogramError(
                f"{where}: unknown {name} executor setting (known: {', '.join(sorted(known))})"
            )
        try:
            chosen[key] = _time_minutes(value) if key == "time" else _coerce(key, hints[key], value)
        except ValueError as err:
            raise ReprogramError(f"{where}: {err}") from None
    return kind(**chosen)


def check_settings(name: str, values: dict[str, Any], where: Where) -> None:
    """Check a spec's ``local:``/``slurm:`` mapping, naming the line of a bad key."""
    for key in values:
        try:
            make_settings(name, {key: values[key]})
        except ReprogramError as err:
            message = str(err).partition(": ")[2]
            raise where.error((name, str(key)), message) from None


def get_executor(name: str, settings: Any, out: Path, wait: bool = True) -> Executor:
    """The executor ``name`` with its settings (a settings dataclass); ``wait=False``: a
    scheduler's executor returns once the runs are submitted."""
    if name == "local":
        from reprogram.sweep.local import LocalExecutor

        return LocalExecutor(settings)
    if name == "slurm":
        try:
            from reprogram.sweep.slurm import SlurmExecutor
        except ImportError as err:
            raise ReprogramError(
                f"the slurm executor needs submitit ({err}): pip install submitit"
            ) from None
        return SlurmExecutor(settings, out, wait)
    raise ReprogramError(f"unknown executor '{name}' (known: {', '.join(EXECUTOR_TYPES)})")


def settings_with(name: str, settings: Any, **changes: Any) -> Any:
    """``settings`` of executor ``name`` with the given (not ``None``) values changed."""
    given = {k: v for k, v in changes.items() if v is not None}
    checked = make_settings(name, given, "command line: ")
    return dataclasses.replace(settings, **{k: getattr(checked, k) for k in given})
