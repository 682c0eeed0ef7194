"""Running a sweep's runs where an executor placed them: one run, or several in turn.

A run is trained by the engine's :func:`~reprogram.engine.train.fit` into its folder: finished
runs are skipped, interrupted ones resumed from their checkpoint, failed ones retried only when
asked; a run whose folder another process holds (the run lock) is left to it. An error ends that
run only: its last line goes into the run's ``sweep.json``, the traceback into ``sweep.log``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprogram.engine.checkpoint import CHECKPOINT, RESULTS
from reprogram.engine.lock import RunInUse, RunLock
from reprogram.sweep.expand import SweepRun
from reprogram.sweep.state import read_status, write_status

LOG = "sweep.log"
# Set when the scheduler takes this process's task away (preemption, time limit): whatever the
# running run then raises is an interruption (it resumes later), not the run's failure.
STOPPING = threading.Event()


@dataclass(frozen=True)
class Outcome:
    name: str
    state: str  # done | failed | skipped-done | skipped-failed | busy | interrupted
    error: str = ""
    seconds: float = 0.0


def last_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[-1] if text else ""
    from reprogram.errors import ReprogramError

    return line if isinstance(err, ReprogramError) else f"{type(err).__name__}: {line}".rstrip(": ")


def run_one(
    run: SweepRun, out: Path, retry_failed: bool = False, runtime: dict[str, Any] | None = None
) -> Outcome:
    """Train ``run`` into ``out/run.name`` unless it is done, failed (without
    ``retry_failed``) or held by another process. Never raises for the run's own errors."""
    from reprogram.engine.train import fit

    run_dir = Path(out) / run.name
    if (run_dir / RESULTS).is_file():
        return Outcome(run.name, "skipped-done")
    if read_status(run_dir).get("state") == "failed" and not retry_failed:
        return Outcome(run.name, "skipped-failed")
    try:
        with RunLock(run_dir):  # held by another process: left to it
            write_status(run_dir, "running")
    except RunInUse:
        return Outcome(run.name, "busy")
    started = time.perf_counter()
    try:
        with _output_to(run_dir / LOG):
            print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {run.name}")
            resume = (run_dir / CHECKPOINT).is_file()
            fit(run.config(**(runtime or {})), run_dir, resume=resume)
    except RunInUse:  # taken between our check and the run's own lock
        return Outcome(run.name, "busy")
    except BaseException as err:
        if STOPPING.is_set() or isinstance(err, (KeyboardInterrupt, SystemExit)):
            write_status(run_dir, "interrupted", error=last_line(err) or type(err).__name__)
            raise
        line = last_line(err)  # this run's failure, never the others'
        with contextlib.suppress(OSError), open(run_dir / LOG, "a", encoding="utf-8") as log:
            traceback.print_exc(file=log)
        write_status(run_dir, "failed", error=line)
        return Outcome(run.name, "failed", line, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    write_status(run_dir, "done", seconds=seconds)
    return Outcome(run.name, "done", seconds=seconds)


def run_many(
    runs: list[SweepRun],
    out: Path,
    retry_failed: bool = False,
    runtime: dict[str, Any] | None = None,
) -> list[Outcome]:
    """The runs one after the other in this process (a Slurm array task, a local worker)."""
    return [run_one(run, out, retry_failed, runtime) for run in runs]


@contextlib.contextmanager
def _output_to(path: Path):
    """The run's printed output (its epoch lines, warnings) appended to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        try:
            yield
        finally:
            sys.stdout.flush()
