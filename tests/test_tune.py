"""Tuning: the engine's per-epoch hook and its test-split guard, the tuning spec's checks, lost
trials, and a whole search (2 workers on one study, pruning on) that never reads the test split,
resumes without redoing trials and ends with the best configuration's multi-seed test table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import cli, make_folder_dataset, quick_config

from reprogram.engine.train import StopRun, fit
from reprogram.errors import ReprogramError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("tune") / "data")


@pytest.fixture
def broken_test_split(dataset: Path):
    """The test split's images replaced by bytes no reader decodes: any run that reads the test
    split fails. Yields the function that puts them back (called at the end in any case)."""
    files = sorted((dataset / "test").rglob("*.png"))
    saved = {path: path.read_bytes() for path in files}
    for path in files:
        path.write_bytes(b"not an image")

    def restore() -> None:
        for path, data in saved.items():
            path.write_bytes(data)

    yield restore
    restore()


# --- the engine: on_epoch / StopRun, skip_test -----------------------------------------------


def test_on_epoch_sees_each_epoch_and_stop_run_ends_the_run_cleanly(dataset, tmp_path):
    rows = []

    def observe(row):
        rows.append(row)
        if row["epoch"] == 2:
            raise StopRun("enough")

    results = fit(quick_config(dataset, "vp", epochs=4, eval_every=1), tmp_path, on_epoch=observe)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all("val_acc" in r and r["selected_epoch"] >= 1 for r in rows)
    assert rows[1]["selected_score"] == max(r["val_acc"] for r in rows)
    assert results["stopped"] == {"epoch": 2, "reason": "enough"}
    assert json.loads((tmp_path / "results.json").read_text())["stopped"]["epoch"] == 2
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert results["test_accuracy"] is not None  # a stopped run is tested as a finished one


def test_skip_test_never_reads_the_test_split(dataset, tmp_path, broken_test_split):
    config = quick_config(dataset, "vp", epochs=1, skip_test=True)
    results = fit(config, tmp_path / "skip")
    assert results["test_accuracy"] is None and results["test_count"] == 0
    assert results["val_count"] == 9
    with pytest.raises(Exception, match="not an image|cannot identify|image"):
        fit(quick_config(dataset, "vp", epochs=1), tmp_path / "reads")  # the check can fail


def test_skip_test_refuses_selection_on_test(dataset):
    with pytest.raises(ReprogramError, match="skip_test"):
        quick_config(dataset, "vp", skip_test=True, select_on="test").validate()


# --- the spec ----------------------------------------------------------------------------------

SPEC = """\
out: {out}
methods: [vp]
datasets: [folder:{data}]
backbones: [random:tiny]
shots: 4
seeds: [1, 2]
epochs: 3
batch_size: 4
eval_every: 1
tune:
  trials: 8
  workers: 2
  heartbeat: 2
  pruner: {{name: median, startup_trials: 1, warmup_epochs: 0}}
  params:
    lr: {{low: 0.1, high: 100, log: true}}
    frame: {{low: 2, high: 8, step: 2}}
"""


def write_spec(tmp_path: Path, dataset: Path, text: str = SPEC, **replace: str) -> Path:
    text = text.format(out=tmp_path / "out", data=dataset)
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "tune.yaml"
    path.write_text(text)
    return path


def test_spec_reads_the_search(dataset, tmp_path):
    from reprogram.tune import load_tune_spec

    spec = load_tune_spec(write_spec(tmp_path, dataset))
    assert (spec.trials, spec.workers, spec.seed, spec.pruner.name) == (8, 2, 1, "median")
    lr, frame = spec.params["lr"], spec.params["frame"]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 0.1, 100.0, True)
    assert (frame.kind, frame.low, frame.high, frame.step) == ("int", 2, 8, 2)
    base = spec.base_values()
    assert (base["epochs"], base["batch_size"], base["method"], base["seed"]) == (3, 4, "vp", 1)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    frame:", "    frme:", r"tune.yaml:17: tune.params.frme: unknown key 'frme'"),
        ("    frame:", "    device:", r"tune.params.device: 'device' is an execution setting"),
        ("    frame:", "    shots:", r"tune.params.shots: 'shots' is part of the task"),
        ("    frame:", "    epochs:", r"tune.params.epochs: 'epochs' is also a fixed option"),
        ("low: 0.1, high: 100", "low: 0, high: 100", r"tune.params.lr.low: a log range"),
        ("{low: 2, high: 8, step: 2}", "{low: 2.5, high: 8}", r"frame.low: 'frame' is a whole"),
        ("{low: 2, high: 8, step: 2}", "{low: 8, high: 2}", r"low \(8\) must be below"),
        ("{low: 2, high: 8, step: 2}", "{low: 0, high: 8}", r"frame.low: frame must be at least"),
        ("{low: 2, high: 8, step: 2}", "{low: 2, hi: 8}", r"frame.hi: unknown key 'hi'"),
        ("  heartbeat: 2\n", "  heartbeet: 2\n", r"tune.yaml:13: tune.heartbeet: unknown key"),
        ("startup_trials: 1", "rungs: 1", r"tune.pruner.rungs: not a setting of the median"),
        ("name: median", "name: asha", r"tune.pruner: unknown pruner 'asha'"),
        ("methods: [vp]", "methods: [vp, ar]", r"tune.yaml:2: methods: .*one of methods"),
        ("epochs: 3", "epochs: [3, 4]", r"'epochs' is a grid axis: search it in tune.params"),
        ("eval_every: 1", "select_on: test", r"select_on must be val"),
    ],
)
def test_spec_errors_name_the_key_and_its_line(dataset, tmp_path, old, new, message):
    from reprogram.tune import load_tune_spec

    with pytest.raises(ReprogramError, match=message) as caught:
        load_tune_spec(write_spec(tmp_path, dataset, **{old: new}))
    assert "\n" not in str(caught.value)


def test_spec_choices_hyperband_and_missing_section(dataset, tmp_path):
    from reprogram.tune import WorkerJob, load_tune_spec
    from reprogram.tune.study import make_pruner

    choices = {"{low: 2, high: 8, step: 2}": "[2, 6]"}
    spec = load_tune_spec(write_spec(tmp_path, dataset, **choices))
    assert spec.params["frame"].choices == (2, 6)
    hyperband = {
        "{name: median, startup_trials: 1, warmup_epochs: 0}": "{name: hyperband, min_epochs: 2}",
        "epochs: 3\n": "",
        "    frame:": "    epochs: {low: 4, high: 12}\n    frame:",
    }
    spec = load_tune_spec(write_spec(tmp_path, dataset, **hyperband))
    assert (spec.pruner.name, spec.pruner.min_epochs, spec.pruner.reduction_factor) == (
        "hyperband",
        2,
        3,
    )
    job = WorkerJob("", "", "", spec.base_values(), spec.params, 8, 1, pruner=spec.pruner)
    assert job.max_epochs == 12
    pruner = make_pruner(spec.pruner, job.max_epochs)
    assert (pruner._min_resource, pruner._max_resource) == (2, 12)
    path = tmp_path / "plain.yaml"
    path.write_text("methods: [vp]\ndatasets: [folder:x]\n")
    with pytest.raises(ReprogramError, match=r"plain.yaml: tune: missing"):
        load_tune_spec(path)


def test_slurm_not_reachable_is_one_line_before_anything_is_written(
    dataset, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    path = write_spec(tmp_path, dataset)
    assert cli("tune", str(path), "--executor", "slurm") == 2
    error = capsys.readouterr().err.strip()
    assert "cannot reach a Slurm cluster" in error and "\n" not in error
    assert cli("tune", str(path), "--executor", "pbs") == 2
    assert "unknown executor 'pbs' (known: local, slurm)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- lost trials ---------------------------------------------------------------------------------


def test_a_trial_whose_worker_died_is_failed_as_lost_and_queued_again(tmp_path):
    import optuna

    from reprogram.tune.study import counted, open_study, retire_lost, worker_record

    study = open_study(str(tmp_path / "journal.log"), "lost")  # a journal file
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    trial = study.ask()
    trial.suggest_float("lr", 1.0, 10.0)
    trial.set_user_attr("worker", {**worker_record(), "pid": dead})
    alive = study.ask()
    alive.suggest_float("lr", 1.0, 10.0)
    alive.set_user_attr("worker", worker_record())
    alive.set_user_attr("heartbeat", 1e12)  # fresh
    assert retire_lost(study, interval=30) == [trial.number]
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING] + [
        optuna.trial.TrialState.WAITING
    ]
    assert trials[2].user_attrs["retry_of"] == 0
    assert counted(trials) == 2  # the lost trial does not count; its retry does
    retry = study.ask()  # the next worker takes the retry, with the lost trial's values
    assert retry.number == 2 and retry.suggest_float("lr", 1.0, 10.0) == trials[0].params["lr"]
    assert retire_lost(study, interval=30) == []
    alive.set_user_attr("heartbeat", 0.0)  # silent for ever: gone, wherever it ran
    assert retire_lost(study, interval=30) == [alive.number]


def test_no_trial_starts_after_the_time_budget(tmp_path):
    import time

    from reprogram.tune import WorkerJob, open_study, work
    from reprogram.tune.spec import Param

    location = str(tmp_path / "journal.log")
    params = {"lr": Param("lr", "float", 1.0, 10.0)}
    job = WorkerJob(str(tmp_path), location, "late", {}, params, 5, 1, deadline=time.time() - 1)
    assert work(job) == {}
    assert open_study(location, "late").get_trials() == []


def test_pruning_stops_the_trial_run_and_tells_the_study(dataset, tmp_path):
    import optuna

    from reprogram.tune import WorkerJob
    from reprogram.tune.spec import Param
    from reprogram.tune.worker import run_trial

    pruner = optuna.pruners.ThresholdPruner(lower=2.0)  # any accuracy is below: prune at once
    study = optuna.create_study(direction="maximize", pruner=pruner)
    values = quick_config(dataset, "vp").to_dict()
    base = {"method": "vp", "dataset": values["data"]["dataset"], "backbone": "random:tiny"}
    base.update(shots=4, batch_size=4, m=5, epochs=3, eval_every=1)
    job = WorkerJob(str(tmp_path), "", "", base, {"lr": Param("lr", "float", 1.0, 10.0)}, 1, 1)
    assert run_trial(study, study.ask(), job) == "pruned"
    trial = study.get_trials()[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    results = json.loads((tmp_path / "trials" / "trial-0000" / "results.json").read_text())
    assert results["stopped"]["epoch"] == 1 and results["test_accuracy"] is None


# --- a whole search ------------------------------------------------------------------------------


@pytest.fixture
def forked_workers(monkeypatch: pytest.MonkeyPatch):
    """Worker processes forked from this one, which has its imports done (spawned ones import
    torch and open_clip again: most of a small search's time on 2 loaded cores). The workers'
    job still goes through pickle, as it does to spawned processes and Slurm tasks (a worker
    that cannot read it takes no trial)."""
    import multiprocessing
    import pickle

    real = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: real("fork"))
    from reprogram.tune import launch

    def through_pickle(job, *args):
        return work_in_process(pickle.loads(pickle.dumps(job)), *args)

    work_in_process = launch.work_in_process
    monkeypatch.setattr(launch, "work_in_process", through_pickle)


@pytest.mark.slow
def test_tune_two_workers_never_read_test_resume_and_end_with_the_seed_table(
    dataset, tmp_path, broken_test_split, forked_workers
):
    import optuna

    from reprogram.tune import TuneOptions, load_tune_spec, search

    path = write_spec(tmp_path, dataset)
    spec = load_tune_spec(path)
    study = search(spec, TuneOptions())  # 2 workers: this process and another one
    trials = study.get_trials()
    assert len(trials) == 8
    states = {t.state for t in trials}
    # a trial that read the (broken) test split would have failed
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    out = tmp_path / "out"
    logs = "".join(p.read_text() for p in (out / ".tune").glob("worker-*.log"))
    pids = {line.split()[2] for line in logs.splitlines() if " pid " in line}
    assert len(pids) == 2  # both workers took trials
    folders = sorted((out / "trials").iterdir())
    assert len(folders) == 8
    for folder in folders:
        assert json.loads((folder / "results.json").read_text())["test_accuracy"] is None

    # the test split back; rerunning resumes: no trial runs again, the best config over 2 seeds
    broken_test_split()
    assert cli("tune", str(path), "--workers", "1") == 0
    again = optuna.load_study(study_name="out", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.number for t in again.get_trials()] == list(range(8))
    assert len(list((out / "trials").iterdir())) == 8
    summary = json.loads((out / "tune.json").read_text())
    best = summary["best"]
    assert best["value"] == max(t.value for t in trials if t.state.name == "COMPLETE")
    (cell,) = summary["final"]["rows"][0]["cells"].values()
    assert cell["n"] == 2
    runs = sorted((out / "best").rglob("results.json"))
    assert [r.parent.name for r in runs] == ["seed-1", "seed-2"]
    for run in runs:
        results = json.loads(run.read_text())
        assert results["test_accuracy"] is not None and results["test_count"] == 12
        assert results["epochs"] == 3
    config = (runs[0].parent / "config.yaml").read_text()
    assert f"lr: {best['params']['lr']}" in config
    assert (out / "search.png").stat().st_size > 0 and (out / "importance.png").is_file()
    assert "## Best configuration, tested once per seed (1, 2)" in (out / "tune.md").read_text()
