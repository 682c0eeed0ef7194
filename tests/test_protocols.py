"""The evaluation protocols: base-to-novel, cross-dataset transfer, domain generalisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import cli, make_folder_dataset, quick_config
from PIL import Image

from reprogram.data import decode_center, load_dataset
from reprogram.data.readers import Sample, Splits
from reprogram.data.subsets import (
    base_novel_labels,
    restrict_classes,
    subsample_classes,
    subset_mapping,
)
from reprogram.engine.evaluate import evaluate, predict_logits
from reprogram.engine.runs import load_run
from reprogram.engine.setup import build_model, load_data
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError
from reprogram.protocols.base_to_novel import harmonic_mean, run_base_to_novel
from reprogram.protocols.transfer import (
    evaluate_transfer,
    nearest_centroid_groups,
    transfer_model,
)

FIVE = ("red disc", "green square", "blue stripes", "cyan ring", "pink star")
OTHER = ("violet moon", "orange cross")


def tiny(root: Path, classes, seed: int = 0) -> Path:
    counts = (("train", 3), ("val", 1), ("test", 2))
    make_folder_dataset(root, classes=classes, counts=counts, size=(20, 24), seed=seed)
    (root / "classnames.txt").write_text("\n".join(classes) + "\n")  # labels in this order
    return root


def config(dataset: Path, method: str, **overrides):
    values = dict(epochs=2, shots=2, batch_size=4, m=4, prm_top_k=2, attr_top_k=2)
    return quick_config(dataset, method, **{**values, **overrides})


@pytest.fixture(scope="module")
def five(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("five") / "data", FIVE)


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("other") / "data", OTHER, seed=3)


def test_class_halves_follow_cocoop():
    assert base_novel_labels(5) == ([0, 1, 2], [3, 4])  # ceil(C / 2) base classes
    assert base_novel_labels(4) == ([0, 1], [2, 3])
    assert base_novel_labels(101)[0] == list(range(51))
    samples = [Sample(f"{c}-{i}", c) for c in range(5) for i in range(2)]
    splits = Splits("x", list("abcde"), samples, samples[:5], samples)
    novel = subsample_classes(splits, "novel")
    assert novel.classnames == ["d", "e"]
    assert [(s.path, s.label) for s in novel.test] == [
        ("3-0", 0),
        ("3-1", 0),
        ("4-0", 1),
        ("4-1", 1),
    ]
    assert [s.label for s in subsample_classes(splits, "base").train] == [0, 0, 1, 1, 2, 2]
    assert subsample_classes(splits, "all") is splits
    picked = restrict_classes(splits, [4, 1])
    assert picked.classnames == ["e", "b"] and {s.path: s.label for s in picked.test} == {
        "4-0": 0,
        "4-1": 0,
        "1-0": 1,
        "1-1": 1,
    }


def test_base_split_is_the_base_part_of_the_full_few_shot_draw(five):
    full = load_data(config(five, "ar"))
    base = load_data(config(five, "ar", subsample_classes="base"))
    assert base.classnames == list(FIVE[:3])
    expected = [(s.path, s.label) for s in full.train if s.label < 3]
    assert [(s.path, s.label) for s in base.train] == expected
    assert {s.label for s in base.val} == {0, 1, 2} and {s.label for s in base.test} == {0, 1, 2}


def test_subset_mapping_by_name_and_occurrence():
    source = ["tench", "missile", "goldfish", "missile"]
    assert subset_mapping(source, ["goldfish", "tench"], "t") == [2, 0]
    assert subset_mapping(source, ["missile", "missile"], "t") == [1, 3]
    with pytest.raises(ReprogramError, match="not classes of the run"):
        subset_mapping(source, ["shark"], "t")


def test_nearest_centroid_assignment():
    trained = torch.tensor([[[1.0, 0.0], [0.9, 0.1]], [[0.0, 1.0], [0.1, 0.9]]])
    groups = torch.tensor([[0, 0], [1, 1]])
    new = torch.tensor([[[0.2, 0.8]], [[0.7, 0.3]], [[-1.0, 5.0]]])
    assert nearest_centroid_groups(trained, groups, new).tolist() == [[1], [0], [1]]


@pytest.mark.numeric
@pytest.mark.parametrize("method", ["dvp-cse", "dvp-cls"])
def test_base_to_novel_end_to_end(tmp_path, five, method):
    out = tmp_path / "b2n"
    result = run_base_to_novel(config(five, method, clusters=2), out)
    on_disk = json.loads((out / "base2novel.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    run_results = json.loads((out / "results.json").read_text())
    assert result["base_accuracy"] == run_results["test_accuracy"]
    assert run_results["classnames"] == list(FIVE[:3]) and run_results["test_count"] == 6
    assert result["novel_classnames"] == list(FIVE[3:]) and result["novel_count"] == 4
    b, n = result["base_accuracy"], result["novel_accuracy"]
    assert result["harmonic_mean"] == pytest.approx(harmonic_mean(b, n))
    assert "| base | novel | HM |" in (out / "base2novel.md").read_text()

    # the novel model: trained prompts, uniform PRM over each novel class's own texts
    run = load_run(out)
    model = transfer_model(run, list(FIVE[3:]), f"folder:{five}")
    weights = model.aggregator.prm.weights
    assert weights.shape == (2, model.bank.per_class)
    assert torch.equal(weights, torch.full_like(weights, 1 / model.bank.per_class))
    if method == "dvp-cse":  # 2 shots x top-2 over 12 texts: the base PRM cannot be uniform
        trained = run.model.aggregator.prm.weights
        assert not torch.equal(trained, torch.full_like(trained, 1 / trained.shape[1]))
    assert torch.equal(model.prompts.theta, run.model.prompts.theta)
    assert model.bank.group_names == run.model.bank.group_names
    for name, texts in zip(FIVE[3:], model.bank.texts, strict=True):
        assert all(name in text for text in texts)  # each novel class's own descriptions
    if method == "dvp-cls":
        expected = nearest_centroid_groups(
            run.model.text_features, run.model.groups, model.text_features
        )
        assert torch.equal(model.groups.cpu(), expected)
    # novel accuracy recomputed directly on the novel test images
    novel = subsample_classes(load_dataset(f"folder:{five}"), "novel")
    images = decode_center(novel.test, model.image_size)
    direct = evaluate(model, images, 8, torch.float32)
    assert n == pytest.approx(direct.accuracy)
    # the finished run is this method's: another method's base-to-novel is refused there
    with pytest.raises(ReprogramError, match=rf"method={method} \(asked: ar\)"):
        run_base_to_novel(config(five, "ar"), out)
    assert json.loads((out / "base2novel.json").read_text()) == on_disk


@pytest.mark.numeric
def test_cross_dataset_transfer_equals_a_direct_computation(tmp_path, five, other):
    run_dir = tmp_path / "run"
    fit(config(five, "dvp-cse"), run_dir)
    result = evaluate_transfer(run_dir, f"folder:{other}")
    (row,) = result["targets"]
    assert row["mode"] == "new classes" and row["prm"] == "uniform" and row["num_classes"] == 2
    # directly: a fresh model for the other classes (same method, seed, defaults) + the prompts
    run = load_run(run_dir)
    fresh_config = config(other, "dvp-cse")
    fresh = build_model(fresh_config, run.backbone, list(OTHER))
    fresh.prompts.theta.data.copy_(run.model.prompts.theta)
    images = decode_center(load_dataset(f"folder:{other}").test, fresh.image_size)
    direct = evaluate(fresh.eval(), images, 8, torch.float32)
    assert row["accuracy"] == pytest.approx(direct.accuracy) and row["count"] == 4
    assert list(row["per_class_accuracy"].values()) == pytest.approx(direct.per_class)
    assert (
        result["source"]["accuracy"]
        == json.loads((run_dir / "results.json").read_text())["test_accuracy"]
    )


def test_transfer_with_wrong_number_of_cause_files_fails(tmp_path, five, other):
    run_dir = tmp_path / "run"
    fit(config(five, "dvp-cse"), run_dir)
    one = str(other / "descriptions" / "cse_1.json")
    with pytest.raises(ReprogramError, match="one description file per trained prompt"):
        evaluate_transfer(run_dir, f"folder:{other}", descriptions=[one])


def _subset_target(root: Path, source: Path, names: list[str]) -> Path:
    """A test-only folder target holding some of the source's classes, in its own order."""
    for name in names:
        (root / "train" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / "train" / name / "x.png")
        (root / "test" / name).mkdir(parents=True)
        for image in sorted((source / "test" / name).iterdir()):
            (root / "test" / name / image.name).write_bytes(image.read_bytes())
    (root / "classnames.txt").write_text("\n".join(names) + "\n")
    return root


def test_domain_generalisation_targets_in_one_call(tmp_path, five):
    run_dir = tmp_path / "run"
    fit(config(five, "dvp-cls", clusters=2), run_dir)
    names = [FIVE[4], FIVE[1], FIVE[3]]  # a 3-class subset, in the target's own order
    subset = _subset_target(tmp_path / "subset", five, names)
    result = evaluate_transfer(run_dir, [f"folder:{five}", f"folder:{subset}"])
    same, sub = result["targets"]
    run = load_run(run_dir)
    assert same["mode"] == "same classes" and same["prm"] == "trained"
    assert same["accuracy"] == pytest.approx(
        json.loads((run_dir / "results.json").read_text())["test_accuracy"]
    )
    assert sub["mode"] == "class subset" and sub["num_classes"] == 3 and sub["prm"] == "trained"
    # directly: the run's logits over the subset's columns, mapped by name
    target = load_dataset(f"folder:{subset}")
    assert target.classnames == names
    images = decode_center(target.test, run.model.image_size)
    logits = predict_logits(run.model, images, 8, torch.float32)[:, [4, 1, 3]]
    expected = (logits.argmax(dim=1) == images.labels).float().mean().item()
    assert sub["accuracy"] == pytest.approx(expected) and sub["count"] == 6
    assert result["mean_target_accuracy"] == pytest.approx((same["accuracy"] + sub["accuracy"]) / 2)


def test_imagenet_targets_map_to_the_run_classes(tmp_path):
    """A 6-class ImageNet, a 3-class ImageNet-A and a full ImageNet-Sketch, in CoOp's layouts."""
    classes = [
        ("n01440764", "tench"),
        ("n01443537", "goldfish"),
        ("n01484850", "great white shark"),
        ("n03773504", "missile"),
        ("n04008634", "missile"),
        ("n04355933", "sunglasses"),
    ]  # wnid-sorted, as CoOp's list
    listing = "".join(f"{w} {n}\n" for w, n in classes)
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "classnames.txt").write_text(listing)

    def image(path: Path, shade: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (shade, 255 - shade, 40)).save(path)

    for label, (wnid, _) in enumerate(classes):
        for i in range(3):
            image(tmp_path / "imagenet/images/train" / wnid / f"{i}.JPEG", 40 * label + i)
        image(tmp_path / "imagenet/images/val" / wnid / "v.JPEG", 40 * label)
        image(tmp_path / "imagenet-sketch/images" / wnid / "s.JPEG", 40 * label + 5)
    present = ["n04355933", "n01440764", "n04008634"]
    for wnid in present:
        image(tmp_path / "imagenet-adversarial/imagenet-a" / wnid / "a.jpg", 99)
    cfg = quick_config(tmp_path, "ar", root=str(tmp_path), epochs=1, shots=2)
    cfg.data.dataset = "imagenet"
    run_dir = tmp_path / "run"
    fit(cfg, run_dir)
    out = tmp_path / "dg.json"
    code = cli(
        "eval",
        "--checkpoint",
        str(run_dir),
        "--targets",
        "imagenet_sketch,imagenet_a",
        "--root",
        str(tmp_path),
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 0
    result = json.loads(out.read_text())
    sketch, adversarial = result["targets"]
    assert sketch["mode"] == "same classes" and sketch["count"] == 6
    assert adversarial["mode"] == "class subset" and adversarial["num_classes"] == 3
    target = load_dataset("imagenet_a", tmp_path)
    run = load_run(run_dir)
    columns = subset_mapping(run.classnames, target.classnames, "imagenet_a")
    assert columns == target.parent_classes == [0, 4, 5]  # sorted wnids, CoOp's order
    images = decode_center(target.test, run.model.image_size)
    logits = predict_logits(run.model, images, 8, torch.float32)[:, columns]
    expected = (logits.argmax(dim=1) == images.labels).float().mean().item()
    assert adversarial["accuracy"] == pytest.approx(expected)
    assert "| imagenet_a | 3 | class subset |" in out.with_suffix(".md").read_text()


def test_cli_base2novel_seeds_and_cross_dataset(tmp_path, five, other, capsys):
    out = tmp_path / "b2n"
    args = ["--dataset", f"folder:{five}", "--backbone", "random:tiny", "--epochs", "1"]
    small = ["--shots", "2", "--batch-size", "4", "--set", "m=4", "--set", "prm_top_k=2"]
    small += ["--set", "prm_warmup_epochs=0"]
    seeds = ["--seeds", "1", "2", "--out", str(out), "-q"]
    assert cli("base2novel", "--method", "dvp-cse", *args, *small, *seeds) == 0
    table = capsys.readouterr().out
    summary = json.loads((out / "base2novel.json").read_text())
    runs = [json.loads((out / f"seed-{s}" / "base2novel.json").read_text()) for s in (1, 2)]
    assert [r["seed"] for r in runs] == [1, 2]
    hm = [100 * r["harmonic_mean"] for r in runs]
    assert summary["harmonic_mean"]["mean"] == pytest.approx(sum(hm) / 2)
    assert f"{summary['harmonic_mean']['mean']:.1f} ± " in table
    # a base run evaluated on another dataset: a results file beside it
    run = out / "seed-1"
    assert cli("eval", "--checkpoint", str(run), "--dataset", f"folder:{other}", "-q") == 0
    written = json.loads((run / "eval-data.json").read_text())
    assert written["targets"][0]["mode"] == "new classes"
    assert "new classes" in capsys.readouterr().out


def test_base2novel_refuses_repeated_seeds_before_training(tmp_path, five, capsys):
    out = tmp_path / "b2n"
    args = ["--dataset", f"folder:{five}", "--backbone", "random:tiny", "--epochs", "2"]
    assert cli("base2novel", "--method", "ar", *args, "--seeds", "2", "2", "--out", str(out)) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --seeds: seed 2 is given twice")
    assert not out.exists()


def test_base2novel_checks_novel_descriptions_before_training(tmp_path, five, capsys):
    files = []
    for name in ("cse_1", "cse_2", "cse_3"):
        texts = json.loads((five / "descriptions" / f"{name}.json").read_text())
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps({c: texts[c] for c in FIVE[:3]}))  # base classes only
    out = tmp_path / "b2n"
    args = ["--dataset", f"folder:{five}", "--backbone", "random:tiny", "--epochs", "2"]
    args += ["--descriptions", *map(str, files), "--out", str(out)]
    assert cli("base2novel", "--method", "dvp-cse", *args) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: novel classes: ") and "cse_1.json" in line
    assert "'cyan ring', 'pink star'" in line
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.jsonl").exists()
