"""The local executor: worker processes, the same results as one after another, restarts."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from helpers import cli, epochs_checkpointed, fork, kill_when
from sweep_helpers import assert_same_sweep, make_reference, tiny_spec, write_spec

from reprogram.engine.lock import RunLock
from reprogram.sweep import (
    SweepOptions,
    expand,
    load_spec,
    parse_spec,
    run_one,
    run_sweep,
    status_text,
    sweep_status,
)
from reprogram.sweep.state import read_status


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("sweep-reference")
    data, runs = make_reference(base)
    return data, base / "reference", [r.name for r in runs]


@pytest.mark.slow
def test_two_local_workers_give_the_sequential_results(tmp_path, reference):
    data, straight, names = reference
    out = tmp_path / "out"
    lines = []
    final = run_sweep(parse_spec(tiny_spec(data, out)), SweepOptions(live=False), lines.append)
    assert [r.state for r in final.runs] == ["done"] * 8
    assert lines[0].startswith(f"sweep into {out}: 8 runs")
    assert "0 done, 0 running elsewhere, 8 to run on local" in lines
    assert_same_sweep(out, straight, names)
    pids = {read_status(out / name)["pid"] for name in names}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
    assert lines[-1].endswith("8/8 done")


def test_a_rerun_skips_finished_runs_and_resumes_an_interrupted_one(tmp_path, reference):
    data, straight, names = reference
    out = tmp_path / "out"
    alpha = [f"folder:{data / 'alpha'}"]
    spec = parse_spec(tiny_spec(data, out, datasets=alpha, local={"workers": 0}))
    done, killed = names[0], names[2]  # alpha/vp seed 1 (finished), alpha/dvp-cse seed 1
    shutil.copytree(straight / done, out / done)
    finished = (out / done / "results.json").stat().st_mtime_ns
    [run] = [r for r in expand(spec) if r.name == killed]

    def train() -> int:
        run_one(run, out, runtime={"quiet": True})
        return 0

    child = fork(train)
    kill_when(child, lambda: epochs_checkpointed(out / killed, 1))
    assert {r.name: r.state for r in sweep_status(spec).runs} == {
        names[0]: "done",
        names[1]: "queued",
        killed: "interrupted",
        names[3]: "queued",
    }

    final = run_sweep(spec, SweepOptions(live=False), lambda line: None)
    assert [r.state for r in final.runs] == ["done"] * 4
    assert (out / done / "results.json").stat().st_mtime_ns == finished  # not run again
    assert "resuming" in (out / killed / "sweep.log").read_text()
    assert read_status(out / killed)["attempts"] == 2
    assert_same_sweep(out, straight, names[:4])


def test_a_failed_run_stops_no_other_and_is_retried_only_when_asked(tmp_path, reference, capsys):
    data, straight, names = reference
    broken = tmp_path / "broken"
    shutil.copytree(data / "alpha", broken)
    (broken / "descriptions" / "cse_2.json").unlink()  # dvp-cse needs it, vp does not
    out = tmp_path / "out"
    spec = tiny_spec(data, out, datasets=[f"folder:{broken}"], seeds=[1], local={"workers": 0})
    path = write_spec(tmp_path / "s.yaml", spec)
    assert cli("sweep", str(path)) == 1  # a failed run: exit code 1, the others ran
    printed = capsys.readouterr().out
    failed = "broken/dvp-cse/random-tiny/4-shot/default/seed-1"
    status = {r.name: r for r in sweep_status(load_spec(path)).runs}
    assert status["broken/vp/random-tiny/4-shot/default/seed-1"].state == "done"
    assert status[failed].state == "failed"
    error = status[failed].error
    assert "cse_2" in error and "\n" not in error
    assert f"failed   {failed}: {error}" in printed
    assert "Traceback" in (out / failed / "sweep.log").read_text()

    assert cli("sweep", str(path)) == 1  # left alone without --retry-failed
    assert "1 failed left alone (--retry-failed retries them)" in capsys.readouterr().out
    assert read_status(out / failed)["attempts"] == 1
    shutil.copy(data / "alpha" / "descriptions" / "cse_2.json", broken / "descriptions")
    assert cli("sweep", str(path), "--retry-failed") == 0
    assert cli("sweep", str(path), "--status") == 0
    assert capsys.readouterr().out.rstrip().endswith("2/2 done")
    assert read_status(out / failed)["attempts"] == 2


def test_a_run_another_process_holds_is_left_to_it(tmp_path, reference):
    data, _, names = reference
    out = tmp_path / "out"
    [run, *_] = expand(parse_spec(tiny_spec(data, out)))
    with RunLock(out / run.name):
        outcome = run_one(run, out)
    assert outcome.state == "busy"
    assert not (out / run.name / "sweep.json").exists()
    assert not (out / run.name / "config.yaml").exists()


def test_status_counts_states_and_estimates_the_time_left(tmp_path):
    from reprogram.sweep.state import RunStatus, SweepStatus

    states = ["done", "done", "running", "queued", "queued", "failed"]
    runs = [
        RunStatus(f"d/m/b/4-shot/default/seed-{i}", s, seconds=10.0 if s == "done" else None)
        for i, s in enumerate(states)
    ]
    runs[-1].error = "boom: it broke"
    status = SweepStatus(tmp_path, runs, slots=2)
    # two waiting + half of the running one, at one run at a time (one runs now)
    assert status.eta_s() == pytest.approx(10.0 * 2.5 / 1)
    text = status_text(status)
    assert "failed   d/m/b/4-shot/default/seed-5: boom: it broke" in text
    row = next(line for line in text.splitlines() if line.startswith("d/m/b/4-shot/default"))
    assert row.split()[1:] == ["2", "1", "0", "2", "1"]  # queued running interrupted done failed
    assert text.splitlines()[-1] == "2/6 done, ETA 25 s"


def test_workers_end_with_a_killed_sweep_and_leave_their_run_to_resume(tmp_path, reference):
    data, _, names = reference
    out = tmp_path / "out"
    spec = parse_spec(
        tiny_spec(data, out, datasets=[f"folder:{data / 'alpha'}"], seeds=[1],
                  local={"workers": 1, "threads": 1}, epochs=40)
    )  # fmt: skip

    def sweep() -> int:
        run_sweep(spec, SweepOptions(live=False), lambda line: None)
        return 0

    driver = fork(sweep)
    metrics = out / names[0] / "metrics.jsonl"

    def started() -> bool:
        return metrics.is_file() and bool(metrics.read_text())

    kill_when(driver, started, 180, 0.05, "the run ended before its sweep could be killed")
    worker = read_status(out / names[0])["pid"]
    deadline = time.time() + 30
    while time.time() < deadline and _alive(worker):
        time.sleep(0.2)
    assert not _alive(worker)
    assert sweep_status(spec).runs[0].state == "interrupted"


def _alive(pid: int) -> bool:
    from reprogram.storage.files import pid_alive

    return pid_alive(pid)
