"""Real-image task sources: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) and scikit-learn's
digits, drawn from disjoint per-split pools and described in the world's words."""

from __future__ import annotations

import gzip
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from reprogram.errors import ReprogramError
from reprogram.toy.describe import ClassSpec

SPLITS = ("train", "val", "test")

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist", "/usr/share/dataset-fashion-mnist")


def fashion_mnist_dir() -> Path:
    """Folder of Debian's ``dataset-fashion-mnist`` (``$REPROGRAM_FASHION_MNIST`` first)."""
    candidates = [os.environ.get("REPROGRAM_FASHION_MNIST", "")] + list(FASHION_MNIST_DIRS)
    try:
        listed = subprocess.run(
            ["dpkg", "-L", "dataset-fashion-mnist"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.splitlines()
        candidates += [
            str(Path(p).parent) for p in listed if p.endswith("train-images-idx3-ubyte.gz")
        ]
    except (OSError, subprocess.SubprocessError):
        pass
    for folder in candidates:
        if folder and (Path(folder) / "train-images-idx3-ubyte.gz").is_file():
            return Path(folder)
    raise ReprogramError(
        "Fashion-MNIST not found: install Debian's package (apt-get install dataset-fashion-mnist) "
        "or set REPROGRAM_FASHION_MNIST to a folder with train-images-idx3-ubyte.gz etc."
    )


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _gray_to_rgb(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 N×h×w grayscale → uint8 N×size×size×3 (bilinear)."""
    from PIL import Image

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(resized)[..., None]
    return out


def pool_sampler(pools: dict[str, tuple[np.ndarray, np.ndarray]]) -> Callable:
    """Draw images of each class without replacement from per-split pools (images, labels)."""

    def draw(split: str, counts: dict[int, int], rng: np.random.Generator, size: int):
        images, labels = pools[split]
        chosen_images, chosen_labels = [], []
        for label, count in counts.items():
            index = np.nonzero(labels == label)[0]
            if count > len(index):
                raise ReprogramError(
                    f"only {len(index)} images of class {label} for split '{split}'"
                )
            pick = np.sort(rng.choice(index, size=count, replace=False))
            chosen_images.append(images[pick])
            chosen_labels.append(np.full(count, label))
        return _gray_to_rgb(np.concatenate(chosen_images), size), np.concatenate(chosen_labels)

    return draw


def fashion_pools(rng: np.random.Generator, shots: dict[str, int]) -> dict:
    folder = fashion_mnist_dir()
    train_x = _read_idx(folder / "train-images-idx3-ubyte.gz")
    train_y = _read_idx(folder / "train-labels-idx1-ubyte.gz")
    test_x = _read_idx(folder / "t10k-images-idx3-ubyte.gz")
    test_y = _read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    # train and val come from disjoint halves of the official training set
    order = rng.permutation(len(train_y))
    half = len(order) // 2
    return {
        "train": (train_x[order[:half]], train_y[order[:half]]),
        "val": (train_x[order[half:]], train_y[order[half:]]),
        "test": (test_x, test_y),
    }


def digits_pools(rng: np.random.Generator, shots: dict[str, int]) -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    # disjoint per-class pools: test first (its size fixed by shots['test']), then val, then train
    pools: dict[str, list] = {s: [[], []] for s in SPLITS}
    for label in range(10):
        index = rng.permutation(np.nonzero(labels == label)[0])
        need_test, need_val = shots["test"], shots["val"]
        if need_test + need_val + shots["train"] > len(index):
            raise ReprogramError(
                f"digits has {len(index)} images of class {label}; "
                f"{shots['train']}+{shots['val']}+{shots['test']} requested"
            )
        parts = {
            "test": index[:need_test],
            "val": index[need_test : need_test + need_val],
            "train": index[need_test + need_val :],
        }
        for split, part in parts.items():
            pools[split][0].append(images[part])
            pools[split][1].append(labels[part])
    return {s: (np.concatenate(x), np.concatenate(y)) for s, (x, y) in pools.items()}


def _n(*details: str, clauses: Sequence[str] = (), names: Sequence[str] = ()) -> dict:
    return {"details": tuple(details), "clauses": tuple(clauses), "names": tuple(names)}


_GRAY_ON_BLACK = {
    "color": _n(
        "one flat colour",
        clauses=("is white on a black background", "is a pale gray shape"),
        names=("white", "gray"),
    ),
    "background": _n(names=("black",)),
}

# Real classes described in the world's vocabulary (hand-written, loosely: what a model trained on
# the world could relate them to). Shape notes come first, then texture, then the shared colours.
FASHION_CLASSES = (
    (
        "t-shirt",
        _n(
            "four straight arms",
            "short arms",
            clauses=("looks like a plus sign with short arms",),
            names=("cross",),
        ),
        _n("a plain surface", names=("plain",)),
    ),
    (
        "trouser",
        _n("a long stem", "two long stems", clauses=("is tall and narrow like a long stem",)),
        _n("one flat colour", names=("solid",)),
    ),
    (
        "pullover",
        _n(
            "four straight arms",
            "arms of equal length",
            clauses=("looks like a plus sign",),
            names=("cross",),
        ),
        _n("stripes", names=("plain", "striped")),
    ),
    (
        "dress",
        _n(
            "three straight sides",
            "a point at the top",
            clauses=("points upwards like a pyramid",),
            names=("triangle",),
        ),
        _n("a plain surface", names=("plain",)),
    ),
    (
        "coat",
        _n(
            "four right-angled corners",
            "four straight arms",
            clauses=("is a box with four square corners",),
            names=("square", "cross"),
        ),
        _n("one flat colour", names=("solid",)),
    ),
    (
        "sandal",
        _n("a long flat shape", "straight edges", clauses=("is small and flat",)),
        _n(
            "stripes",
            "parallel lines",
            clauses=("is covered in straight stripes",),
            names=("striped",),
        ),
    ),
    (
        "shirt",
        _n("four straight arms", clauses=("looks like a plus sign",), names=("cross",)),
        _n(
            "a checkerboard pattern",
            "stripes",
            clauses=("has a checked pattern of squares",),
            names=("checkered", "striped"),
        ),
    ),
    (
        "sneaker",
        _n(
            "a long flat shape",
            "a curved outline",
            clauses=("is low and curved like a crescent",),
            names=("crescent",),
        ),
        _n("dots", names=("dotted", "plain")),
    ),
    (
        "bag",
        _n(
            "four equal sides",
            "a round hollow centre",
            clauses=("is a box with four square corners",),
            names=("square",),
        ),
        _n("a plain surface", names=("plain",)),
    ),
    (
        "ankle boot",
        _n(
            "a long stem",
            "a corner at the bottom",
            clauses=("is tall with a corner at the bottom",),
            names=("arrow",),
        ),
        _n("one flat colour", names=("solid",)),
    ),
)

DIGIT_CLASSES = (
    (
        "zero",
        _n(
            "a hole in the middle",
            "a round hollow centre",
            clauses=("is round and hollow in the middle",),
            names=("ring",),
        ),
    ),
    (
        "one",
        _n(
            "a long stem",
            "a straight shaft",
            clauses=("is tall and narrow like a long stem",),
            names=("arrow",),
        ),
    ),
    (
        "two",
        _n("a curved outline", "straight edges", clauses=("is curved on top with a flat bottom",)),
    ),
    (
        "three",
        _n(
            "a curved outline",
            "two thin pointed horns",
            clauses=("is curved like a new moon",),
            names=("crescent",),
        ),
    ),
    (
        "four",
        _n(
            "a vertical and a horizontal bar",
            "a triangular tip on a stem",
            clauses=("is made of two crossing bars",),
            names=("cross",),
        ),
    ),
    (
        "five",
        _n("a curved outline", "straight edges", clauses=("has a flat top and a round bottom",)),
    ),
    (
        "six",
        _n(
            "a hole in the middle",
            "a long stem",
            clauses=("is round at the bottom with a stem on top",),
        ),
    ),
    (
        "seven",
        _n(
            "a corner at the top",
            "a long stem",
            clauses=("has a flat top and a long stem",),
            names=("arrow",),
        ),
    ),
    (
        "eight",
        _n(
            "a hole in the middle",
            "two rounded lobes on top",
            clauses=("looks like two rings stacked on each other",),
            names=("ring",),
        ),
    ),
    (
        "nine",
        _n(
            "a hole in the middle",
            "a long stem",
            clauses=("is round at the top with a stem below",),
            names=("ring",),
        ),
    ),
)


def fashion_specs() -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(
            name, {"size": "large"}, notes={"shape": shape, "texture": texture, **_GRAY_ON_BLACK}
        )
        for name, shape, texture in FASHION_CLASSES
    )


def digit_specs() -> tuple[ClassSpec, ...]:
    texture = _n("one flat colour", "a soft blurry edge", names=("plain",))
    return tuple(
        ClassSpec(
            name, {"size": "large"}, notes={"shape": shape, "texture": texture, **_GRAY_ON_BLACK}
        )
        for name, shape in DIGIT_CLASSES
    )
