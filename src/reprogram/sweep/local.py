"""The local executor: worker processes on this machine, each taking the next run from a queue.

With ``gpus`` there is one worker per GPU, which sees only its own (``CUDA_VISIBLE_DEVICES``), so
one run per GPU at a time. Without, ``workers`` processes share the CPU cores: each uses
``threads`` torch threads (default: the cores divided among the workers). Workers are separate
processes (spawned, never forked), so a crash ends one run: a worker that dies is replaced and
its run recorded as failed. ``workers: 0`` runs them one after another in the calling process.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError
from reprogram.sweep.executors import LocalSettings
from reprogram.sweep.expand import SweepRun
from reprogram.sweep.state import write_status


def _worker(
    env: dict[str, str],
    threads: int,
    tasks: Any,
    events: Any,
    out: Path,
    retry_failed: bool,
    runtime: dict[str, Any],
) -> None:
    """A worker process: its GPU and threads, then runs from ``tasks`` until ``None``."""
    os.environ.update(env)
    _exit_with(os.getppid())
    import torch

    torch.set_num_threads(threads)
    from reprogram.sweep.worker import run_one

    while True:
        run = tasks.get()
        if run is None:
            return
        events.put(("start", run.name, os.getpid()))
        outcome = run_one(run, out, retry_failed, runtime)
        events.put(("end", run.name, outcome.state))


def _exit_with(parent: int) -> None:
    """End this worker when the sweep that started it is gone (killed, however): its run stays
    interrupted and resumes at the next start, instead of a worker left training alone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


class LocalExecutor:
    name = "local"

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings

    @property
    def in_process(self) -> bool:
        """``workers: 0``: the runs one after another in this process (no worker processes)."""
        return self.settings.workers == 0 and not self.settings.gpus

    @property
    def slots(self) -> int:
        return len(self.settings.gpus) or max(1, self.settings.workers)

    def threads(self) -> int:
        return self.settings.threads or max(1, (os.cpu_count() or 1) // self.slots)

    def check(self) -> None:
        if self.settings.workers < 0:
            raise ReprogramError(f"local.workers must be 0 or more, got {self.settings.workers}")
        if len(set(self.settings.gpus)) < len(self.settings.gpus):
            raise ReprogramError(f"local.gpus: a GPU is given twice ({self.settings.gpus})")
        if self.settings.gpus:
            import torch

            count = torch.cuda.device_count()
            missing = [g for g in self.settings.gpus if not 0 <= g < count]
            if missing:
                shown = ", ".join(map(str, missing))
                raise ReprogramError(
                    f"local.gpus: GPU {shown} not on this machine ({count} GPUs visible)"
                )

    def _env(self, slot: int) -> dict[str, str]:
        threads = str(self.threads())
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if self.settings.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.settings.gpus[slot])
        return env

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
        if self.in_process:
            from reprogram.sweep.worker import run_one

            for run in runs:
                run_one(run, out, retry_failed, runtime)
                progress()
            return
        context = multiprocessing.get_context("spawn")
        tasks, events = context.Queue(), context.Queue()
        for run in runs:
            tasks.put(run)
        slots = min(self.slots, len(runs))
        for _ in range(slots):
            tasks.put(None)
        args = (self.threads(), tasks, events, out, retry_failed, runtime)

        def start(slot: int):
            process = context.Process(target=_worker, args=(self._env(slot), *args), daemon=True)
            process.start()
            return process

        workers = {slot: start(slot) for slot in range(slots)}
        replacements = len(runs)  # a worker that cannot even start is not replaced forever
        current: dict[int, str] = {}  # pid -> the run it works on
        try:
            while workers:
                try:
                    kind, name, value = events.get(timeout=1.0)
                    if kind == "start":
                        current[value] = name
                    else:
                        current = {p: n for p, n in current.items() if n != name}
                    progress()
                    continue
                except queue.Empty:
                    pass
                for slot, process in list(workers.items()):
                    if process.is_alive():
                        continue
                    process.join()
                    del workers[slot]
                    lost = current.pop(process.pid, None)
                    if lost is not None:  # it died in a run: record it
                        error = f"the worker process died (exit code {process.exitcode})"
                        write_status(out / lost, "failed", error=error)
                    if process.exitcode != 0 and replacements > 0:  # its end mark is queued
                        replacements -= 1
                        workers[slot] = start(slot)
                progress()
        finally:
            for process in workers.values():
                if process.is_alive():
                    process.terminate()
                process.join()
