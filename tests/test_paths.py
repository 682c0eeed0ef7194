"""Every path a run stores is absolute: the run works from any folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from helpers import cli, make_folder_dataset, quick_config

from reprogram.engine.checkpoint import load_checkpoint
from reprogram.engine.config import load_config
from reprogram.engine.paths import absolute_paths


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip").mkdir()
    (tmp_path / "w.pt").write_bytes(b"x")
    config = load_config(
        None,
        {
            "dataset": "folder:data/task",
            "root": "datasets",
            "backbone": "local-dir:clip",
            "weights": "w.pt",
            "descriptions": "d/a.json,d/b.json",
        },
    )
    assert config.data.dataset == f"folder:{tmp_path / 'data' / 'task'}"
    assert config.data.root == str(tmp_path / "datasets")
    assert config.backbone.name == f"local-dir:{tmp_path / 'clip'}"
    assert config.backbone.weights == str(tmp_path / "w.pt")
    assert config.data.descriptions == [
        str(tmp_path / "d" / "a.json"),
        str(tmp_path / "d" / "b.json"),
    ]
    for spec in ("csv:x.csv", "hf:clip"):
        prefix = spec.split(":")[0]
        assert load_config(None, {"dataset": spec, "backbone": spec}).data.dataset.startswith(
            f"{prefix}:{tmp_path}"
        )


def test_names_and_tags_stay_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ViT-B-16").mkdir()  # a folder named like an architecture, beside --weights
    config = load_config(None, {"dataset": "dtd", "backbone": "ViT-B-16", "weights": "openai"})
    assert (config.data.dataset, config.backbone.name, config.backbone.weights) == (
        "dtd",
        "ViT-B-16",
        "openai",
    )
    assert load_config(None, {"backbone": "random:tiny"}).backbone.name == "random:tiny"
    # a bare backbone folder without weights is a path
    assert load_config(None, {"backbone": "ViT-B-16"}).backbone.name == str(tmp_path / "ViT-B-16")
    again = absolute_paths(load_config(None, {"dataset": "folder:x"}))
    assert again.data.dataset == f"folder:{tmp_path / 'x'}"  # idempotent


def test_run_made_with_relative_paths_works_from_elsewhere(tmp_path, monkeypatch):
    work = tmp_path / "work"
    make_folder_dataset(work / "data")
    monkeypatch.chdir(work)
    config = quick_config(Path("data"), "dvp-cse", epochs=1, prm_warmup_epochs=0)
    from reprogram.engine.train import fit

    fit(config, "run")
    stored = load_checkpoint(work / "run")["config"]["data"]
    assert stored["dataset"] == f"folder:{work / 'data'}"
    assert all(os.path.isabs(p) for p in stored["descriptions"]) and stored["descriptions"]
    assert "folder:data" not in (work / "run" / "config.yaml").read_text()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from reprogram.engine.runs import evaluate_split, load_run

    run = load_run(work / "run")
    result = evaluate_split(run.model, run.config, "test", run.classnames)
    assert result.count == 12
    assert cli("eval", "--checkpoint", str(work / "run"), "--quiet") == 0
    assert torch.isfinite(torch.tensor(result.accuracy))


def test_configs_built_in_code_are_made_absolute_when_validated(tmp_path, monkeypatch):
    from reprogram.engine.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    config = (
        TrainConfig()
        .updated(method="ar", dataset="folder:data", descriptions=["d.json"])
        .validate()
    )
    assert config.data.dataset == f"folder:{tmp_path / 'data'}"
    assert config.data.descriptions == [str(tmp_path / "d.json")]
