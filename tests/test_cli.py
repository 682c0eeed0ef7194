"""The command line: every method through `reprogram train`, eval, predict, compare, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import cli, make_folder_dataset

from reprogram.cli import expand_multi_value_options


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


def tiny_train(dataset: Path, out: Path, method: str, *options: str) -> list[str]:
    """``reprogram train`` arguments: ``method`` on the tiny random backbone into ``out``."""
    args = ["train", "--method", method, "--dataset", f"folder:{dataset}"]
    args += ["--backbone", "random:tiny", "--out", str(out), "--quiet", *options]
    return expand_multi_value_options(args)


def test_train_then_eval_one_method(tmp_path, dataset, capsys):
    """One smoke run through the command line (tests/test_engine.py sweeps every method)."""
    method = "dvp-cse"
    run = tmp_path / "run"
    options = ["--shots", "4", "--seed", "1", "--epochs", "2", "--set", "m=5"]
    options += ["--descriptions", *descriptions_for(method, dataset)]
    assert cli(*tiny_train(dataset, run, method, *options)) == 0
    results = json.loads((run / "results.json").read_text())
    assert {"val_accuracy", "test_accuracy", "per_class_accuracy"} <= set(results)
    capsys.readouterr()
    assert cli("eval", "--checkpoint", str(run), "--split", "test", "--quiet") == 0
    printed = capsys.readouterr().out
    assert f"accuracy {results['test_accuracy']:.4f}" in printed


def zero_shot_eval(dataset: Path, backbone: str, *options: str) -> list[str]:
    """``reprogram eval`` arguments: zero-shot CLIP with ``backbone`` on the test split."""
    args = ["eval", "--method", "zero-shot", "--dataset", f"folder:{dataset}"]
    return [*args, "--backbone", backbone, "--split", "test", *options]


def test_zero_shot_eval_without_training(dataset, capsys):
    assert cli(*zero_shot_eval(dataset, "random:tiny", "--quiet")) == 0
    assert "accuracy" in capsys.readouterr().out


def test_predict_names_prompt_and_description(tmp_path, dataset, capsys):
    run = tmp_path / "run"
    options = ["--shots", "4", "--epochs", "2", "--set", "m=5"]
    assert cli(*tiny_train(dataset, run, "dvp-cse", *options)) == 0
    capsys.readouterr()
    image = next((dataset / "test" / "red disc").glob("*.png"))
    assert cli("predict", "--checkpoint", str(run), str(image), "--top-k", "2", "--json") == 0
    [prediction] = json.loads(capsys.readouterr().out)
    assert len(prediction["top"]) == 2
    assert prediction["prompt"] in ("cse_1", "cse_2", "cse_3")
    assert "description" in prediction["description"]
    assert abs(sum(abs(v) for v in prediction["prompt_shares"].values()) - 1) < 1e-4


def test_predict_refuses_a_run_whose_prompts_diverged(tmp_path, dataset, capsys):
    run = tmp_path / "run"
    # one step per epoch at a huge lr: epoch 1 is finite and saved, epoch 2 is not (stopped)
    options = ["--shots", "4", "--epochs", "3", "--batch-size", "16", "--lr", "1e30"]
    code, err = run_cli(capsys, *tiny_train(dataset, run, "vp", *options))
    assert code == 2 and "epoch 2: the training loss is nan" in err
    image = next((dataset / "test" / "red disc").glob("*.png"))
    commands = [
        ["predict", "--checkpoint", str(run), str(image)],
        ["predict", "--checkpoint", str(run), str(image), "--json"],
        ["eval", "--checkpoint", str(run), "--quiet"],  # no accuracy of arbitrary answers
        ["eval", "--checkpoint", str(run), "--targets", f"folder:{dataset}", "--quiet"],
    ]
    for command in commands:
        capsys.readouterr()
        assert cli(*command) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        [line] = captured.err.strip().splitlines()
        assert line.startswith(f"error: {run}: the run's prompts give non-finite class scores")


def test_targets_naming_no_dataset_is_one_line(tmp_path, capsys):
    for targets in (",", " , ", ""):
        code, err = run_cli(capsys, "eval", "--checkpoint", str(tmp_path), "--targets", targets)
        assert code == 2 and "Traceback" not in err
        assert err.strip().splitlines() == [
            f"error: --targets {targets!r} names no dataset: give them as a,b,c"
        ]
    from reprogram.errors import ReprogramError
    from reprogram.protocols.transfer import evaluate_transfer

    with pytest.raises(ReprogramError, match="no target dataset given"):
        evaluate_transfer(tmp_path, [None])


def test_multi_seed_and_compare(tmp_path, dataset, capsys):
    out = tmp_path / "multi"
    options = ["--shots", "2", "--epochs", "1", "--seeds", "1", "2"]
    assert cli(*tiny_train(dataset, out, "ar", *options)) == 0
    assert "| ar |" in capsys.readouterr().out
    assert cli("compare", str(out)) == 0
    assert "(n=2" in capsys.readouterr().out


def test_seed_runs_of_another_method_are_refused_or_overwritten(tmp_path, dataset, capsys):
    out = tmp_path / "multi"
    options = ["--shots", "2", "--epochs", "1", "--seeds"]
    assert cli(*tiny_train(dataset, out, "vp", *options, "2")) == 0
    results = out / "seed-2" / "results.json"
    finished = results.stat().st_mtime_ns
    code, err = run_cli(capsys, *tiny_train(dataset, out, "ar", *options, "1", "2"))
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"error: {out / 'seed-2'} holds a run of other settings (method=vp (asked: ar)): "
        "choose another --out, or add --overwrite to train it again there"
    ]
    # refused before anything was trained or touched
    assert not (out / "seed-1").exists() and results.stat().st_mtime_ns == finished
    assert cli(*tiny_train(dataset, out, "vp", *options, "2")) == 0  # the same settings: reused
    assert "| vp |" in capsys.readouterr().out and results.stat().st_mtime_ns == finished
    assert cli(*tiny_train(dataset, out, "ar", *options, "2", "--overwrite")) == 0
    assert "| ar |" in capsys.readouterr().out
    assert json.loads(results.read_text())["method"] == "ar"


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
        "zero-shot-desc, vp, ar, attrvr, dvp-cse, dvp-cls, rvp, rvp-no-p, rvp-no-e, "
        "rvp-no-prompt, linear-probe, attribute-lp, dvp-one, dvp-cse-rvp)"
    ]
    missing = ["--descriptions", str(tmp_path / "nope.json"), "--shots", "4"]
    code, err = run_cli(capsys, *tiny_train(dataset, tmp_path / "y", "dvp-cse", *missing))
    assert code == 2 and "nope.json" in err and "Traceback" not in err


def test_weights_tag_fails_fast_with_guidance(dataset, capsys):
    started = time.monotonic()
    code, err = run_cli(capsys, *zero_shot_eval(dataset, "ViT-B-32", "--weights", "openai"))
    assert code != 0
    assert time.monotonic() - started < 20  # no hub time-outs
    assert "never downloads" in err and "--weights /path/to/" in err


def test_checkpoint_from_another_backbone_is_refused(tmp_path, dataset, capsys):
    run = tmp_path / "run"
    assert cli(*tiny_train(dataset, run, "zero-shot")) == 0
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


def test_ctrl_c_during_train_says_rerun_with_resume(tmp_path, dataset, capsys):
    """Ctrl-C (SIGINT's KeyboardInterrupt, raised here by ``interrupt_main``) once the first
    checkpoint is written: exit 130 and one line saying how to continue."""
    import _thread
    import signal
    import threading

    run = tmp_path / "run"
    args = tiny_train(dataset, run, "ar", "--epochs", "400", "--shots", "2")

    def interrupt_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 90
        while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        _thread.interrupt_main(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=interrupt_after_the_first_checkpoint)
    try:
        watcher.start()
        code, err = run_cli(capsys, *args)
    finally:
        watcher.join()
        signal.signal(signal.SIGINT, previous)
    assert code == 130, err
    assert "interrupted; rerun with --resume" in err
    assert "Traceback" not in err and "Aborted" not in err
    assert not (run / "results.json").exists() and (run / "checkpoint.pt").is_file()


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


# -- options written once: each command takes them from the function or dataclass it calls ---
def command_params(name: str) -> dict:
    """The click parameters of ``reprogram NAME``, by name."""
    from typer.main import get_command

    from reprogram.cli import app, register_subcommands

    return {p.name: p for p in get_command(register_subcommands(app)).commands[name].params}


def test_base2novel_takes_train_options_into_its_own_folder(dataset, monkeypatch):
    from reprogram.engine.config import flat_items
    from reprogram.protocols import base_to_novel

    calls = []
    monkeypatch.setattr(
        base_to_novel, "run_base_to_novel", lambda *args, **kwargs: calls.append(args) or {}
    )
    monkeypatch.setattr(base_to_novel, "base_to_novel_markdown", lambda results: "")
    options = ["--clusters", "2", "--select-on", "test", "--eval-every", "2", "--lr", "3"]
    args = ["base2novel", "--method", "dvp-cls", "--dataset", f"folder:{dataset}", *options]
    assert cli(*args, "--precision", "fp32") == 0
    [(config, out)] = calls
    values = flat_items(config, runtime=True)
    chosen = [values[k] for k in ("clusters", "select_on", "eval_every", "lr", "precision")]
    assert chosen == [2, "test", 2, 3.0, "fp32"]
    assert out == Path("runs/base2novel")
    train, b2n = command_params("train"), command_params("base2novel")
    assert set(train) == set(b2n) and train["out"].default == Path("runs/run")


def test_bench_options_reach_their_preset(monkeypatch):
    import dataclasses

    from reprogram.speed import run, scale

    seen = []
    monkeypatch.setattr(
        run, "run_bench", lambda o, **_: seen.append(o) or {"equivalence_passed": 1}
    )
    monkeypatch.setattr(scale, "run_scale", lambda o, **_: seen.append(o) or {})
    monkeypatch.setattr(run, "format_table", lambda result: "")
    monkeypatch.setattr(scale, "format_scale", lambda result: "")
    assert cli("bench", "--classes", "3", "--epochs", "5", "--compile", "--quiet") == 0
    assert cli("bench", "--scale", "--classes", "3", "--epochs", "5", "--quiet") == 0
    bench, preset = seen
    assert bench == dataclasses.replace(run.BenchOptions(), classes=3, epochs=5, compile=True)
    assert preset == dataclasses.replace(scale.ScaleOptions(), classes=3)  # no epochs there
    shown = command_params("bench")["classes"].show_default
    assert shown == f"{run.BenchOptions().classes}; --scale: {scale.ScaleOptions().classes}"


def test_explain_options_reach_the_report(tmp_path, monkeypatch):
    import importlib

    from reprogram.report.load import Options

    explain = importlib.import_module("reprogram.report.explain")  # the package face shadows it
    seen = []
    monkeypatch.setattr(explain, "explain", lambda runs, out, options, log: seen.append(options))
    assert cli("explain", str(tmp_path), "--examples", "1", "--max-classes", "2", "-q") == 0
    assert seen == [Options(examples=1, max_classes=4)]  # a selection shows at least 4 classes
    assert Options(max_classes=2).max_classes == 4 and Options().device == "auto"


def test_options_given_twice_replace_the_first():
    import inspect

    from reprogram.cli.options import options_of, with_options
    from reprogram.toy.tasks import make_task

    def command(name: str, **values) -> None: ...

    options = options_of({"seed": "", "overwrite": ""}, {"": make_task})
    for _ in range(2):
        with_options(command, options)
    assert list(inspect.signature(command).parameters) == ["seed", "overwrite", "name"]


def test_describe_options_reach_the_client_and_sampling(tmp_path, monkeypatch):
    from reprogram.cli import describe
    from reprogram.text.describe.client import DEFAULT_DEADLINE
    from reprogram.text.describe.generate import GenerationResult, Sampling

    seen = {}

    def generate(*args, client, sampling, **kwargs) -> GenerationResult:
        seen.update(client=client, sampling=sampling)
        return GenerationResult(files=[], total=0, complete=0)

    monkeypatch.setattr(describe, "generate_descriptions", generate)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    args = ["describe", "--out", str(tmp_path), "--classes", str(tmp_path / "classes.txt")]
    args += ["--task", "pet", "--causes", "fur", "--base-url", "http://127.0.0.1:9/v1"]
    options = ["--temperature", "0.5", "--timeout", "7", "--max-retries", "2", "--no-progress"]
    assert cli(*args, *options) == 0
    client, sampling = seen["client"], seen["sampling"]
    assert (client.timeout, client.max_retries, client.deadline) == (7.0, 2, DEFAULT_DEADLINE)
    assert sampling.temperature == 0.5 and sampling.max_tokens == Sampling().max_tokens


def test_options_the_method_does_not_read_are_one_warning_each(tmp_path, dataset, capsys):
    """Asked of the recipe's parts (what each declares it reads), not per method."""
    out = tmp_path / "vp"
    described = ["--descriptions", str(dataset / "descriptions" / "des.json"), "--causes", "1,2"]
    args = [
        "train",
        "--method",
        "vp",
        "--dataset",
        f"folder:{dataset}",
        "--backbone",
        "random:tiny",
    ]
    args += [
        *described,
        "--description-source",
        "llama",
        "--set",
        "prm_top_k=2",
        "--epochs",
        "0",
        "--shots",
        "2",
    ]
    assert cli(*args, "--out", str(out)) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    keys = ["prm_top_k", "descriptions", "causes", "description_source"]
    assert [line.split("=")[0] for line in lines] == [f"warning: {key}" for key in keys]
    assert all("method 'vp'" in line and "does not read it" in line for line in lines)
    assert json.loads((out / "results.json").read_text())["warnings"] == [
        line.removeprefix("warning: ") for line in lines
    ]
    capsys.readouterr()
    # what the method reads is not warned about: causes and prm_top_k are dvp-cse's
    args = tiny_train(dataset, tmp_path / "cse", "dvp-cse", "--causes", "1,2", "--shots", "2")
    assert cli(*args, "--set", "prm_top_k=2", "--epochs", "0", "--set", "m=4") == 0
    assert json.loads((tmp_path / "cse" / "results.json").read_text())["warnings"] == []


def test_options_the_command_does_not_use_are_named(tmp_path, dataset, capsys):
    args = ["--dataset", f"folder:{dataset}", "--backbone", "random:tiny", "--quiet"]
    assert cli("eval", "--method", "zero-shot", *args, "--targets", "a,b") == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: eval: --targets ignored with no --checkpoint "
        "(it names the datasets a trained run is evaluated on)"
    ]
    missing = ["--dataset", f"folder:{tmp_path / 'none'}", "--set", "subsample_classes=novel"]
    assert cli("base2novel", "--method", "ar", *missing, "--out", str(tmp_path / "b")) == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.startswith("warning: base2novel: subsample_classes=novel ignored")
    assert error.startswith("error: ")
