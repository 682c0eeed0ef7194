"""The engine: every method trains and evaluates; run folders; selection; resume after a kill."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    assert_same_run,
    cli,
    epochs_checkpointed,
    fork,
    kill_when,
    make_folder_dataset,
    quick_config,
)

from reprogram.engine.checkpoint import load_checkpoint
from reprogram.engine.config import load_config
from reprogram.engine.seeds import fit_seeds
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError

METHODS = ["zero-shot", "zero-shot-desc", "vp", "ar", "attrvr", "dvp-cse", "dvp-cls"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("engine") / "data")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_a_complete_run_folder(tmp_path, dataset, method):
    results = fit(quick_config(dataset, method), tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "results.json", "checkpoint.pt"):
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert 0.0 <= on_disk["test_accuracy"] <= 1.0 and 0.0 <= on_disk["val_accuracy"] <= 1.0
    assert set(on_disk["per_class_accuracy"]) == {"red disc", "green square", "blue stripes"}
    assert on_disk["test_count"] == 12 and on_disk["val_count"] == 9
    checkpoint = load_checkpoint(run)
    assert checkpoint["classnames"] == on_disk["classnames"]
    assert checkpoint["text_bank"]["texts"]
    assert yaml.safe_load((run / "config.yaml").read_text())["method"]["name"] == method
    if method.startswith("zero-shot"):
        assert on_disk["trainable_parameters"] == 0
    else:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2]
        assert {"loss", "train_acc", "lr", "images_per_s", "time_s"} <= set(rows[-1])
        assert "val_acc" in rows[-1]


def test_prompt_parameter_counts_match_the_paper_at_224():
    from reprogram.model.prompts import PromptBank

    mean, std = (0.5,) * 3, (0.5,) * 3
    assert PromptBank("watermark", 1, 224, mean, std).trainable_parameters == 69_840
    assert PromptBank("padding", 1, 224, mean, std).trainable_parameters == 39_936
    assert PromptBank("padding", 3, 224, mean, std).trainable_parameters == 119_808
    assert PromptBank("padding", 1, 224, mean, std).image_size == 192
    assert PromptBank("padding", 1, 336, mean, std).image_size == 288


@pytest.mark.numeric
def test_padding_prompt_leaves_the_image_untouched_and_frames_it():
    from reprogram.model.prompts import PromptBank

    bank = PromptBank("padding", 2, 56, (0.0,) * 3, (1.0,) * 3)
    with torch.no_grad():
        bank.theta.normal_()
    images = torch.rand(3, 3, bank.image_size, bank.image_size)
    out = bank(images)
    assert out.shape == (2, 3, 3, 56, 56)
    f = bank.frame
    torch.testing.assert_close(out[:, :, :, f:-f, f:-f], images.expand(2, -1, -1, -1, -1))
    torch.testing.assert_close(out[0, 0, :, :f, :], torch.sigmoid(bank.theta[0, :, :f, :]))


@pytest.mark.numeric
def test_evaluation_sees_every_write_to_the_prompts():
    """An edit through ``theta.data`` (which bumps no version counter) reaches the next
    evaluation forward pass, as an in-place edit and a new parameter do."""
    from reprogram.model.prompts import PromptBank

    bank = PromptBank("padding", 2, 56, (0.5,) * 3, (0.25,) * 3)
    images = torch.rand(3, 3, bank.image_size, bank.image_size)
    f = bank.frame

    def frame_of_evaluation() -> torch.Tensor:
        with torch.no_grad():
            return bank(images)[:, :, :, :f, :]

    frame_of_evaluation()
    for value, write in (
        (2.0, lambda: bank.theta.data.fill_(2.0)),
        (-1.0, lambda: bank.theta.detach().fill_(-1.0)),
        (0.5, lambda: setattr(bank, "theta", torch.nn.Parameter(torch.full_like(bank.theta, 0.5)))),
    ):
        write()
        expected = (torch.sigmoid(torch.tensor(value)) - 0.5) / 0.25
        torch.testing.assert_close(frame_of_evaluation(), torch.full((2, 3, 3, f, 56), expected))


def test_selection_uses_validation_unless_official_protocol_is_asked(tmp_path, dataset):
    ours = fit(quick_config(dataset, "ar", epochs=4, eval_every=1), tmp_path / "val")
    rows = [json.loads(x) for x in (tmp_path / "val" / "metrics.jsonl").read_text().splitlines()]
    best_val = max(r["val_acc"] for r in rows)
    assert rows[ours["selected_epoch"] - 1]["val_acc"] == best_val
    assert all(
        "test_acc" not in r for r in rows
    )  # the test split is never looked at while training
    official = fit(
        quick_config(dataset, "ar", epochs=4, eval_every=1, select_on="test"), tmp_path / "test"
    )
    rows = [json.loads(x) for x in (tmp_path / "test" / "metrics.jsonl").read_text().splitlines()]
    assert rows[official["selected_epoch"] - 1]["test_acc"] == max(r["test_acc"] for r in rows)
    assert official["select_on"] == "test"


def test_yaml_config_then_command_line_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 7\nlr: 1.5\nmethod: ar\n")
    config = load_config(path, {"lr": "2.5", "descriptions": "a.json,b.json"})
    assert (config.optim.epochs, config.optim.lr, config.method.name) == (7, 2.5, "ar")
    assert config.data.descriptions == [os.path.abspath("a.json"), os.path.abspath("b.json")]
    path.write_text("epoch: 7\n")
    with pytest.raises(ReprogramError, match="unknown config key 'epoch'"):
        load_config(path)
    with pytest.raises(ReprogramError, match="'lr'"):
        load_config(None, {"lr": "fast"})


def test_missing_descriptions_and_unknown_classes_are_clear_errors(tmp_path, dataset):
    with pytest.raises(ReprogramError, match="unknown method"):
        fit(quick_config(dataset, "dvp-xyz"), tmp_path / "a")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"red disc": ["a sentence that is long enough to keep"]}))
    with pytest.raises(
        ReprogramError,
        match="bad.json: no descriptions for 2 classes: 'blue stripes', 'green square'",
    ):
        fit(quick_config(dataset, "dvp-cls", descriptions=[str(bad)]), tmp_path / "b")


def test_a_finished_run_is_never_overwritten(tmp_path, dataset):
    fit(quick_config(dataset, "zero-shot"), tmp_path / "run")
    with pytest.raises(ReprogramError, match="already holds a finished run"):
        fit(quick_config(dataset, "zero-shot"), tmp_path / "run")
    with pytest.raises(ReprogramError, match="--resume continues .* --overwrite replaces it"):
        fit(quick_config(dataset, "zero-shot"), tmp_path / "run", resume=True, overwrite=True)
    # unless asked to: --overwrite replaces the run (the one given, seed 2 here)
    results = fit(quick_config(dataset, "zero-shot", seed=2), tmp_path / "run", overwrite=True)
    assert results["seed"] == 2
    assert json.loads((tmp_path / "run" / "results.json").read_text())["seed"] == 2


def test_seeds_draw_different_shots_and_write_a_table(tmp_path, dataset):
    table = fit_seeds(quick_config(dataset, "ar", epochs=1), [1, 2], tmp_path / "multi")
    assert (tmp_path / "multi" / "summary.md").is_file()
    cell = table["rows"][0]["cells"][f"folder:{dataset}"]
    assert cell["seeds"] == [1, 2]
    shots = [load_checkpoint(tmp_path / "multi" / f"seed-{s}")["config"]["seed"] for s in (1, 2)]
    assert shots == [1, 2]
    from reprogram.engine.setup import load_data

    first = load_data(quick_config(dataset, "ar", seed=1)).train
    second = load_data(quick_config(dataset, "ar", seed=2)).train
    assert [s.path for s in first] != [s.path for s in second]


def _train_args(dataset: Path, out: Path) -> list[str]:
    return [
        "train",
        "--method",
        "dvp-cse",
        "--dataset",
        f"folder:{dataset}",
        "--backbone",
        "random:tiny",
        "--shots",
        "6",
        "--epochs",
        "10",
        "--batch-size",
        "2",
        "--seed",
        "3",
        "--set",
        "m=5",
        "--set",
        "deterministic=true",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--quiet",
    ]


@pytest.mark.slow
def test_resume_after_a_kill_reaches_the_uninterrupted_result(tmp_path, dataset):
    """A run SIGKILLed after its second epoch (in a copy of this process forked after the
    straight run, so with everything imported), resumed here, equals the run made straight."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    assert cli(*_train_args(dataset, straight)) == 0
    child = fork(lambda: cli(*_train_args(dataset, killed)))
    kill_when(child, lambda: epochs_checkpointed(killed, 2))
    assert not (killed / "results.json").exists()
    done_before = load_checkpoint(killed)["epoch"]
    assert 0 < done_before < 10

    assert cli(*_train_args(dataset, killed), "--resume") == 0
    assert_same_run(killed, straight, epochs=10)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_select_on_test_evaluates_every_training_epoch_and_keeps_the_earliest_best(
    tmp_path, dataset
):
    config = quick_config(dataset, "dvp-cse", epochs=5, eval_every=3, select_on="test")
    results = fit(config, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    assert [("test_acc" in r) for r in rows] == [False, True, True, True, True]  # not eval_every
    assert [("val_acc" in r) for r in rows] == [False, False, True, False, True]
    scores = [r.get("test_acc", -1.0) for r in rows]
    assert results["selected_epoch"] == scores.index(max(scores)) + 1  # the earliest of a tie


def test_the_published_schedule_ends_above_zero_and_its_option_at_zero(tmp_path, dataset):
    """4 epochs of 3 steps, the first only estimating the PRM: 9 training steps of 12."""
    lrs = {}
    for span in ("all-epochs", "training-steps"):
        fit(quick_config(dataset, "dvp-cse", epochs=4, lr_schedule_span=span), tmp_path / span)
        lrs[span] = [r["lr"] for r in _rows(tmp_path / span)]
    expected = [40.0 * 0.5 * (1 + math.cos(math.pi * s / 12)) for s in (3, 6, 9)]
    assert lrs["all-epochs"] == pytest.approx([0.0, *expected])
    assert lrs["all-epochs"][-1] == pytest.approx(5.8579, abs=1e-4)
    assert lrs["training-steps"][-1] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ReprogramError, match="lr_schedule_span"):
        fit(quick_config(dataset, "ar", lr_schedule_span="cosine"), tmp_path / "bad")


def test_a_run_of_only_prm_estimation_is_refused_before_anything_is_written(tmp_path, dataset):
    with pytest.raises(ReprogramError, match=r"prm_warmup_epochs \(1\) .* epochs \(1\)"):
        fit(quick_config(dataset, "dvp-cse", epochs=1), tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
    results = fit(quick_config(dataset, "dvp-cse", epochs=1, prm_warmup_epochs=0), tmp_path / "r")
    assert results["selected_epoch"] == 1  # the one epoch trained


@pytest.mark.parametrize(
    ("method", "setting", "epoch"),
    [
        ("ar", {"lr": float("nan")}, 1),
        ("dvp-cse", {"lr": float("inf")}, 2),  # epoch 1 only estimates the PRM, and is kept
        ("attrvr", {"attr_top_k": 0}, 1),
    ],
)
def test_non_finite_training_stops_and_keeps_the_last_finite_checkpoint(
    tmp_path, dataset, monkeypatch, method, setting, epoch
):
    from reprogram.engine.config import TrainConfig

    monkeypatch.setattr(TrainConfig, "validate", lambda self: self)  # as if a check were missed
    run = tmp_path / "run"
    with pytest.raises(ReprogramError, match=f"^epoch {epoch}: .*(lr|attr_top_k)") as error:
        fit(quick_config(dataset, method, epochs=3, **setting), run)
    assert "\n" not in str(error.value)
    assert not (run / "results.json").exists()
    if epoch == 1:
        assert not (run / "checkpoint.pt").exists()
    else:
        checkpoint = load_checkpoint(run)
        assert checkpoint["epoch"] == epoch - 1
        assert all(torch.isfinite(v).all() for v in checkpoint["state"].values())
        assert [r["epoch"] for r in _rows(run)] == [1]


@pytest.mark.numeric
def test_resume_takes_the_identity_from_the_checkpoint_and_execution_from_the_caller(
    tmp_path, dataset, monkeypatch
):
    import reprogram.engine.train as train_module
    from reprogram.engine.config import TrainConfig

    monkeypatch.setattr(train_module, "local_device_name", lambda name: "cpu")  # 'auto' -> cpu
    original = train_module.train_one_epoch

    def interrupted(model, data, state, *args):
        if state.epoch == 2:
            raise KeyboardInterrupt
        return original(model, data, state, *args)

    settings = dict(epochs=4, device="auto", eval_every=1)
    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(quick_config(dataset, "dvp-cse", **settings), tmp_path / "resumed")
    monkeypatch.setattr(train_module, "train_one_epoch", original)
    saved = load_checkpoint(tmp_path / "resumed")
    assert saved["epoch"] == 2 and "runtime" not in saved["config"]  # nor the resolved device

    caller = TrainConfig().updated(method="ar", lr=1.0, epochs=9, eval_batch_size=5, quiet=True)
    resumed = fit(caller, tmp_path / "resumed", resume=True)
    straight = fit(quick_config(dataset, "dvp-cse", **settings), tmp_path / "straight")
    stored = yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())
    identity = (stored["method"]["name"], stored["optim"]["lr"], stored["optim"]["epochs"])
    assert identity == ("dvp-cse", 40.0, 4) and "runtime" not in stored
    for key in ("test_accuracy", "val_accuracy", "selected_epoch"):
        assert resumed[key] == straight[key], key
    a, b = (load_checkpoint(tmp_path / d)["state"] for d in ("resumed", "straight"))
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def _global_draws() -> tuple:
    import random

    import numpy as np

    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def _seed_globals() -> None:
    import random

    import numpy as np

    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)


def test_fit_leaves_global_state_as_it_found_it(tmp_path, dataset, monkeypatch):
    """A new run, an interrupted one and its resume each leave the deterministic-algorithms
    flags and the python, numpy and torch RNGs as the caller had them."""
    import reprogram.engine.train as train_module

    _seed_globals()
    expected = _global_draws()
    original = train_module.train_one_epoch

    def interrupted(model, data, state, *args):
        if state.epoch == 1:
            raise KeyboardInterrupt
        return original(model, data, state, *args)

    config = dict(epochs=2, deterministic=True)
    calls = [
        lambda: fit(quick_config(dataset, "dvp-cse", **config), tmp_path / "new"),
        lambda: fit(quick_config(dataset, "dvp-cse", **config), tmp_path / "killed"),
        lambda: fit(quick_config(dataset, "dvp-cse", **config), tmp_path / "killed", resume=True),
    ]
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        flagged = zip([(False, False), (True, False), (False, True)], calls, strict=True)
        for index, (flags, call) in enumerate(flagged):
            torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
            _seed_globals()
            epoch = interrupted if index == 1 else original
            monkeypatch.setattr(train_module, "train_one_epoch", epoch)
            try:
                call()
            except KeyboardInterrupt:
                assert index == 1
            enabled = torch.are_deterministic_algorithms_enabled()
            assert (enabled, torch.is_deterministic_algorithms_warn_only_enabled()) == flags
            assert _global_draws() == expected, index
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    assert load_checkpoint(tmp_path / "killed")["finished"]
