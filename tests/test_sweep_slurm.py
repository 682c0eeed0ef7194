"""The Slurm executor on a real (single-node) cluster: `scripts/slurm-local.sh start`.

A job array of the tiny sweep; one task killed with scancel mid-run, one preempted (the signal
submitit requeues on); a rerun ends with the run folders of a sweep made without interruption.
Skips with the reason where no cluster answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli
from sweep_helpers import EPOCHS, assert_same_sweep, make_reference, tiny_spec, write_spec


def _problem() -> str:
    try:
        from reprogram.sweep.slurm import cluster_problem
    except ImportError as err:
        return f"submitit is not installed ({err})"
    return cluster_problem()


def _node_cpus() -> int:
    found = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True)
    return max((int(n) for n in found.stdout.split() if n.isdigit()), default=0)


PROBLEM = _problem()
if not PROBLEM and _node_cpus() < 2:  # the killed and the preempted task run side by side
    PROBLEM = f"the test needs a node with 2 CPUs, sinfo shows {_node_cpus()}"
needs_slurm = pytest.mark.skipif(
    bool(PROBLEM), reason=f"no Slurm cluster ({PROBLEM}): run scripts/slurm-local.sh start"
)


def test_an_unreachable_cluster_is_one_line_before_anything_is_written(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    spec = tiny_spec(tmp_path / "data", out, datasets=["toy:heldout"])
    path = write_spec(tmp_path / "s.yaml", spec)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch, no sinfo
    assert cli("sweep", str(path), "--executor", "slurm") == 2
    err = capsys.readouterr().err
    assert err == (
        "error: the slurm executor cannot reach a Slurm cluster from here (sbatch/sinfo are not "
        "on PATH): run the sweep where sbatch works, or use --executor local\n"
    )
    assert not out.exists()


def _totals(path, capsys) -> dict[str, int]:
    """The total row of ``reprogram sweep SPEC --status``."""
    capsys.readouterr()
    assert cli("sweep", str(path), "--status") == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("total"))
    states = ("queued", "running", "interrupted", "done", "failed")
    return dict(zip(states, map(int, row.split()[1:]), strict=True))


def _mid_run(out, names) -> str:
    """The one of ``names`` that is running with an epoch trained and one still to train."""
    from reprogram.sweep.state import read_status

    for name in names:
        run = out / name
        metrics = run / "metrics.jsonl"
        epochs = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
        running = read_status(run).get("state") == "running"
        if running and 0 < epochs < EPOCHS and not (run / "results.json").exists():
            return name
    return ""


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` (on this host: the local cluster's node) is stopped or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("T", "t", "Z", "X")


def _hold(out, tasks: dict[str, list[str]], seconds: float = 240.0) -> dict[str, tuple[str, int]]:
    """Suspend (``scontrol suspend``) each array task while one of its runs is mid-run:
    ``{task: (run, pid)}``. A run seen mid-run may finish before the task stops; the task is
    then resumed and caught again, so no timing of the runs matters."""
    held: dict[str, tuple[str, int]] = {}
    deadline = time.time() + seconds
    while len(held) < len(tasks):
        if time.time() > deadline:
            pytest.fail(f"timed out catching tasks mid-run (held: {held})")
        for task, names in tasks.items():
            name = "" if task in held else _mid_run(out, names)
            if not name:
                continue
            subprocess.run(["scontrol", "suspend", task], check=True)
            status = json.loads((out / name / "sweep.json").read_text())
            assert status["host"] == socket.gethostname()  # the local cluster: its node is here
            stop = time.time() + 30
            while not _stopped(status["pid"]) and time.time() < stop:
                time.sleep(0.05)
            if _stopped(status["pid"]) and _mid_run(out, [name]) == name:
                held[task] = (name, status["pid"])
            else:  # finished that run before the stop: catch it at the next one
                subprocess.run(["scontrol", "resume", task], check=True)
        time.sleep(0.1)
    return held


def _wait(condition, what: str, seconds: float = 240.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@needs_slurm
@pytest.mark.slow
def test_a_job_array_killed_and_preempted_then_rerun_equals_a_straight_sweep(tmp_path, capsys):
    from reprogram.sweep.slurm import array_running
    from reprogram.sweep.state import read_status

    data, runs = make_reference(tmp_path)
    names = [r.name for r in runs]
    out = tmp_path / "out"
    path = write_spec(tmp_path / "s.yaml", tiny_spec(data, out))
    assert cli("sweep", str(path), "--executor", "slurm", "--detach") == 0
    [record] = json.loads((out / ".sweep" / "slurm" / "jobs.json").read_text())
    (killed, killed_runs), (preempted, preempted_runs) = record["tasks"].items()
    assert sorted(killed_runs + preempted_runs) == sorted(names)  # 2 tasks of 4 runs

    # Runs take about a second: each task is held (suspended) mid-run, then killed/preempted.
    held = _hold(out, record["tasks"])
    seen = _totals(path, capsys)  # a suspended task is still in squeue: its run is running
    assert seen["running"] == 2 and seen["queued"] + seen["done"] == 6
    # scancel of a running task sends SIGTERM (which submitit ignores) and SIGKILL KillWait
    # later, time enough for these runs to finish; of a suspended task, it kills it at once.
    subprocess.run(["scancel", "--signal=KILL", killed], check=True)
    # Slurm signals no suspended job: Slurm's preemption signal goes to the task's process
    # here (as Slurm would deliver it), handled when the task resumes: submitit requeues it.
    os.kill(held[preempted][1], signal.SIGUSR2)
    subprocess.run(["scontrol", "resume", preempted], check=True)
    _wait(lambda: not array_running(record["array"]), "the job array to end")

    states = _totals(path, capsys)
    killed_run = held[killed][0]
    finished_before = killed_runs.index(killed_run)
    assert states == {
        "queued": len(killed_runs) - finished_before - 1,
        "running": 0,
        "interrupted": 1,  # the killed run, resumed by the rerun below
        "done": len(preempted_runs) + finished_before,  # the preempted task after its requeue
        "failed": 0,
    }
    attempts = {n: read_status(out / n).get("attempts", 0) for n in names}
    assert attempts[held[preempted][0]] == 2  # preempted mid-run, resumed by the requeued task
    started = [1] * (finished_before + 1)  # then none: the killed task's runs after the kill
    assert [attempts[n] for n in killed_runs] == started + [0] * states["queued"]

    assert cli("sweep", str(path), "--executor", "slurm") == 0  # waits for its jobs
    assert _totals(path, capsys)["done"] == 8
    assert_same_sweep(out, tmp_path / "reference", names)
