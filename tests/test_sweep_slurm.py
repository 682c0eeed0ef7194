"""The Slurm executor on a real (single-node) cluster: `scripts/slurm-local.sh start`.

A job array of the tiny sweep; one task killed with scancel mid-run, one preempted (the signal
submitit requeues on); a rerun ends with the run folders of a sweep made without interruption.
Skips with the reason where no cluster answers."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from helpers import cli
from sweep_helpers import assert_same_sweep, make_reference, tiny_spec, write_spec


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


def _mid_run(out, names) -> bool:
    """Whether one of ``names`` has trained an epoch and not finished."""
    for name in names:
        run = out / name
        metrics = run / "metrics.jsonl"
        if not (run / "results.json").exists() and metrics.is_file() and metrics.read_text():
            return True
    return False


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

    data, runs = make_reference(tmp_path)
    names = [r.name for r in runs]
    out = tmp_path / "out"
    path = write_spec(tmp_path / "s.yaml", tiny_spec(data, out))
    assert cli("sweep", str(path), "--executor", "slurm", "--detach") == 0
    [record] = json.loads((out / ".sweep" / "slurm" / "jobs.json").read_text())
    (killed, killed_runs), (preempted, preempted_runs) = record["tasks"].items()
    assert sorted(killed_runs + preempted_runs) == sorted(names)  # 2 tasks of 4 runs

    _wait(lambda: _mid_run(out, killed_runs) and _mid_run(out, preempted_runs), "both tasks")
    seen = _totals(path, capsys)
    assert seen["running"] == 2 and seen["queued"] + seen["done"] == 6
    subprocess.run(["scancel", "--signal=KILL", killed], check=True)
    subprocess.run(["scancel", "--signal=USR2", preempted], check=True)  # submitit requeues
    _wait(lambda: not array_running(record["array"]), "the job array to end")

    states = _totals(path, capsys)
    assert states["failed"] == 0 and states["running"] == 0
    assert states["interrupted"] >= 1  # the killed task's run, resumed by the rerun below
    assert states["done"] >= 4 and states["done"] < 8  # the preempted task finished after requeue
    requeued = [json.loads((out / n / "sweep.json").read_text()) for n in preempted_runs]
    assert max(s["attempts"] for s in requeued) == 2

    assert cli("sweep", str(path), "--executor", "slurm") == 0  # waits for its jobs
    assert _totals(path, capsys)["done"] == 8
    assert_same_sweep(out, tmp_path / "reference", names)
