"""A few pretraining steps give a file the normal backbone factory loads; the CLI drives it."""

import json

import pytest
import torch
import typer
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from reprogram.backbones import load_backbone
from reprogram.backbones.openclip import architecture_config
from reprogram.cli.toy import register
from reprogram.toy.pretrain import PretrainConfig, multi_positive_loss, pretrain, read_info

TINY = PretrainConfig(steps=1, batch_size=8, warmup=1, eval_every=0, eval_per_class=1)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROGRAM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "toy.safetensors"
    return pretrain(out, TINY, log=lambda _: None)


def test_toy_config_is_small_enough():
    config = architecture_config("toy")
    width = config["text_cfg"]["width"]
    assert config["text_cfg"]["vocab_size"] == 49408
    assert 49408 * width * 2 < 8e6  # the token table in fp16 leaves room for the rest


def test_tiny_pretraining_run_is_loadable(tiny_run):
    out = tiny_run.path
    assert out.is_file() and tiny_run.file_bytes <= 10_000_000 and tiny_run.steps == 1
    with safe_open(str(out), framework="pt") as handle:
        tensors = [handle.get_tensor(k) for k in handle.keys()]  # noqa: SIM118
        assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.float16}
    info = read_info(out)
    assert info["arch"] == "toy" and info["pretrain"]["steps"] == 1 and "heldout_accuracy" in info
    backbone = load_backbone("toy", weights=out)
    assert backbone.input_size == 64
    pixels = torch.zeros(2, 3, 64, 64, requires_grad=True)
    features = backbone.encode_image(pixels)
    features.sum().backward()
    assert pixels.grad is not None and features.shape == (2, backbone.embed_dim)
    text = backbone.encode_text(["This is a photo of red star."])
    assert torch.allclose(text.norm(dim=-1), torch.ones(1), atol=1e-4)


@pytest.mark.numeric
def test_same_seed_same_weights(tiny_run, tmp_path):
    from dataclasses import replace

    threads = torch.get_num_threads()  # what the first run used (float order)
    torch.set_num_threads(threads + 1)
    try:
        state = torch.get_rng_state()
        again = pretrain(
            tmp_path / "again.safetensors", replace(TINY, threads=threads), log=lambda _: None
        )
        # the caller's thread count and RNG as they were
        assert torch.get_num_threads() == threads + 1 and torch.equal(torch.get_rng_state(), state)
    finally:
        torch.set_num_threads(threads)
    a, b = load_file(str(tiny_run.path)), load_file(str(again.path))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert tiny_run.path.read_bytes() == again.path.read_bytes()  # the very same file


def test_multi_positive_loss_prefers_true_matches():
    match = torch.eye(4, dtype=torch.bool)
    match[0, 1] = match[1, 0] = True
    good = torch.full((4, 4), -5.0)
    good[match] = 5.0
    assert multi_positive_loss(good, match) < multi_positive_loss(torch.zeros(4, 4), match)


def test_cli_commands(tiny_run, tmp_path):
    app = typer.Typer()
    register(app)

    @app.callback()
    def _main() -> None:  # a group, as in the real CLI
        pass

    runner = CliRunner()
    result = runner.invoke(app, ["toy", "tasks"])
    assert result.exit_code == 0 and "heldout" in result.output and "fashion-mnist" in result.output
    out = tmp_path / "tiny-task"
    args = ["--image-size", "16", "--shots", "1", "--val-shots", "1", "--test-per-class", "1"]
    result = runner.invoke(app, ["toy", "make-task", "tiny", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "task.json").read_text())["name"] == "tiny"
    weights = tmp_path / "w.safetensors"
    args = ["--steps", "1", "--batch-size", "8", "--warmup", "1", "--eval-every", "0"]
    result = runner.invoke(
        app, ["toy", "pretrain", "--out", str(weights), *args, "--eval-per-class", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "held-out zero-shot" in result.output
    # the command is the library call: same seed, same weights
    a, b = load_file(str(tiny_run.path)), load_file(str(weights))
    assert all(torch.equal(a[k], b[k]) for k in a)
    result = runner.invoke(
        app,
        ["toy", "zeroshot", "--weights", str(weights), "--per-class", "1", "--task-dir", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "held-out pairs" in result.output and str(out) in result.output
    result = runner.invoke(
        app, ["toy", "preview", "--out", str(tmp_path / "p.png"), "--count", "4"]
    )
    assert result.exit_code == 0 and (tmp_path / "p.png").is_file()
