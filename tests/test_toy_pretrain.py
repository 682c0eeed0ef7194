"""A few pretraining steps give a file the normal backbone factory loads; the CLI drives it."""

import json

import pytest
import torch
import typer
from safetensors import safe_open
from typer.testing import CliRunner

from reprogram.backbones import load_backbone
from reprogram.backbones.openclip import architecture_config
from reprogram.toy.cli import register
from reprogram.toy.pretrain import PretrainConfig, multi_positive_loss, pretrain


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROGRAM_CACHE", str(tmp_path / "cache"))


def test_toy_config_is_small_enough():
    config = architecture_config("toy")
    width = config["text_cfg"]["width"]
    assert config["text_cfg"]["vocab_size"] == 49408
    assert 49408 * width * 2 < 8e6  # the token table in fp16 leaves room for the rest


def test_tiny_pretraining_run_is_loadable(tmp_path):
    out = tmp_path / "toy.safetensors"
    result = pretrain(
        out,
        PretrainConfig(steps=2, batch_size=16, warmup=1, eval_every=0, eval_per_class=2),
        log=lambda _: None,
    )
    assert out.is_file() and result.file_bytes <= 10_000_000 and result.steps == 2
    with safe_open(str(out), framework="pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.float16}
        assert "reprogram_toy_pretrain" in handle.metadata()
    backbone = load_backbone("toy", weights=out)
    assert backbone.input_size == 64
    pixels = torch.zeros(2, 3, 64, 64, requires_grad=True)
    features = backbone.encode_image(pixels)
    features.sum().backward()
    assert pixels.grad is not None and features.shape == (2, backbone.embed_dim)
    text = backbone.encode_text(["This is a photo of red star."])
    assert torch.allclose(text.norm(dim=-1), torch.ones(1), atol=1e-4)


def test_same_seed_same_weights(tmp_path):
    config = PretrainConfig(steps=1, batch_size=8, warmup=1, eval_every=0, eval_per_class=1)
    a = pretrain(tmp_path / "a.safetensors", config, log=lambda _: None)
    b = pretrain(tmp_path / "b.safetensors", config, log=lambda _: None)
    from safetensors.torch import load_file

    sa, sb = load_file(str(a.path)), load_file(str(b.path))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_multi_positive_loss_prefers_true_matches():
    match = torch.eye(4, dtype=torch.bool)
    match[0, 1] = match[1, 0] = True
    good = torch.full((4, 4), -5.0)
    good[match] = 5.0
    assert multi_positive_loss(good, match) < multi_positive_loss(torch.zeros(4, 4), match)


def test_cli_commands(tmp_path):
    app = typer.Typer()
    register(app)

    @app.callback()
    def _main() -> None:  # a group, as in the real CLI
        pass

    runner = CliRunner()
    result = runner.invoke(app, ["toy", "tasks"])
    assert result.exit_code == 0 and "heldout" in result.output and "fashion-mnist" in result.output
    out = tmp_path / "digits"
    result = runner.invoke(
        app,
        [
            "toy",
            "make-task",
            "digits",
            "--out",
            str(out),
            "--image-size",
            "16",
            "--shots",
            "1",
            "--val-shots",
            "1",
            "--test-per-class",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "task.json").read_text())["name"] == "digits"
    weights = tmp_path / "w.safetensors"
    result = runner.invoke(
        app,
        [
            "toy",
            "pretrain",
            "--out",
            str(weights),
            "--steps",
            "1",
            "--batch-size",
            "8",
            "--eval-every",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert weights.is_file() and "held-out zero-shot" in result.output
    result = runner.invoke(
        app,
        ["toy", "zeroshot", "--weights", str(weights), "--per-class", "1", "--task-dir", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "held-out pairs" in result.output
    result = runner.invoke(
        app, ["toy", "preview", "--out", str(tmp_path / "p.png"), "--count", "4"]
    )
    assert result.exit_code == 0 and (tmp_path / "p.png").is_file()
