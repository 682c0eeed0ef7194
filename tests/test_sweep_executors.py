"""Executor settings: from the spec, then the command line; what each executor makes of them."""

from __future__ import annotations

import pytest

from reprogram.errors import ReprogramError
from reprogram.sweep.executors import LocalSettings, make_settings, settings_with
from reprogram.sweep.local import LocalExecutor


def test_command_line_settings_override_the_spec_and_are_checked():
    spec = make_settings("slurm", {"partition": "gpu", "time": "2:00:00", "mem": "16G"})
    settings = settings_with("slurm", spec, time="45", qos="high", account=None)
    assert (settings.partition, settings.time, settings.qos, settings.mem) == (
        "gpu", 45, "high", "16G"
    )  # fmt: skip
    assert make_settings("slurm", {"time": "1-00:30:00"}).time == 24 * 60 + 30
    with pytest.raises(ReprogramError, match="command line: slurm.cpus_per_task: expected a whole"):
        settings_with("slurm", spec, cpus_per_task="many")
    local = settings_with("local", LocalSettings(), gpus="0,2", workers="3")
    assert (local.gpus, local.workers) == ([0, 2], 3)


def test_local_workers_get_their_gpu_and_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    executor = LocalExecutor(LocalSettings(gpus=[0, 2]))
    assert executor.slots == 2 and executor.threads() == 8
    assert executor._env(1) == {
        "OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8", "CUDA_VISIBLE_DEVICES": "2"
    }  # fmt: skip
    cpu = LocalExecutor(LocalSettings(workers=3))
    assert cpu.slots == 3 and cpu.threads() == 5 and "CUDA_VISIBLE_DEVICES" not in cpu._env(0)
    assert LocalExecutor(LocalSettings(workers=4, threads=1)).threads() == 1
    import torch

    if torch.cuda.device_count() < 3:
        with pytest.raises(ReprogramError, match=r"local.gpus: GPU (0, )?2 not on this machine"):
            executor.check()


def test_slurm_settings_become_the_job_arrays_sbatch_options(tmp_path):
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    from reprogram.sweep.slurm import SlurmExecutor

    settings = make_settings(
        "slurm",
        {"partition": "gpu", "time": 90, "gpus_per_task": 1, "cpus_per_task": 8, "mem": "32G",
         "account": "lab", "qos": "normal", "setup": ["module load cuda"],
         "additional": {"constraint": "a100"}},
    )  # fmt: skip
    parameters = SlurmExecutor(settings, tmp_path).parameters()
    # an array of 5 tasks: min(5, array_parallelism) at once
    text = _make_sbatch_string(command="python -c 1", folder=tmp_path, map_count=5, **parameters)
    for line in (
        "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --account=lab",
        "#SBATCH --qos=normal", "#SBATCH --constraint=a100", "#SBATCH --array=0-4%5",
        "module load cuda",
    ):  # fmt: skip
        assert line in text.splitlines(), line
    bare = SlurmExecutor(make_settings("slurm", {}), tmp_path).parameters()
    assert set(bare) == {"job_name", "time", "cpus_per_task", "array_parallelism"}


def test_a_run_recorded_on_another_node_runs_while_its_slurm_job_does(tmp_path):
    import json

    from reprogram.sweep.state import run_status

    run = tmp_path / "d/m/b/4-shot/default/seed-1"
    run.mkdir(parents=True)
    record = {"state": "running", "host": "node-17", "pid": 1, "slurm_job": "99_1"}
    (run / "sweep.json").write_text(json.dumps(record))
    name = "d/m/b/4-shot/default/seed-1"
    assert run_status(tmp_path, name, lambda: {"99_0", "99_1"}).state == "running"
    assert run_status(tmp_path, name, lambda: {"99_0"}).state == "interrupted"  # node died
    assert run_status(tmp_path, name, lambda: None).state == "running"  # no squeue: trusted
    (run / "sweep.json").write_text(json.dumps({**record, "slurm_job": None}))
    assert run_status(tmp_path, name, lambda: set()).state == "running"  # not a Slurm run
