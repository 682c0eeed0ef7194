"""``reprogram export`` and ``predict --model``: an exported model predicts as its run does,
without the text encoder or the description files; bad export folders give one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import cli, make_folder_dataset, quick_config

import reprogram
from reprogram.backbones import Backbone
from reprogram.data import decode_center, load_dataset
from reprogram.data.images import as_float
from reprogram.engine.runs import load_run, predict_images
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError
from reprogram.export import export_run, load_exported


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("export") / "data")


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory) -> dict[str, Path]:
    """A trained dvp-cse run (3 prompts, PRM) and a zero-shot one (no prompt, template)."""
    folder = tmp_path_factory.mktemp("runs")
    fit(quick_config(dataset, "dvp-cse", epochs=2), folder / "dvp-cse")
    fit(quick_config(dataset, "zero-shot", epochs=0), folder / "zero-shot")
    return {name: folder / name for name in ("dvp-cse", "zero-shot")}


def _test_paths(dataset: Path) -> list[str]:
    return sorted(str(p) for p in (dataset / "test").glob("*/*.png"))


@pytest.mark.parametrize("method", ["dvp-cse", "zero-shot"])
def test_exported_model_predicts_as_its_run(method, runs, dataset, tmp_path, monkeypatch):
    out = tmp_path / "exported"
    manifest = export_run(runs[method], out)
    assert manifest == out / "manifest.json"
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    run = load_run(runs[method], device="cpu")
    splits = load_dataset(f"folder:{dataset}", None)
    images = decode_center(splits.test, run.model.image_size)
    paths = _test_paths(dataset)
    with torch.no_grad():
        expected = run.model(as_float(images.pixels)).logits
    expected_predictions = predict_images(run.model, run.classnames, paths, top_k=2)

    def refuse(*_args, **_kwargs):
        raise AssertionError("an exported model must not read or encode any text")

    monkeypatch.setattr(Backbone, "encode_text", refuse)
    monkeypatch.setattr("reprogram.text.descriptions.read_description_file", refuse)
    model = reprogram.load_exported(out, device="cpu")
    assert model.classnames == run.classnames and model.head.shape[0] == run.model.prompts.count
    logits = model.logits(images.pixels)  # uint8 pixels, already at the image size
    scale = float(expected.abs().max())
    assert float((logits - expected).abs().max()) <= 1e-5 * scale
    assert torch.equal(logits.argmax(1), expected.argmax(1))
    torch.testing.assert_close(model.logits(paths), logits, rtol=0, atol=1e-5 * scale)
    predictions = model.predict(paths, top_k=2)
    [single] = model.predict(paths[0], top_k=2)  # one path: one image
    assert single.top[0][0] == predictions[0].top[0][0]
    assert single.top[0][1] == pytest.approx(predictions[0].top[0][1], abs=1e-5)
    assert len(predictions) == len(expected_predictions) == len(paths)
    for ours, theirs in zip(predictions, expected_predictions, strict=True):
        assert ours.path == theirs.path
        assert [name for name, _ in ours.top] == [name for name, _ in theirs.top]
        for (_, p), (_, q) in zip(ours.top, theirs.top, strict=True):
            assert p == pytest.approx(q, abs=1e-5)
        assert ours.prompt == theirs.prompt and ours.description is None
        if theirs.prompt_shares is not None:
            assert ours.prompt_shares == pytest.approx(theirs.prompt_shares, abs=1e-4)


def test_export_and_predict_commands(runs, dataset, tmp_path, capsys):
    out = tmp_path / "exported"
    assert cli("export", str(runs["dvp-cse"]), "--out", str(out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "dvp-cse" and manifest["prompts"]["count"] == 3
    assert manifest["backbone"]["name"] == "random:tiny" and manifest["backbone"]["fingerprint"]
    assert manifest["preprocessing"]["image_size"] < manifest["prompts"]["input_size"]  # padding
    image = _test_paths(dataset)[0]
    capsys.readouterr()
    assert cli("predict", "--model", str(out), image, "--top-k", "2", "--json") == 0
    [exported] = json.loads(capsys.readouterr().out)
    assert (
        cli("predict", "--checkpoint", str(runs["dvp-cse"]), image, "--top-k", "2", "--json") == 0
    )
    [original] = json.loads(capsys.readouterr().out)
    assert [c for c, _ in exported["top"]] == [c for c, _ in original["top"]]
    assert exported["top"][0][1] == pytest.approx(original["top"][0][1], abs=1e-5)
    assert exported["prompt"] == original["prompt"]


def _error(capsys, *args: str) -> str:
    capsys.readouterr()
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_bad_export_folders_are_one_line_naming_the_file(runs, dataset, tmp_path, capsys):
    image = _test_paths(dataset)[0]
    missing = tmp_path / "nothing"
    assert "manifest.json not found" in _error(capsys, "predict", "--model", str(missing), image)
    out = tmp_path / "exported"
    export_run(runs["zero-shot"], out)
    manifest_path, tensors_path = out / "manifest.json", out / "model.safetensors"
    good_manifest, good_tensors = manifest_path.read_text(), tensors_path.read_bytes()

    def predict_error() -> str:
        return _error(capsys, "predict", "--model", str(out), image)

    manifest_path.write_text(good_manifest[:-40])
    assert f"{manifest_path}: not valid JSON" in predict_error()
    manifest = json.loads(good_manifest)
    del manifest["prompts"]["frame"]
    manifest_path.write_text(json.dumps(manifest))
    assert f"{manifest_path}: 'prompts.frame' is missing" in predict_error()
    manifest = json.loads(good_manifest)
    manifest["prompts"]["kind"] = "spiral"
    manifest_path.write_text(json.dumps(manifest))
    assert f"{manifest_path}: unknown prompt kind 'spiral'" in predict_error()
    manifest = json.loads(good_manifest)
    manifest["backbone"]["fingerprint"] = "0000"
    manifest_path.write_text(json.dumps(manifest))
    err = predict_error()
    assert str(manifest_path) in err and "fingerprint 0000" in err
    manifest_path.write_text(good_manifest)
    damaged = bytearray(good_tensors)
    damaged[-3] ^= 0xFF
    tensors_path.write_bytes(bytes(damaged))
    assert f"{tensors_path}: damaged" in predict_error()
    tensors_path.write_bytes(good_tensors)
    assert cli("predict", "--model", str(out), image) == 0  # restored: works again
    assert "one of --checkpoint RUN or --model DIR" in _error(capsys, "predict", image)


def test_top_k_means_refuse_to_export(dataset, tmp_path, capsys):
    run = tmp_path / "attrvr"
    fit(quick_config(dataset, "attrvr", epochs=0), run)
    with pytest.raises(ReprogramError, match="method 'attrvr' does not fold.*top-k"):
        export_run(run, tmp_path / "exported")
    err = _error(capsys, "export", str(run), "--out", str(tmp_path / "exported"))
    assert "attrvr" in err and "top-k" in err
    assert not (tmp_path / "exported" / "manifest.json").exists()


def _tiny_weights(path: Path, seed: int) -> Path:
    from reprogram.backbones.openclip import architecture_config, build_open_clip_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_open_clip_model(architecture_config("tiny"), False)
    torch.save(model.state_dict(), path)
    return path


def test_a_moved_backbone_is_found_with_weights(dataset, tmp_path):
    """The manifest records the run's weights file; ``weights`` points a moved one out, and
    other weights are refused by fingerprint."""
    weights = _tiny_weights(tmp_path / "w1.pt", seed=0)
    other = _tiny_weights(tmp_path / "w2.pt", seed=1)
    run = tmp_path / "run"
    fit(quick_config(dataset, "zero-shot", epochs=0, backbone="tiny", weights=str(weights)), run)
    out = tmp_path / "exported"
    export_run(run, out)
    assert json.loads((out / "manifest.json").read_text())["backbone"]["weights"] == str(weights)
    image = _test_paths(dataset)[0]
    expected = load_exported(out, device="cpu").predict([image])[0].top
    moved = weights.rename(tmp_path / "moved.pt")
    with pytest.raises(
        ReprogramError, match=r"manifest.json: the backbone does not load.*--weights"
    ):
        load_exported(out, device="cpu")
    assert load_exported(out, device="cpu", weights=str(moved)).predict([image])[0].top == expected
    with pytest.raises(ReprogramError, match=f"fingerprint .* from {other}"):
        load_exported(out, device="cpu", weights=str(other))
