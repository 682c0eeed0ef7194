"""Bad options are refused with one line (ReprogramError, exit 2, no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli, make_folder_dataset, quick_config

from reprogram.engine.config import flat_items, load_config
from reprogram.errors import ReprogramError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("validation") / "data")


def _train(dataset: Path, out: Path, method: str, *sets: str) -> list[str]:
    args = ["train", "--method", method, "--dataset", f"folder:{dataset}"]
    args += ["--backbone", "random:tiny", "--epochs", "1", "--shots", "2", "--quiet"]
    args += ["--out", str(out), "--set", "m=5", "--set", "prm_warmup_epochs=0"]  # 1 epoch trains
    for item in sets:
        args += ["--set", item]
    return args


@pytest.mark.parametrize(
    ("key", "value", "word"),
    [
        ("lr", "-1", "lr"),
        ("lr", "inf", "lr"),
        ("lr", "nan", "lr"),
        ("momentum", "-0.1", "momentum"),
        ("eval_every", "-1", "eval_every"),
        ("prm_top_k", "0", "prm_top_k"),
        ("prm_top_k", "6", "prm_top_k"),  # m = 5
        ("attr_top_k", "0", "attr_top_k"),
        ("attr_top_k", "9", "attr_top_k"),
        ("alpha", "1.5", "alpha"),
        ("alpha", "-0.1", "alpha"),
        ("clusters", "0", "clusters"),
        ("clusters", "-2", "clusters"),
        ("frame", "-3", "frame"),
        ("frame", "0", "frame"),
        ("template", "a photo", "template"),
        ("template", "a photo of {name}", "template"),
        ("template", "{} and {}", "template"),
        ("template", "a {", "template"),
    ],
)
def test_static_checks(dataset, key, value, word):
    config = quick_config(dataset, "dvp-cls", m=5)
    config = load_config(None, {**flat_items(config, runtime=True), key: value})
    with pytest.raises(ReprogramError, match=word):
        config.validate()


def test_defaults_pass_validation(dataset):
    quick_config(dataset, "dvp-cse").validate()
    load_config(None, {"dataset": "dtd"}).validate()


@pytest.mark.parametrize(
    ("method", "setting", "word"),
    [
        ("dvp-cls", "clusters=16", "clusters"),  # 3 classes x m=5 = 15 descriptions
        ("dvp-cls", "clusters=0", "clusters"),
        ("ar", "frame=28", "frame"),  # random:tiny has a 56-px input: 27 at most
        ("vp", "frame=40", "frame"),
        ("ar", "lr=nan", "lr"),
        ("attrvr", "attr_top_k=0", "attr_top_k"),
        ("ar", "template=no field", "template"),
    ],
)
def test_cli_refuses_in_one_line(dataset, tmp_path, capsys, method, setting, word):
    args = _train(dataset, tmp_path / "run", method, setting)
    if method == "dvp-cls":
        args += ["--descriptions", str(dataset / "descriptions" / "des.json")]
    if method == "attrvr":
        args += ["--descriptions", str(dataset / "descriptions" / "des.json")]
        args += [str(dataset / "descriptions" / "dist.json")]
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and word in err[0]
    assert "Traceback" not in err[0]
    assert not (tmp_path / "run" / "results.json").exists()


def test_largest_frame_that_fits_trains(dataset, tmp_path, capsys):
    assert cli(*_train(dataset, tmp_path / "run", "ar", "frame=27")) == 0


def test_duplicate_seeds_refused(dataset, tmp_path, capsys):
    args = _train(dataset, tmp_path / "runs", "ar") + ["--seeds", "1", "1"]
    assert cli(*args) == 2
    assert "seed" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_predict_top_k_below_one_refused(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(*_train(dataset, run, "ar")) == 0
    image = next((dataset / "test").glob("*/0.png"))
    capsys.readouterr()
    assert cli("predict", str(image), "--checkpoint", str(run), "--top-k", "0") == 2
    assert "--top-k" in capsys.readouterr().err
