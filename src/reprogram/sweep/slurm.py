"""The Slurm executor: a job array through submitit, several runs per array task if asked.

Each array task runs its runs in turn (:func:`~reprogram.sweep.worker.run_many`), each resumed
from its own checkpoint. A task that Slurm preempts or times out is requeued by submitit (its
``checkpoint`` hands back the same task: finished runs are skipped, the interrupted one resumes);
a task cancelled with ``scancel`` is not, and rerunning the sweep picks its runs up. (``scancel``,
``--signal=KILL`` too, sends SIGTERM, which submitit ignores, and SIGKILL Slurm's ``KillWait``
later: until then the task goes on, and may finish runs; the run it is killed in is left
``interrupted``.) The array's logs go to ``OUT/.sweep/slurm/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from reprogram.errors import ReprogramError
from reprogram.storage.files import atomic_write_json
from reprogram.sweep.executors import SlurmSettings
from reprogram.sweep.expand import SweepRun

POLL_S = 2.0


class SweepTask(submitit.helpers.Checkpointable):
    """One array task: its runs in turn. On preemption or timeout submitit requeues it as is."""

    def __call__(
        self, out: str, runs: list[SweepRun], retry_failed: bool, runtime: dict[str, Any]
    ) -> list[str]:
        import torch

        from reprogram.sweep.worker import run_many

        _mark_preemption()
        torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
        return [o.state for o in run_many(runs, Path(out), retry_failed, runtime)]


def _mark_preemption() -> None:
    """Before submitit's handler of its preemption/timeout signal (USR2) checkpoints and
    requeues this task, flag the running run as interrupted rather than failed."""
    from reprogram.sweep.worker import STOPPING

    number = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
    handler = signal.getsignal(number)

    def flagged(signum, frame) -> None:
        STOPPING.set()
        if callable(handler):
            handler(signum, frame)

    signal.signal(number, flagged)


def _command(args: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def cluster_problem(partition: str = "") -> str:
    """Why no Slurm cluster is reachable from here (``""``: one is, with ``partition``)."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "sbatch/sinfo are not on PATH"
    try:
        found = _command(["sinfo", "-h", "-o", "%R"])
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo: {err}"
    if found.returncode != 0:
        lines = (found.stderr or found.stdout).strip().splitlines()
        return f"sinfo: {lines[-1] if lines else f'exit code {found.returncode}'}"
    partitions = found.stdout.split()
    if partition and partition not in partitions:
        return f"no partition '{partition}' (sinfo lists: {', '.join(partitions) or 'none'})"
    return ""


def array_running(job_id: str) -> bool:
    """Whether any task of the array ``job_id`` is still pending or running."""
    try:
        found = _command(["squeue", "-h", "-j", job_id, "-o", "%i"])
    except (OSError, subprocess.TimeoutExpired):
        return True
    if found.returncode != 0:  # a finished job is no longer known to squeue
        return False
    return bool(found.stdout.strip())


class SlurmExecutor:
    name = "slurm"

    def __init__(self, settings: SlurmSettings, out: Path, wait: bool = True) -> None:
        self.settings = settings
        self.out = Path(out)
        self.wait = wait
        self.jobs: list[str] = []

    @property
    def slots(self) -> int:
        return self.settings.array_parallelism

    def check(self) -> None:
        problem = cluster_problem(self.settings.partition)
        if problem:
            raise ReprogramError(
                f"the slurm executor cannot reach a Slurm cluster from here ({problem}): "
                "run the sweep where sbatch works, or use --executor local"
            )
        if self.settings.runs_per_task < 1:
            raise ReprogramError("slurm.runs_per_task must be at least 1")

    def parameters(self) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters for these settings."""
        s = self.settings
        given = {
            "partition": s.partition,
            "mem": s.mem,
            "account": s.account,
            "qos": s.qos,
            "gpus_per_node": s.gpus_per_task,
            "setup": s.setup,
            "additional_parameters": s.additional,
        }
        return {
            "job_name": "reprogram-sweep",
            "time": s.time,
            "cpus_per_task": s.cpus_per_task,
            "array_parallelism": s.array_parallelism,
            **{k: v for k, v in given.items() if v},
        }

    def execute(
        self,
        runs: list[SweepRun],
        out: Path,
        retry_failed: bool,
        runtime: dict[str, Any],
        progress: Callable[[], None],
    ) -> None:
        if not runs:
            return
        folder = Path(out) / ".sweep" / "slurm"
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(**self.parameters())
        size = self.settings.runs_per_task
        chunks = [runs[i : i + size] for i in range(0, len(runs), size)]
        count = len(chunks)
        jobs = executor.map_array(
            SweepTask(), [str(out)] * count, chunks, [retry_failed] * count, [runtime] * count
        )
        array = jobs[0].job_id.split("_")[0]
        self.jobs.append(array)
        record = folder / "jobs.json"
        known = json.loads(record.read_text()) if record.is_file() else []
        known.append(
            {
                "array": array,
                "submitted": time.time(),
                "tasks": {j.job_id: [r.name for r in c] for j, c in zip(jobs, chunks, strict=True)},
            }
        )
        atomic_write_json(record, known)
        print(f"submitted Slurm job array {array}: {count} tasks of up to {size} runs")
        if not self.wait:
            return
        while array_running(array):
            progress()
            time.sleep(POLL_S)
        progress()
