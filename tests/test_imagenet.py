"""ImageNet and its shifted test sets in CoOp's layouts: class lists, repeated names, mappings."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reprogram.data import dataset_info, load_dataset
from reprogram.data.imagenet import text_classnames, unique_names
from reprogram.errors import ReprogramError
from reprogram.text.packaged import packaged_descriptions

# a 6-class stand-in for CoOp's classnames.txt, with its two repeated names
CLASSES = [
    ("n01440764", "tench"),
    ("n03773504", "missile"),
    ("n04008634", "missile"),
    ("n04355933", "sunglasses"),
    ("n04356056", "sunglasses"),
    ("n09999999", "goldfish"),
]


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (100, 50, 20)).save(path)


def _classnames(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in CLASSES))


def make_imagenet(root: Path, per_class: int = 5) -> Path:
    _classnames(root / "imagenet")
    for wnid, _ in CLASSES:
        for i in range(per_class):
            _image(root / "imagenet" / "images" / "train" / wnid / f"{i}.JPEG")
        _image(root / "imagenet" / "images" / "val" / wnid / "v.JPEG")
    return root


def test_imagenet_repeated_names_are_two_classes_sharing_one_description_entry(tmp_path):
    splits = load_dataset("imagenet", make_imagenet(tmp_path))
    assert splits.classnames == [
        "tench",
        "missile",
        "missile (2)",
        "sunglasses",
        "sunglasses (2)",
        "goldfish",
    ]
    assert text_classnames(splits.classnames) == [n for _, n in CLASSES]
    assert len(splits.test) == 6 and sorted(s.label for s in splits.test) == list(range(6))
    # 20 % of each class's 5 train images held out for validation, disjoint from train
    assert len(splits.val) == 6 and len(splits.train) == 24
    assert not {s.path for s in splits.val} & {s.path for s in splits.train}
    assert splits.parent_classes is None
    des = packaged_descriptions("imagenet", "des")
    assert len(des) == 998  # the published file: one entry per spelling
    for name in text_classnames(splits.classnames)[:5]:
        assert des[name]


def test_packaged_imagenet_list_has_1000_distinct_classes():
    names = dataset_info("imagenet").classnames
    assert len(names) == 1000 == len(set(names))
    assert names[657] == "missile" and names[744] == "missile (2)"
    assert names[836] == "sunglasses" and names[837] == "sunglasses (2)"
    des = packaged_descriptions("imagenet", "des")
    assert set(text_classnames(names)) == set(des)


def test_unique_names_numbers_every_repeat():
    assert unique_names(["crane", "crane", "a", "crane"]) == [
        "crane",
        "crane (2)",
        "a",
        "crane (3)",
    ]
    # a name that merely ends in "(2)" is left alone
    assert text_classnames(["x (2)", "y"]) == ["x (2)", "y"]


@pytest.mark.parametrize(
    ("name", "folder", "image_dir"),
    [
        ("imagenet_a", "imagenet-adversarial", "imagenet-a"),
        ("imagenet_r", "imagenet-rendition", "imagenet-r"),
        ("imagenet_sketch", "imagenet-sketch", "images"),
    ],
)
def test_wnid_targets_restrict_classes_and_map_to_imagenet(tmp_path, name, folder, image_dir):
    _classnames(tmp_path / "imagenet")  # the target folder has none: imagenet/'s is used
    present = ["n04355933", "n01440764", "n04008634"]  # a subset, as A and R hold 200 of 1,000
    for wnid in present:
        _image(tmp_path / folder / image_dir / wnid / "a.jpg")
        _image(tmp_path / folder / image_dir / wnid / "b.jpg")
    (tmp_path / folder / image_dir / "README.txt").write_text("ignored")
    splits = load_dataset(name, tmp_path)
    assert splits.classnames == ["tench", "missile (2)", "sunglasses"]  # sorted wnids (CoOp)
    assert splits.parent_classes == [0, 2, 3]
    assert not splits.train and not splits.val and len(splits.test) == 6
    assert sorted({s.label for s in splits.test}) == [0, 1, 2]
    assert dataset_info(name).eval_only


def test_imagenet_v2_folders_are_integer_labels(tmp_path):
    _classnames(tmp_path / "imagenetv2")
    images = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    for label in (0, 4):
        _image(images / str(label) / "x.jpeg")
    splits = load_dataset("imagenet_v2", tmp_path)
    assert splits.num_classes == 6 and splits.parent_classes == list(range(6))
    assert sorted(s.label for s in splits.test) == [0, 4]
    _image(images / "6" / "x.jpeg")
    with pytest.raises(ReprogramError, match="not a label 0..5"):
        load_dataset("imagenet_v2", tmp_path)


def test_unlisted_folder_and_missing_list_fail_with_the_path(tmp_path):
    with pytest.raises(ReprogramError, match="image folder not found"):
        load_dataset("imagenet_a", tmp_path)
    _image(tmp_path / "imagenet-adversarial" / "imagenet-a" / "n00000001" / "a.jpg")
    with pytest.raises(ReprogramError, match="classnames.txt not found"):
        load_dataset("imagenet_a", tmp_path)
    _classnames(tmp_path / "imagenet-adversarial")
    with pytest.raises(ReprogramError, match="n00000001.*not listed"):
        load_dataset("imagenet_a", tmp_path)


def test_training_on_a_test_set_only_target_is_refused():
    from reprogram.engine.config import load_config
    from reprogram.engine.setup import prepare

    config = load_config(None, {"method": "vp", "dataset": "imagenet_r", "root": "."})
    with pytest.raises(ReprogramError, match="imagenet_r is a test set only"):
        prepare(config)


def test_imagenet_run_uses_packaged_attributes_once_per_spelling(tmp_path):
    from reprogram.engine.config import load_config
    from reprogram.engine.setup import build_backbone, build_model, load_data

    values = {"method": "attrvr", "dataset": "imagenet", "root": str(make_imagenet(tmp_path))}
    config = load_config(None, {**values, "backbone": "random:tiny", "m": 3, "shots": 2})
    splits = load_data(config)
    model = build_model(config, build_backbone(config), splits.classnames)
    assert config.data.descriptions == [
        "packaged:attributes/imagenet_des.json",
        "packaged:attributes/imagenet_dist.json",
    ]
    texts = model.bank.texts
    assert len(texts) == 6 and texts[1] == texts[2] and texts[3] == texts[4]
    assert texts[0] != texts[1]
    des = packaged_descriptions("imagenet", "des")
    assert set(texts[1][:3]) <= {s.strip() for s in des["missile"]}
