"""What a run did that the user should know: printed by `train` and kept in results.json; bad
test images fail before training; classes without test images have no accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import CLASSES, cli, make_folder_dataset, sentences

from reprogram.engine.evaluate import summarise


@pytest.fixture()
def dataset(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "data", counts=(("train", 3), ("val", 1), ("test", 2)))


def train(dataset: Path, out: Path, method: str, *extra: str) -> int:
    args = ["train", "--method", method, "--dataset", f"folder:{dataset}"]
    args += ["--backbone", "random:tiny", "--epochs", "1", "--shots", "2", "--batch-size", "4"]
    args += ["--out", str(out), "--set", "m=5", *extra]
    if method.startswith("dvp"):  # one epoch that trains, not only estimates the PRM
        args += ["--set", "prm_warmup_epochs=0"]
    return cli(*args)


def run_warnings(out: Path) -> list[str]:
    return json.loads((out / "results.json").read_text())["warnings"]


def test_clean_run_has_no_warnings(dataset, tmp_path, capsys):
    assert train(dataset, tmp_path / "run", "dvp-cse", "--quiet") == 0
    assert run_warnings(tmp_path / "run") == []
    assert "warning" not in capsys.readouterr().err


def test_description_warnings(dataset, tmp_path, capsys):
    folder = dataset / "descriptions"
    few = {name: sentences("few", name, 3 if name == CLASSES[0] else 22) for name in CLASSES}
    (folder / "few.json").write_text(json.dumps(few))
    body = ", ".join(f'"{name}": {json.dumps(sentences("dup", name))}' for name in CLASSES)
    again = json.dumps(sentences("again", CLASSES[1]))
    (folder / "dup.json").write_text("{" + body + f', "{CLASSES[1]}": {again}' + "}")
    files = [str(folder / "few.json"), str(folder / "dup.json")]
    assert train(dataset, tmp_path / "run", "attrvr", "--descriptions", *files) == 0
    warnings = run_warnings(tmp_path / "run")
    assert len(warnings) == 2
    assert "few.json" in warnings[0] and f"{CLASSES[0]} (3)" in warnings[0]
    assert "dup.json" in warnings[1] and CLASSES[1] in warnings[1]
    printed = capsys.readouterr().err.splitlines()
    assert [line for line in printed if line.startswith("warning:")] == [
        f"warning: {w}" for w in warnings
    ]


def test_one_cause_file_warns_one_prompt(dataset, tmp_path):
    one = str(dataset / "descriptions" / "cse_1.json")
    assert train(dataset, tmp_path / "run", "dvp-cse", "--quiet", "--descriptions", one) == 0
    [warning] = run_warnings(tmp_path / "run")
    assert "one prompt" in warning


def test_fewer_shots_and_a_class_left_without_images(dataset, tmp_path):
    for path in (dataset / "train" / CLASSES[2]).glob("*.png"):
        path.write_bytes(b"not a png")
    extra = ["--quiet", "--shots", "3", "--set", "skip_bad_images=true"]
    extra += ["--set", "allow_small_classes=true"]
    (dataset / "train" / CLASSES[1] / "0.png").unlink()
    assert train(dataset, tmp_path / "run", "ar", *extra) == 0
    warnings = run_warnings(tmp_path / "run")
    assert any(f"{CLASSES[1]} (2)" in w and "3 asked" in w for w in warnings)
    assert any("no usable training image" in w and CLASSES[2] in w for w in warnings)


def test_corrupt_test_image_fails_before_training(dataset, tmp_path, capsys):
    (dataset / "test" / CLASSES[0] / "1.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "run"
    assert train(dataset, out, "ar", "--quiet", "--epochs", "50") == 2
    err = capsys.readouterr().err
    assert "1.png" in err and "skip_bad_images=true" in err
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoint.pt").exists()
    assert train(dataset, out, "ar", "--quiet", "--set", "skip_bad_images=true") == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test_count"] == 5 and results["skipped_images"] == 1


def test_class_without_test_images_has_no_accuracy(dataset, tmp_path):
    labels = torch.tensor([0, 0, 1])
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert summarise(logits, labels, 3).per_class == [0.5, 1.0, None]
    for path in (dataset / "test" / CLASSES[2]).glob("*.png"):
        path.write_bytes(b"not a png")
    out = tmp_path / "run"
    assert train(dataset, out, "ar", "--quiet", "--set", "skip_bad_images=true") == 0
    results = json.loads((out / "results.json").read_text())
    assert results["per_class_accuracy"][CLASSES[2]] is None
    assert all(isinstance(results["per_class_accuracy"][c], float) for c in CLASSES[:2])


def test_warnings_survive_a_resume(dataset, tmp_path, monkeypatch):
    from helpers import quick_config

    import reprogram.engine.train as train_module
    from reprogram.engine.config import TrainConfig
    from reprogram.engine.train import fit

    original = train_module.train_one_epoch

    def interrupted(model, data, state, *args):
        if state.epoch == 1:
            raise KeyboardInterrupt
        return original(model, data, state, *args)

    one = [str(dataset / "descriptions" / "cse_1.json")]
    config = quick_config(dataset, "dvp-cse", descriptions=one, shots=2, device="cpu")
    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "run")
    monkeypatch.setattr(train_module, "train_one_epoch", original)
    resumed = fit(TrainConfig().updated(quiet=True), tmp_path / "run", resume=True)
    [warning] = resumed["warnings"]
    assert "one prompt" in warning


def _without_source_lines(err: str) -> None:
    assert "UserWarning" not in err and "Warning:" not in err and ".py:" not in err


def test_python_warnings_during_a_run_are_the_run_s_own(dataset, tmp_path, monkeypatch, capsys):
    """An unusable cache (a file where its folder should be) and Pillow's decompression-bomb
    warning: one ``warning:`` line each, kept in results.json, no source path; Python's warning
    machinery is as it was afterwards."""
    import warnings

    from PIL import Image

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("REPROGRAM_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 52 - 1)  # every image: a warning
    before = warnings.showwarning
    assert train(dataset, tmp_path / "run", "ar") == 0
    assert warnings.showwarning is before
    err = capsys.readouterr().err
    _without_source_lines(err)
    kept = run_warnings(tmp_path / "run")
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        f"warning: {w}" for w in kept
    ]
    unusable = [w for w in kept if "is unusable" in w and str(blocker) in w]
    assert {w.split(" is unusable")[0].rsplit("/", 1)[1] for w in unusable} >= {"images"}
    bombs = [w for w in kept if "decompression bomb" in w]
    assert any(w.startswith("Image size (2080 pixels) exceeds limit of 2079") for w in bombs)


def test_a_command_s_python_warnings_are_warning_lines(dataset, tmp_path, capsys):
    """Outside a run too (the checkpoint fallback when ``eval`` loads a damaged run)."""
    run = tmp_path / "run"
    assert train(dataset, run, "ar", "--quiet", "--epochs", "2") == 0
    (run / "checkpoint.pt").write_bytes(b"damaged")
    capsys.readouterr()
    assert cli("eval", "--checkpoint", str(run), "--quiet") == 0
    err = capsys.readouterr().err
    _without_source_lines(err)
    [line] = err.splitlines()
    assert line.startswith("warning: ") and "checkpoint.prev.pt" in line
