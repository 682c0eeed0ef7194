"""Downstream tasks are written in the folder layout the `folder:` reader expects."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from reprogram.errors import ReprogramError
from reprogram.text.descriptions import read_description_file
from reprogram.toy import tasks


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _layout_ok(folder, task, counts, size):
    names = (folder / "classnames.txt").read_text().splitlines()
    assert names == task.classnames
    for split, count in counts.items():
        assert sorted(p.name for p in (folder / split).iterdir()) == sorted(names)
        for name in names:
            files = sorted((folder / split / name).glob("*.png"))
            assert len(files) == count
            with Image.open(files[0]) as image:
                assert image.size == (size, size) and image.mode == "RGB"
    for i in range(1, len(task.causes) + 1):
        data = read_description_file(folder / "descriptions" / f"cse_{i}.json")
        assert list(data) == names and all(len(v) >= 20 for v in data.values())
    for kind in ("des", "dist"):
        assert list(read_description_file(folder / "descriptions" / f"{kind}.json")) == names
    meta = json.loads((folder / "task.json").read_text())
    assert meta["name"] == task.name and meta["causes"] == list(task.causes) and meta["task"]
    assert meta["classes"] == names and meta["shift"]


def test_world_task_layout_and_determinism(tmp_path):
    task = tasks.get_task("invert")
    counts = {"train": 2, "val": 1, "test": 2}
    a = tasks.make_task(
        "invert", tmp_path / "a", image_size=32, shots=2, val_shots=1, test_per_class=2
    )
    _layout_ok(a, task, counts, 32)
    assert (a.stat().st_mode & 0o777) == (0o777 & ~_umask())
    assert ((a / "task.json").stat().st_mode & 0o777) == (0o666 & ~_umask())
    b = tasks.make_task(
        "invert", tmp_path / "b", image_size=32, shots=2, val_shots=1, test_per_class=2
    )
    for path in a.rglob("*.png"):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()


def test_more_shots_keep_the_test_set():
    few = tasks.generate_split("noise", "test", 2, image_size=16, seed=0)
    again = tasks.generate_split("noise", "test", 2, image_size=16, seed=0)
    assert np.array_equal(few[0], again[0])
    other_seed = tasks.generate_split("noise", "test", 2, image_size=16, seed=1)
    assert not np.array_equal(few[0], other_seed[0])


@pytest.mark.parametrize(
    "name", [n for n in tasks.task_names() if tasks.get_task(n).kind == "world"]
)
def test_every_world_task_generates(name):
    task = tasks.get_task(name)
    assert len(task.classes) >= 20
    assert all(len(c.factors) >= 2 for c in task.classes)  # classes depend on several factors
    images, labels = tasks.generate_split(name, "train", 1, image_size=24)
    assert images.shape == (len(task.classes), 24, 24, 3)
    assert labels.tolist() == list(range(len(task.classes)))


def test_digits_task(tmp_path):
    task = tasks.get_task("digits")
    folder = tasks.make_task(
        "digits", tmp_path / "digits", image_size=24, shots=3, val_shots=2, test_per_class=4
    )
    _layout_ok(folder, task, {"train": 3, "val": 2, "test": 4}, 24)


def test_fashion_mnist_task(tmp_path):
    try:
        tasks.fashion_mnist_dir()
    except ReprogramError:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    task = tasks.get_task("fashion-mnist")
    folder = tasks.make_task(
        "fashion-mnist", tmp_path / "fm", image_size=28, shots=2, val_shots=1, test_per_class=2
    )
    _layout_ok(folder, task, {"train": 2, "val": 1, "test": 2}, 28)


def test_existing_folder_is_not_overwritten_silently(tmp_path):
    folder = tmp_path / "t"
    tasks.make_task("tiny", folder, image_size=16, shots=1, val_shots=1, test_per_class=1)
    with pytest.raises(ReprogramError):
        tasks.make_task("tiny", folder, image_size=16, shots=1, val_shots=1, test_per_class=1)
    tasks.make_task(
        "tiny", folder, image_size=16, shots=2, val_shots=1, test_per_class=1, overwrite=True
    )
    assert len(list((folder / "train" / "red star").glob("*.png"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unknown_task():
    with pytest.raises(ReprogramError, match="unknown toy task"):
        tasks.get_task("nope")
