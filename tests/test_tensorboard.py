"""--tensorboard: event files beside metrics.jsonl holding the same training curves."""

from __future__ import annotations

import json

import pytest
from helpers import cli, make_folder_dataset

from reprogram.engine.curves import FOLDER, TAGS


def test_tensorboard_events_hold_the_loss_curve(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    data = make_folder_dataset(tmp_path / "data", counts=(("train", 3), ("val", 1), ("test", 1)))
    run = tmp_path / "run"
    args = ["train", "--method", "ar", "--dataset", f"folder:{data}", "--backbone", "random:tiny"]
    extra = ["--epochs", "3", "--shots", "2", "--batch-size", "2", "--tensorboard", "-q"]
    assert cli(*args, *extra, "--out", str(run)) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = event_accumulator.EventAccumulator(str(run / FOLDER))
    events.Reload()
    loss = events.Scalars(TAGS["loss"])
    assert [e.step for e in loss] == [r["epoch"] for r in rows] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows])
    assert [e.value for e in events.Scalars(TAGS["val_acc"])] == pytest.approx(
        [r["val_acc"] for r in rows if "val_acc" in r]
    )


def test_no_event_files_by_default(tmp_path):
    data = make_folder_dataset(tmp_path / "data", counts=(("train", 2), ("val", 1), ("test", 1)))
    run = tmp_path / "run"
    args = ["train", "--method", "ar", "--dataset", f"folder:{data}", "--backbone", "random:tiny"]
    assert cli(*args, "--epochs", "1", "--shots", "2", "-q", "--out", str(run)) == 0
    assert (run / "metrics.jsonl").is_file() and not (run / FOLDER).exists()


def test_tensorboard_on_resume_is_a_runtime_setting_that_applies(tmp_path, monkeypatch, capsys):
    """``--tensorboard`` with ``--resume``, like ``--set tensorboard=true``: the resumed epochs'
    events are written, and the flag is not called ignored."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    import reprogram.engine.train as train_module

    original = train_module.train_one_epoch

    def interrupted(model, data, state, *args):
        if state.epoch == 2:
            raise KeyboardInterrupt
        return original(model, data, state, *args)

    data = make_folder_dataset(tmp_path / "data", counts=(("train", 2), ("val", 1), ("test", 1)))
    run = tmp_path / "run"
    args = ["train", "--method", "ar", "--dataset", f"folder:{data}", "--backbone", "random:tiny"]
    args += ["--epochs", "3", "--shots", "2", "-q", "--out", str(run)]
    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    assert cli(*args) == 130
    monkeypatch.setattr(train_module, "train_one_epoch", original)
    assert not (run / FOLDER).exists()
    capsys.readouterr()
    assert cli("train", "--resume", "--tensorboard", "-q", "--out", str(run)) == 0
    assert "ignored" not in capsys.readouterr().err
    events = event_accumulator.EventAccumulator(str(run / FOLDER))
    events.Reload()
    assert [e.step for e in events.Scalars(TAGS["loss"])] == [3]
