"""Dataset readers: the paper's 11 datasets in their published layouts, folders, CSV, bad input.

Every dataset is written here as a tiny copy of its real layout (split file, image folder, class
spellings of the original split files), with real image files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reprogram.data import (
    DATASETS,
    Splits,
    dataset_classnames,
    dataset_info,
    decode_center,
    decode_short_side,
    load_dataset,
)
from reprogram.errors import ReprogramError
from reprogram.text.packaged import packaged_bytes


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (12, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


# Per dataset: (image file relative to the image folder, raw class name in the split file,
# published class name). Raw names are spelled as the original split files spell them.
LAYOUTS: dict[str, list[tuple[str, str, str]]] = json.loads(
    (Path(__file__).parent / "fixtures" / "published_layouts.json").read_text(encoding="utf-8")
)


def make_published(root: Path, name: str) -> Path:
    """A tiny copy of a published dataset under ``root`` (one image per class and split)."""
    info = dataset_info(name)
    folder = root / info.folder
    images = folder / info.image_dir
    classnames = info.classnames
    data: dict[str, list] = {"train": [], "val": [], "test": []}
    for split_index, split in enumerate(data):
        for index, (rel, raw, published) in enumerate(LAYOUTS[name]):
            rel = rel.replace(".jpg", f"_{split}.jpg")
            write_image(images / rel, seed=index * 10 + split_index)
            data[split].append([rel, classnames.index(published), raw])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / info.split_file).write_text(json.dumps(data))
    return folder


def make_fgvc(root: Path) -> Path:
    folder = root / "fgvc_aircraft"
    variants = ["707-320", "F-16A/B", "Tu-134"]
    (folder / "images").mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(dataset_classnames("fgvc_aircraft")) + "\n")
    for split_index, split in enumerate(("train", "val", "test")):
        lines = []
        for index, variant in enumerate(variants):
            image_id = f"{1000000 + 10 * index + split_index}"
            write_image(folder / "images" / f"{image_id}.jpg", seed=index)
            lines.append(f"{image_id} {variant}")
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


# -- the paper's datasets -----------------------------------------------------------------------
def test_catalogue_lists_the_papers_datasets():
    assert sorted(DATASETS) == sorted(
        [
            "caltech101",
            "dtd",
            "eurosat",
            "fgvc_aircraft",
            "food101",
            "oxford_flowers",
            "oxford_pets",
            "stanford_cars",
            "sun397",
            "ucf101",
            "resisc45",
        ]
    )
    sizes = {name: len(dataset_classnames(name)) for name in DATASETS}
    assert sizes == {
        "caltech101": 100,
        "dtd": 47,
        "eurosat": 10,
        "fgvc_aircraft": 100,
        "food101": 101,
        "oxford_flowers": 102,
        "oxford_pets": 37,
        "stanford_cars": 196,
        "sun397": 397,
        "ucf101": 101,
        "resisc45": 45,
    }
    for name in DATASETS:
        assert len(set(dataset_classnames(name))) == sizes[name]
    assert dataset_info("fgvc").name == "fgvc_aircraft"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_published_layout(tmp_path, name):
    folder = make_published(tmp_path, name)
    for root in (tmp_path, folder):  # --root is the folder holding the dataset, or the dataset
        splits = load_dataset(name, root)
        assert isinstance(splits, Splits)
        assert splits.classnames == dataset_classnames(name)
        expected = [dataset_classnames(name).index(published) for _, _, published in LAYOUTS[name]]
        for split in ("train", "val", "test"):
            samples = splits.split(split)
            assert [s.label for s in samples] == expected
            assert all(Path(s.path).is_file() for s in samples)
    decoded = decode_center(splits.test, 8)
    assert decoded.pixels.shape == (len(LAYOUTS[name]), 3, 8, 8)


def test_resisc45_blackvip_layout(tmp_path):
    info = dataset_info("resisc45")
    assert info.split_file == "split_mlai_Resisc45.json" and info.image_dir == "NWPU-RESISC45"
    folder = make_published(tmp_path, "resisc45")
    assert (folder / "split_mlai_Resisc45.json").is_file()
    assert load_dataset("resisc", tmp_path).test[0].path.startswith(str(folder / "NWPU-RESISC45"))


def test_fgvc_aircraft_layout(tmp_path):
    make_fgvc(tmp_path)
    splits = load_dataset("fgvc_aircraft", tmp_path)
    names = dataset_classnames("fgvc_aircraft")
    assert splits.classnames == names
    for split in ("train", "val", "test"):
        assert [names[s.label] for s in splits.split(split)] == ["707-320", "F-16A/B", "Tu-134"]
        assert all(Path(s.path).is_file() for s in splits.split(split))
    assert load_dataset("fgvc", tmp_path / "fgvc_aircraft").num_classes == 100


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_classnames_match_published_descriptions(name):
    key = dataset_info(name).description_key
    files = [f"causes/{key}_cse_{n}.json" for n in (1, 2, 3)]
    files += [f"attributes/{key}_{kind}.json" for kind in ("des", "dist")]
    for file in files:
        published = json.loads(packaged_bytes(file))  # the packaged copies of the releases
        missing = [c for c in dataset_classnames(name) if c not in published]
        assert not missing, f"{file}: {missing[:5]}"


# -- bad input in the published layouts ---------------------------------------------------------
def test_missing_split_file_names_it(tmp_path):
    with pytest.raises(ReprogramError, match=r"split_zhou_DescribableTextures\.json"):
        load_dataset("dtd", tmp_path)
    make_fgvc(tmp_path)
    (tmp_path / "fgvc_aircraft" / "images_variant_val.txt").unlink()
    with pytest.raises(ReprogramError, match=r"images_variant_val\.txt"):
        load_dataset("fgvc_aircraft", tmp_path)
    with pytest.raises(ReprogramError, match="needs --root"):
        load_dataset("dtd")
    with pytest.raises(ReprogramError, match="unknown dataset 'imagenet21k'"):
        load_dataset("imagenet21k", tmp_path)


def edit_split(folder: Path, name: str, edit) -> None:
    path = folder / dataset_info(name).split_file
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["test"][1].__setitem__(2, "wavy-ish"),
            r"split_zhou_DescribableTextures\.json: test\[1\] .*'wavy-ish'",
        ),
        (lambda d: d["val"][0].__setitem__(1, 47), r"val\[0\] .*label 47, outside the 47 classes"),
        (lambda d: d.pop("val"), "no 'val' list"),
        (
            lambda d: d["train"].append(["x.jpg", 0]),
            r"train\[2\] is not \[path, label, classname\]",
        ),
    ],
)
def test_bad_published_entries_name_file_and_entry(tmp_path, edit, message):
    folder = make_published(tmp_path, "dtd")
    edit_split(folder, "dtd", edit)
    with pytest.raises(ReprogramError, match=message):
        load_dataset("dtd", tmp_path)


def test_bad_fgvc_class(tmp_path):
    folder = make_fgvc(tmp_path)
    with (folder / "images_variant_test.txt").open("a") as handle:
        handle.write("1234567 Sopwith Camel\n")
    with pytest.raises(
        ReprogramError, match=r"images_variant_test\.txt:4: unknown class 'Sopwith Camel'"
    ):
        load_dataset("fgvc_aircraft", tmp_path)


# -- undecodable images -------------------------------------------------------------------------
def test_undecodable_image_is_named_or_skipped(tmp_path):
    folder = make_published(tmp_path, "dtd")
    bad = folder / "images" / "banded" / "banded_0002_test.jpg"
    bad.write_bytes(b"not a jpeg at all")
    test = load_dataset("dtd", tmp_path).test
    for decode in (decode_center, decode_short_side):
        with pytest.raises(ReprogramError, match=r"cannot decode image .*banded_0002_test\.jpg"):
            decode(test, 8)
        decoded = decode(test, 8, skip_bad=True)
        assert decoded.skipped == [str(bad)] and len(decoded) == 1
        assert decoded.labels.tolist() == [test[1].label]
    # the decoded-image cache made while skipping does not hide the bad file from a strict caller
    with pytest.raises(ReprogramError, match="cannot decode image"):
        decode_center(test, 8)
    bad.unlink()
    with pytest.raises(ReprogramError, match=r"image not found: .*banded_0002_test\.jpg"):
        decode_center(test, 8)


def test_decode_center_cache_is_reused(tmp_path):
    folder = make_published(tmp_path, "dtd")
    test = load_dataset("dtd", tmp_path).test
    first = decode_center(test, 10)
    second = decode_center(test, 10)
    assert np.array_equal(first.pixels.numpy(), second.pixels.numpy())
    assert first.labels.tolist() == second.labels.tolist() == [s.label for s in test]
    write_image(folder / "images" / "banded" / "banded_0002_test.jpg", seed=99, size=(20, 20))
    third = decode_center(test, 10)  # the file changed: decoded again
    assert not np.array_equal(first.pixels[0].numpy(), third.pixels[0].numpy())


# -- folder reader ------------------------------------------------------------------------------
def make_folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                write_image(root / split / name / f"{i}.png", seed=i)
    return root


def test_folder_with_splits(tmp_path):
    root = make_folder(
        tmp_path / "ds",
        {
            "train": {"cat": 3, "dog": 2},
            "val": {"cat": 1, "dog": 1},
            "test": {"cat": 2, "dog": 1},
        },
    )
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    splits = load_dataset(f"folder:{root}")
    assert splits.classnames == ["cat", "dog"]
    assert [s.label for s in splits.train] == [0, 0, 0, 1, 1]
    assert (len(splits.val), len(splits.test)) == (2, 3)
    (root / "classnames.txt").write_text("dog\ncat\n")  # fixes the label order
    splits = load_dataset(f"folder:{root}")
    assert splits.classnames == ["dog", "cat"]
    assert [s.label for s in splits.train] == [1, 1, 1, 0, 0]


def test_folder_without_val_or_splits(tmp_path):
    root = make_folder(tmp_path / "a", {"train": {"x": 10, "y": 10}, "test": {"x": 2, "y": 2}})
    splits = load_dataset(f"folder:{root}")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, 4)
    flat = make_folder(tmp_path / "b", {".": {"x": 10, "y": 5}})
    (flat / "descriptions").mkdir()  # a folder dataset's description files, not a class
    (flat / "descriptions" / "des.json").write_text("{}")
    splits = load_dataset(f"folder:{flat}")
    assert splits.classnames == ["x", "y"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 3)
    every = {s.path for s in splits.train + splits.val + splits.test}
    assert len(every) == 15
    again = load_dataset(f"folder:{flat}")
    assert again.train == splits.train  # the seeded split is deterministic
    assert load_dataset(f"folder:{flat}", split_seed=1).test != splits.test


def test_folder_bad_input(tmp_path):
    with pytest.raises(ReprogramError, match="dataset folder not found"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    root = make_folder(tmp_path / "ds", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1}})
    (root / "train" / "emu").mkdir()
    with pytest.raises(
        ReprogramError, match=r"ds/train/<class>/: 1 class\(es\) with no training image: emu"
    ):
        load_dataset(f"folder:{root}")
    (root / "train" / "emu").rmdir()
    (root / "classnames.txt").write_text("cat\n")
    with pytest.raises(ReprogramError, match="classnames.txt: class folders not listed: dog"):
        load_dataset(f"folder:{root}")
    (root / "classnames.txt").write_text("cat\ndog\nowl\n")
    with pytest.raises(ReprogramError, match="no training image: owl"):
        load_dataset(f"folder:{root}")
    no_test = make_folder(tmp_path / "nt", {"train": {"cat": 2}})
    with pytest.raises(ReprogramError, match="no test/ folder"):
        load_dataset(f"folder:{no_test}")


# -- CSV reader ---------------------------------------------------------------------------------
def test_csv_with_names_and_splits(tmp_path):
    for i in range(6):
        write_image(tmp_path / "img" / f"{i}.png", seed=i)
    absolute = write_image(tmp_path / "elsewhere" / "abs.png")
    rows = [
        "path, label ,split",
        "img/0.png,cat,train",
        "img/1.png,dog,train",
        "img/2.png,cat,val",
        "img/3.png,dog,test",
        f"{absolute},dog,TEST",
        "img/5.png,cat,",
    ]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    splits = load_dataset(f"csv:{tmp_path / 'data.csv'}")
    assert splits.classnames == ["cat", "dog"]
    assert splits.train[0].path == str(tmp_path / "img" / "0.png")
    assert [s.path for s in splits.test][-1] == str(absolute)
    assert len(splits.train + splits.val + splits.test) == 6  # the unsplit row is split too


def test_csv_with_integer_labels(tmp_path):
    for i in range(4):
        write_image(tmp_path / f"{i}.png", seed=i)
    rows = ["path,label", "0.png,0", "1.png,1", "2.png,1", "3.png,0"]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    splits = load_dataset(f"csv:{tmp_path / 'd.csv'}")
    assert splits.classnames == ["0", "1"]
    (tmp_path / "classnames.txt").write_text("zebra\nyak\n")
    splits = load_dataset(f"csv:{tmp_path / 'd.csv'}")
    assert splits.classnames == ["zebra", "yak"]
    assert sorted(s.label for s in splits.train + splits.val + splits.test) == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["path,label", "a.png,cat", "b.png,"], r"d\.csv:3: label '' is not in the class list"),
        (["path,label,split", "a.png,0,train", "b.png,1,holdout"], r"d\.csv:3: split 'holdout'"),
        (["file,class", "a.png,0"], "expected a header with columns path,label"),
        (["path,label", ",0"], r"d\.csv:2: empty path"),
        (["path,label"], "no rows"),
        (["path,label,split", "a.png,0,train", "b.png,1,test"], "no training image: 1"),
    ],
)
def test_csv_bad_input(tmp_path, rows, message):
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ReprogramError, match=message):
        load_dataset(f"csv:{tmp_path / 'd.csv'}")


def test_csv_label_outside_classnames_file(tmp_path):
    (tmp_path / "classnames.txt").write_text("cat\ndog\n")
    (tmp_path / "d.csv").write_text("path,label\na.png,cat\nb.png,owl\n")
    with pytest.raises(ReprogramError, match=r"d\.csv:3: label 'owl' is not in the class list"):
        load_dataset(f"csv:{tmp_path / 'd.csv'}")
    (tmp_path / "d.csv").write_text("path,label\na.png,0\nb.png,2\n")
    with pytest.raises(ReprogramError, match=r"d\.csv:3: label '2' is not in the class list"):
        load_dataset(f"csv:{tmp_path / 'd.csv'}")
    with pytest.raises(ReprogramError, match="CSV file not found"):
        load_dataset(f"csv:{tmp_path / 'missing.csv'}")


def test_published_split_file_missing_classes_is_noted(tmp_path):
    make_published(tmp_path, "eurosat")
    splits = load_dataset("eurosat", tmp_path)
    present = {s.label for s in splits.train}
    missing = len(splits.classnames) - len(present)
    assert missing > 0
    assert any(f"{missing} class(es) with no training image" in note for note in splits.notes)
    make_fgvc(tmp_path)
    fgvc = load_dataset("fgvc_aircraft", tmp_path)
    assert any("images_variant_train.txt" in note for note in fgvc.notes)
