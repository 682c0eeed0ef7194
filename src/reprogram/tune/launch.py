"""Where a search's workers run: local processes, or the tasks of a Slurm job array.

``local``: ``workers`` workers on this machine, this process one of them and the others spawned
(never forked), the CPU cores divided among them; with ``gpus`` (the spec's ``local.gpus``), one
spawned worker per GPU, which sees only its own. ``slurm``: a job array of ``workers`` tasks
through submitit, with the sweep's Slurm settings (partition, time, GPUs, …); a task that Slurm
preempts or times out is requeued (its running trial is lost and queued again).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError
from reprogram.sweep.executors import SlurmSettings
from reprogram.tune.worker import WorkerJob, work, work_in_process

Progress = Callable[[], None]


class LocalWorkers:
    name = "local"

    def __init__(self, workers: int, threads: int = 0, gpus: list[int] | None = None) -> None:
        self.gpus = list(gpus or [])
        self.workers = len(self.gpus) or workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.workers)

    def check(self) -> None:
        if self.workers < 1:
            raise ReprogramError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus:
            import torch

            count = torch.cuda.device_count()
            missing = [g for g in self.gpus if not 0 <= g < count]
            if missing:
                raise ReprogramError(
                    f"local.gpus: GPU {missing[0]} is not on this machine ({count} visible)"
                )

    def _env(self, index: int) -> dict[str, str]:
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[index])
        return env

    def run(self, job: WorkerJob, progress: Progress) -> None:
        import torch

        context = multiprocessing.get_context("spawn")
        here = not self.gpus  # with GPUs every worker is spawned, seeing its own
        processes = [
            context.Process(
                target=work_in_process,
                args=(replace(job, index=i), self._env(i), self.threads),
                daemon=True,
            )
            for i in range(1 if here else 0, self.workers)
        ]
        for process in processes:
            process.start()
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            if here:
                work(replace(job, index=0), after_trial=progress)
            for process in processes:
                while process.is_alive():
                    process.join(timeout=1.0)
                    progress()
        finally:
            torch.set_num_threads(threads)
            for process in processes:
                if process.is_alive():
                    process.terminate()
                process.join()


class SlurmWorkers:
    name = "slurm"

    def __init__(self, workers: int, settings: SlurmSettings, out: Path) -> None:
        try:
            from reprogram.sweep.slurm import SlurmExecutor
        except ImportError as err:
            raise ReprogramError(
                f"--executor slurm needs submitit ({err}): pip install submitit"
            ) from None
        self.workers = workers
        self.executor = SlurmExecutor(settings, out)
        self.out = Path(out)

    def check(self) -> None:
        self.executor.check()

    def run(self, job: WorkerJob, progress: Progress) -> None:
        import submitit

        from reprogram.sweep.slurm import POLL_S, array_running

        executor = submitit.SlurmExecutor(folder=self.out / ".tune" / "slurm")
        executor.update_parameters(**{**self.executor.parameters(), "job_name": "reprogram-tune"})
        jobs = executor.map_array(TuneTask(), [replace(job, index=i) for i in range(self.workers)])
        array = jobs[0].job_id.split("_")[0]
        print(f"submitted Slurm job array {array}: {self.workers} tuning workers", flush=True)
        while array_running(array):
            progress()
            time.sleep(POLL_S)
        progress()


def _task_type():
    try:
        import submitit
    except ImportError:
        return object
    return submitit.helpers.Checkpointable


class TuneTask(_task_type()):  # type: ignore[misc]
    """One array task: a worker. On preemption or timeout submitit requeues it as is."""

    def __call__(self, job: WorkerJob) -> dict[str, int]:
        import torch

        torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
        return work(job)


def get_workers(name: str, workers: int, settings: Any, out: Path) -> LocalWorkers | SlurmWorkers:
    if name == "local":
        return LocalWorkers(workers, settings.threads, settings.gpus)
    if name == "slurm":
        return SlurmWorkers(workers, settings, out)
    raise ReprogramError(f"unknown executor '{name}' (known: local, slurm)")
