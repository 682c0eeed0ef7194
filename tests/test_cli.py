"""The command line: every method through `reprogram train`, eval, predict, compare, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli, make_folder_dataset

from reprogram.cli import expand_multi_value_options

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("cli") / "data")


def descriptions_for(method: str, dataset: Path) -> list[str]:
    folder = dataset / "descriptions"
    files = {
        "dvp-cse": ["cse_1.json", "cse_2.json", "cse_3.json"],
        "dvp-cls": ["des.json"],
        "attrvr": ["des.json", "dist.json"],
        "zero-shot-desc": ["des.json"],
    }.get(method, [])
    return [str(folder / f) for f in files]


@pytest.mark.parametrize("method", ["zero-shot", "vp", "ar", "attrvr", "dvp-cse", "dvp-cls"])
def test_train_then_eval_every_method(tmp_path, dataset, method, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--method",
        method,
        "--dataset",
        f"folder:{dataset}",
        "--backbone",
        "random:tiny",
        "--shots",
        "4",
        "--seed",
        "1",
        "--epochs",
        "2",
        "--out",
        str(run),
        "--quiet",
        "--set",
        "m=5",
    ]
    descriptions = descriptions_for(method, dataset)
    if descriptions:
        args += ["--descriptions", *descriptions]
    assert cli(*expand_multi_value_options(args)) == 0
    results = json.loads((run / "results.json").read_text())
    assert {"val_accuracy", "test_accuracy", "per_class_accuracy"} <= set(results)
    capsys.readouterr()
    assert cli("eval", "--checkpoint", str(run), "--split", "test", "--quiet") == 0
    printed = capsys.readouterr().out
    assert f"accuracy {results['test_accuracy']:.4f}" in printed


def test_zero_shot_eval_without_training(dataset, capsys):
    assert (
        cli(
            "eval",
            "--method",
            "zero-shot",
            "--dataset",
            f"folder:{dataset}",
            "--backbone",
            "random:tiny",
            "--split",
            "test",
            "--quiet",
        )
        == 0
    )
    assert "accuracy" in capsys.readouterr().out


def test_predict_names_prompt_and_description(tmp_path, dataset, capsys):
    run = tmp_path / "run"
    assert (
        cli(
            *expand_multi_value_options(
                [
                    "train",
                    "--method",
                    "dvp-cse",
                    "--dataset",
                    f"folder:{dataset}",
                    "--backbone",
                    "random:tiny",
                    "--shots",
                    "4",
                    "--epochs",
                    "2",
                    "--out",
                    str(run),
                    "--quiet",
                    "--set",
                    "m=5",
                ]
            )
        )
        == 0
    )
    capsys.readouterr()
    image = next((dataset / "test" / "red disc").glob("*.png"))
    assert cli("predict", "--checkpoint", str(run), str(image), "--top-k", "2", "--json") == 0
    [prediction] = json.loads(capsys.readouterr().out)
    assert len(prediction["top"]) == 2
    assert prediction["prompt"] in ("cse_1", "cse_2", "cse_3")
    assert "description" in prediction["description"]
    assert abs(sum(abs(v) for v in prediction["prompt_shares"].values()) - 1) < 1e-4


def test_multi_seed_and_compare(tmp_path, dataset, capsys):
    out = tmp_path / "multi"
    args = [
        "train",
        "--method",
        "ar",
        "--dataset",
        f"folder:{dataset}",
        "--backbone",
        "random:tiny",
        "--shots",
        "2",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "2",
        "--out",
        str(out),
        "--quiet",
    ]
    assert cli(*expand_multi_value_options(args)) == 0
    assert "| ar |" in capsys.readouterr().out
    assert cli("compare", str(out)) == 0
    assert "(n=2" in capsys.readouterr().out


def test_expand_multi_value_options():
    assert expand_multi_value_options(
        ["--seeds", "1", "2", "--quiet", "--descriptions", "a", "b"]
    ) == ["--seeds", "1", "--seeds", "2", "--quiet", "--descriptions", "a", "--descriptions", "b"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "reprogram", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_bad_input_is_one_line_without_traceback(dataset, tmp_path):
    result = run_cli(
        "train",
        "--method",
        "dvp-xyz",
        "--dataset",
        f"folder:{dataset}",
        "--out",
        str(tmp_path / "x"),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown method 'dvp-xyz' (known: zero-shot, "
        "zero-shot-desc, vp, ar, attrvr, dvp-cse, dvp-cls)"
    ]
    missing = run_cli(
        "train",
        "--method",
        "dvp-cse",
        "--dataset",
        f"folder:{dataset}",
        "--backbone",
        "random:tiny",
        "--descriptions",
        str(tmp_path / "nope.json"),
        "--out",
        str(tmp_path / "y"),
    )
    assert (
        missing.returncode == 2
        and "nope.json" in missing.stderr
        and "Traceback" not in missing.stderr
    )


def test_weights_tag_fails_fast_with_guidance(dataset):
    started = time.monotonic()
    result = run_cli(
        "eval",
        "--method",
        "zero-shot",
        "--dataset",
        f"folder:{dataset}",
        "--backbone",
        "ViT-B-32",
        "--weights",
        "openai",
        "--split",
        "test",
    )
    assert result.returncode != 0
    assert time.monotonic() - started < 30  # process start included; no hub time-outs
    assert "never downloads" in result.stderr and "--weights /path/to/" in result.stderr


def test_checkpoint_from_another_backbone_is_refused(tmp_path, dataset):
    run = tmp_path / "run"
    assert (
        cli(
            "train",
            "--method",
            "zero-shot",
            "--dataset",
            f"folder:{dataset}",
            "--backbone",
            "random:tiny",
            "--out",
            str(run),
            "--quiet",
        )
        == 0
    )
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["backbone"] == "random:tiny"
    import torch

    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    checkpoint["backbone"]["fingerprint"] = "0000"
    torch.save(checkpoint, run / "checkpoint.pt")
    result = run_cli("eval", "--checkpoint", str(run))
    assert (
        result.returncode == 2
        and "fingerprint" in result.stderr
        and "Traceback" not in result.stderr
    )
