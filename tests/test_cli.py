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


def test_train_then_eval_one_method(tmp_path, dataset, capsys):
    """One smoke run through the command line (tests/test_engine.py sweeps every method)."""
    method = "dvp-cse"
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


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """``reprogram ARGS`` in this process: (exit code, what it wrote to stderr)."""
    capsys.readouterr()
    code = cli(*expand_multi_value_options(list(args)))
    return code, capsys.readouterr().err


def test_bad_input_is_one_line_without_traceback(dataset, tmp_path, capsys):
    code, err = run_cli(
        capsys,
        "train",
        "--method",
        "dvp-xyz",
        "--dataset",
        f"folder:{dataset}",
        "--out",
        str(tmp_path / "x"),
    )
    assert code == 2
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: unknown method 'dvp-xyz' (known: zero-shot, "
        "zero-shot-desc, vp, ar, attrvr, dvp-cse, dvp-cls)"
    ]
    code, err = run_cli(
        capsys,
        "train",
        "--method",
        "dvp-cse",
        "--dataset",
        f"folder:{dataset}",
        "--backbone",
        "random:tiny",
        "--descriptions",
        str(tmp_path / "nope.json"),
        "--shots",
        "4",
        "--out",
        str(tmp_path / "y"),
    )
    assert code == 2 and "nope.json" in err and "Traceback" not in err


def test_weights_tag_fails_fast_with_guidance(dataset, capsys):
    started = time.monotonic()
    code, err = run_cli(
        capsys,
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
    assert code != 0
    assert time.monotonic() - started < 20  # no hub time-outs
    assert "never downloads" in err and "--weights /path/to/" in err


def test_checkpoint_from_another_backbone_is_refused(tmp_path, dataset, capsys):
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
    assert config["backbone"]["name"] == "random:tiny"
    import torch

    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    checkpoint["backbone"]["fingerprint"] = "0000"
    torch.save(checkpoint, run / "checkpoint.pt")
    code, err = run_cli(capsys, "eval", "--checkpoint", str(run))
    assert code == 2 and "fingerprint" in err and "Traceback" not in err


# -- moved runs, ignored options, Ctrl-C -----------------------------------------------------
def _tiny_weights(path: Path, seed: int) -> Path:
    import torch

    from reprogram.backbones.openclip import architecture_config, build_open_clip_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_open_clip_model(architecture_config("tiny"), False)
    torch.save(model.state_dict(), path)
    return path


def test_moved_run_is_pointed_at_its_weights(tmp_path, dataset, capsys):
    from reprogram.engine.runs import load_run

    weights = _tiny_weights(tmp_path / "w1.pt", seed=0)
    other = _tiny_weights(tmp_path / "w2.pt", seed=1)
    run = tmp_path / "run"
    args = ["train", "--method", "ar", "--dataset", f"folder:{dataset}", "--backbone", "tiny"]
    args += ["--weights", str(weights), "--epochs", "1", "--shots", "2", "--out", str(run)]
    assert cli(*args, "--quiet") == 0
    moved = weights.rename(tmp_path / "moved.pt")
    capsys.readouterr()
    assert cli("eval", "--checkpoint", str(run), "--quiet") == 2
    assert "--weights" in capsys.readouterr().err
    assert cli("eval", "--checkpoint", str(run), "--weights", str(moved), "--quiet") == 0
    assert "accuracy" in capsys.readouterr().out
    image = str(next((dataset / "test").glob("*/0.png")))
    assert cli("predict", image, "--checkpoint", str(run), "--weights", str(moved)) == 0
    assert cli("eval", "--checkpoint", str(run), "--weights", str(other)) == 2
    err = capsys.readouterr().err
    assert "fingerprint" in err and str(weights) in err  # names the file the run expects
    ignored = ["--method", "vp", "--shots", "3", "--weights", str(moved), "--quiet"]
    assert cli("eval", "--checkpoint", str(run), *ignored) == 0
    [warning] = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert "--method, --shots ignored with --checkpoint" in warning
    for extra, rebuilt in (([], False), (["--weights", str(moved)], True)):
        report = tmp_path / f"report-{rebuilt}"
        assert cli("explain", str(run), "--out", str(report), "--quiet", *extra) == 0
        html = (report / "index.html").read_text()
        assert ("could not be rebuilt" not in html) == rebuilt
    loaded = load_run(run, weights=str(moved), root=str(tmp_path / "elsewhere"))
    assert loaded.config.backbone.weights == str(moved) and loaded.config.data.root == str(
        tmp_path / "elsewhere"
    )


def test_options_ignored_by_resume_are_named(tmp_path, capsys):
    args = ["train", "--resume", "--out", str(tmp_path / "none"), "--lr", "3", "--shots", "1"]
    assert cli(*args) == 2  # no checkpoint there; the warning comes first
    assert "--shots, --lr ignored with --resume" in capsys.readouterr().err


def test_class_difference_names_the_classes():
    from reprogram.engine.runs import class_difference

    text = class_difference(["a", "b", "typo"], ["a", "b", "c"])
    assert "not in the dataset: 'c'" in text and "not in the run: 'typo'" in text
    assert "another order" in class_difference(["b", "a"], ["a", "b"])


def test_ctrl_c_during_train_says_rerun_with_resume(tmp_path, dataset):
    import signal

    run = tmp_path / "run"
    args = ["train", "--method", "ar", "--dataset", f"folder:{dataset}", "--backbone"]
    args += ["random:tiny", "--epochs", "100000", "--shots", "2", "--out", str(run), "--quiet"]
    env = {**os.environ, "PYTHONPATH": SRC}
    process = subprocess.Popen(
        [sys.executable, "-m", "reprogram", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while not (run / "checkpoint.pt").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "interrupted; rerun with --resume" in err
    assert "Traceback" not in err and "Aborted" not in err


def test_every_command_is_registered_once():
    from reprogram.cli import app, register_subcommands

    for _ in range(2):
        register_subcommands(app)
    commands = [c.name for c in app.registered_commands]
    groups = [g.name for g in app.registered_groups]
    assert len(commands) == len(set(commands)) and len(groups) == len(set(groups))
    expected = {"train", "eval", "predict", "compare", "base2novel", "demo", "bench", "explain"}
    assert expected <= set(commands)
    assert {"toy", "benchmark", "descriptions"} <= set(groups)
