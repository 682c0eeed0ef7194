"""Running a sweep: expand, print the expansion, check, prepare, execute, show progress.

:func:`run_sweep` is restartable: finished runs are skipped, interrupted ones resume from their
checkpoints, failed ones are retried only with ``retry_failed``, and a run another process holds
(the run lock) is left to it. Nothing is written before the executor has said it can run here
and the inputs (dataset roots, weights) exist.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError
from reprogram.sweep.executors import get_executor, make_settings, settings_with
from reprogram.sweep.expand import SweepRun, default_out, expand, expansion_text
from reprogram.sweep.spec import SweepSpec
from reprogram.sweep.state import SweepStatus, status_text, sweep_status_of

Echo = Callable[[str], None]


@dataclass
class SweepOptions:
    """How a sweep runs (the command line's options): none changes what a run computes."""

    out: Path | None = None  # default: the spec's out, else runs/sweep
    executor: str | None = None  # default: the spec's
    settings: dict[str, Any] = field(default_factory=dict)  # executor settings over the spec's
    retry_failed: bool = False
    dry_run: bool = False
    wait: bool = True  # a scheduler's executor: wait for its jobs (showing progress)
    device: str | None = None
    live: bool | None = None  # a live table (default: when stdout is a terminal)


def _echo(text: str) -> None:
    print(text, flush=True)


def sweep_status(spec: SweepSpec, out: str | Path | None = None, slots: int = 1) -> SweepStatus:
    """Each run's state, read from the run folders (nothing is started or written)."""
    out = Path(out) if out is not None else default_out(spec)
    return sweep_status_of(out, [run.name for run in expand(spec, out)], slots)


def check_inputs(spec: SweepSpec) -> None:
    """The dataset roots, folders, CSV files and weights the spec names exist (one line)."""
    where = spec.where
    for index, dataset in enumerate(spec.datasets):
        if dataset.toy_task is not None:
            continue
        prefix, _, path = dataset.name.partition(":")
        if prefix in ("folder", "csv"):
            if not Path(path).expanduser().exists():
                raise where.error(("datasets", index), f"{path} does not exist")
        elif not Path(dataset.root or "").expanduser().is_dir():
            raise where.error(
                ("datasets", index), f"root of '{dataset.name}' is not a folder: {dataset.root}"
            )
    for index, backbone in enumerate(spec.backbones):
        if backbone.weights and not Path(backbone.weights).expanduser().exists():
            raise where.error(("backbones", index), f"weights not found: {backbone.weights}")


def check_reusable_runs(runs: list[SweepRun], out: Path) -> None:
    """Refuse a run folder that holds a run made with other settings than the spec's."""
    from reprogram.toy.benchmark import check_reusable

    for run in runs:
        if (out / run.name / "config.yaml").is_file():
            check_reusable(out / run.name, run.config())


def prepare_datasets(spec: SweepSpec, out: Path, echo: Echo) -> None:
    """Write the toy tasks the spec names, once, where the runs read them."""
    from reprogram.toy.benchmark import BenchmarkSettings, prepare_task

    for dataset in spec.datasets:
        task = dataset.toy_task
        if task is not None:
            data_dir = Path(dataset.root).expanduser() if dataset.root else out / "data"
            if not (data_dir / task / "task.json").is_file():
                echo(f"writing toy task {task} into {data_dir / task}")
            prepare_task(task, data_dir, BenchmarkSettings())


def to_run(runs: list[SweepRun], status: SweepStatus, retry_failed: bool) -> list[SweepRun]:
    """The runs an execution starts: not done, not running, failed only when retried."""
    states = {r.name: r.state for r in status.runs}
    wanted = ("queued", "interrupted", *(("failed",) if retry_failed else ()))
    return [run for run in runs if states[run.name] in wanted]


class Progress:
    """The sweep's status, redrawn live on a terminal, else a line when the counts change."""

    def __init__(self, names: list[str], out: Path, slots: int, live: bool, echo: Echo) -> None:
        self.names, self.out, self.slots, self.echo = names, out, slots, echo
        self.last = 0.0
        self.counts: tuple[int, ...] = ()
        self.live = None
        if live:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(), auto_refresh=False)
            self.live.start()

    def status(self) -> SweepStatus:
        return sweep_status_of(self.out, self.names, self.slots)

    def __call__(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last < 1.0:
            return
        self.last = time.monotonic()
        status = self.status()
        if self.live is not None:
            from rich.text import Text

            text = Text(status_text(status), no_wrap=True, overflow="ellipsis")
            self.live.update(text, refresh=True)
            return
        counts = tuple(status.count(s) for s in ("queued", "running", "done", "failed"))
        if counts != self.counts:
            self.counts = counts
            self.echo(status_text(status).splitlines()[-1] + _counts_line(status))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _counts_line(status: SweepStatus) -> str:
    return (
        f" ({status.count('running')} running, {status.count('queued')} queued, "
        f"{status.count('interrupted')} interrupted, {status.count('failed')} failed)"
    )


def run_sweep(
    spec: SweepSpec, options: SweepOptions | None = None, echo: Echo = _echo
) -> SweepStatus:
    """Run (or with ``dry_run`` only print) a sweep; returns the runs' states at the end."""
    options = options or SweepOptions()
    out = Path(options.out) if options.out is not None else default_out(spec)
    runs = expand(spec, out)
    name = options.executor or spec.executor
    if name not in ("local", "slurm"):
        raise ReprogramError(f"unknown executor '{name}' (known: local, slurm)")
    settings = make_settings(name, spec.executors.get(name, {}), f"{spec.where.file}: ")
    settings = settings_with(name, settings, **options.settings)
    executor = get_executor(name, settings, out, options.wait)
    echo(expansion_text(runs, out))
    status = sweep_status_of(out, [r.name for r in runs], executor.slots)
    if options.dry_run:
        return status
    executor.check()  # before anything is written
    check_inputs(spec)
    check_reusable_runs(runs, out)
    prepare_datasets(spec, out, echo)
    todo = to_run(runs, status, options.retry_failed)
    skipped = status.count("failed") if not options.retry_failed else 0
    echo(
        f"{status.count('done')} done, {status.count('running')} running elsewhere, "
        f"{len(todo)} to run on {name}"
        + (f", {skipped} failed left alone (--retry-failed retries them)" if skipped else "")
    )
    runtime = {"quiet": False, **({"device": options.device} if options.device else {})}
    live = sys.stdout.isatty() if options.live is None else options.live
    progress = Progress([r.name for r in runs], out, executor.slots, live, echo)
    try:
        executor.execute(todo, out, options.retry_failed, runtime, progress)
    finally:
        progress.close()
    final = progress.status()
    echo(status_text(final))
    return final
