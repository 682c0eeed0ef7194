"""Each run's state, read from its folder; the sweep's status table with an ETA.

A run folder holds what the engine writes (``config.yaml``, ``metrics.jsonl``, ``checkpoint.pt``,
``results.json``) and, from a sweep, ``sweep.json``: the last attempt's state (running, failed),
where it ran (host, pid, Slurm job) and, for a failed run, its last error line. It is written
atomically by the process that runs the run. The state:

- ``done``: ``results.json`` is there;
- ``failed``: the last attempt ended with an error (rerun with ``--retry-failed``);
- ``running``: an attempt is running (on this host: its process is alive; in a Slurm job: the
  job is still in ``squeue``);
- ``interrupted``: started but stopped (killed, cancelled, preempted): a rerun resumes it from
  its checkpoint;
- ``queued``: not started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprogram.engine.checkpoint import CHECKPOINT, METRICS, RESULTS
from reprogram.storage.files import atomic_write_json, pid_alive

STATUS = "sweep.json"
STATES = ("queued", "running", "interrupted", "done", "failed")


@dataclass
class RunStatus:
    name: str
    state: str
    error: str = ""  # a failed run's last error line
    seconds: float | None = None  # a finished run's wall time
    epoch: int = 0  # epochs recorded so far
    where: str = ""  # host/pid or Slurm job of the attempt


def write_status(run_dir: Path, state: str, **fields: Any) -> None:
    """Record an attempt's state in ``run_dir/sweep.json`` (atomically)."""
    previous = read_status(run_dir)
    record = {
        "state": state,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": _slurm_job(),
        "time": time.time(),
        "attempts": previous.get("attempts", 0) + (state == "running"),
        "started": previous.get("started") if state != "running" else time.time(),
        **fields,
    }
    atomic_write_json(run_dir / STATUS, record)


def _slurm_job() -> str | None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        return f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's ``sweep.json`` (empty when there is none, or it is damaged)."""
    try:
        data = json.loads((run_dir / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _epochs(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / METRICS).read_text().splitlines() if line.strip())
    except OSError:
        return 0


def slurm_jobs() -> set[str] | None:
    """The Slurm jobs pending or running (array tasks as ``JOB_TASK``), or ``None`` where
    ``squeue`` does not answer."""
    if shutil.which("squeue") is None:
        return None
    try:
        found = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(found.stdout.split()) if found.returncode == 0 else None


def _attempt_alive(status: dict[str, Any], jobs: Callable[[], set[str] | None]) -> bool:
    """Whether the recorded attempt still runs: on this host, its process is alive; in a Slurm
    job, the job is still queued or running; elsewhere, the record is trusted."""
    if status.get("host") == socket.gethostname():
        pid = status.get("pid")
        return isinstance(pid, int) and pid_alive(pid)
    queued = jobs() if status.get("slurm_job") else None
    return queued is None or status["slurm_job"] in queued


def run_status(out: Path, name: str, jobs: Callable[[], set[str] | None] = slurm_jobs) -> RunStatus:
    """The state of run ``name`` under the sweep output ``out`` (see the module); ``jobs``
    gives the Slurm jobs alive, asked only for a run recorded on another host."""
    run_dir = out / name
    status = read_status(run_dir)
    where = status.get("slurm_job") or f"{status.get('host', '?')}:{status.get('pid', '?')}"
    if (run_dir / RESULTS).is_file():
        try:
            seconds = float(json.loads((run_dir / RESULTS).read_text())["wall_time_s"])
        except (OSError, ValueError, KeyError, TypeError):
            seconds = None
        return RunStatus(name, "done", seconds=seconds, epoch=_epochs(run_dir))
    if status.get("state") == "failed":
        return RunStatus(name, "failed", error=status.get("error", ""), where=where)
    if status.get("state") == "running" and _attempt_alive(status, jobs):
        return RunStatus(name, "running", epoch=_epochs(run_dir), where=where)
    if status or (run_dir / CHECKPOINT).is_file():
        return RunStatus(name, "interrupted", epoch=_epochs(run_dir), where=where)
    return RunStatus(name, "queued")


@dataclass
class SweepStatus:
    out: Path
    runs: list[RunStatus]
    slots: int = 1  # runs that execute at once (for the ETA)

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.runs)

    @property
    def finished(self) -> bool:
        return all(r.state in ("done", "failed") for r in self.runs)

    def eta_s(self) -> float | None:
        """Seconds left: the mean time of the finished runs × the runs left (a running one counts
        half) / the runs that execute at once."""
        times = [r.seconds for r in self.runs if r.state == "done" and r.seconds is not None]
        waiting = sum(r.state in ("queued", "interrupted") for r in self.runs)
        running = self.count("running")
        if not times:
            return None
        # at once: as many as run now (a scheduler may run fewer than it was allowed)
        parallel = max(1, min(self.slots, running or self.slots, waiting + running))
        return sum(times) / len(times) * (waiting + 0.5 * running) / parallel


def sweep_status_of(out: Path, names: list[str], slots: int = 1) -> SweepStatus:
    asked: list[set[str] | None] = []

    def jobs() -> set[str] | None:  # squeue once, and only if a run needs it
        if not asked:
            asked.append(slurm_jobs())
        return asked[0]

    return SweepStatus(out, [run_status(out, name, jobs) for name in names], slots)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown until a run finishes"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def status_text(status: SweepStatus, groups: int = 40) -> str:
    """Runs by state per (dataset, method, …) group, running and failed runs, the ETA."""
    by_group: dict[str, dict[str, int]] = {}
    for run in status.runs:
        group = run.name.rpartition("/")[0]
        by_group.setdefault(group, dict.fromkeys(STATES, 0))[run.state] += 1
    width = max([len(g) for g in by_group] + [5])

    def row(label: str, values: list[Any]) -> str:
        cells = (f"{v:>{len(s)}}" for v, s in zip(values, STATES, strict=True))
        return f"{label:<{width}} " + " ".join(cells)

    lines = [row("runs", list(STATES))]
    shown = list(by_group.items())
    for group, counts in shown[:groups]:
        lines.append(row(group, [counts[s] for s in STATES]))
    if len(shown) > groups:
        lines.append(f"… and {len(shown) - groups} more groups")
    lines.append(row("total", [status.count(s) for s in STATES]))
    for run in status.runs:
        if run.state == "running":
            lines.append(f"running  {run.name}  (epoch {run.epoch}, {run.where})")
    for run in status.runs:
        if run.state == "failed":
            lines.append(f"failed   {run.name}: {run.error}")
    done = status.count("done")
    summary = f"{done}/{len(status.runs)} done"
    if not status.finished:
        summary += f", ETA {_duration(status.eta_s())}"
    lines.append(summary)
    return "\n".join(lines)
