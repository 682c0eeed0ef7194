"""Real-image task sources: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) and scikit-learn's
digits, drawn from disjoint per-split pools and described in the world's words."""

from __future__ import annotations

import gzip
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from reprogram.errors import ReprogramError
from reprogram.toy.describe import ClassSpec
from reprogram.toy.vocabulary import read_toy_asset

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


# Real classes described in the world's vocabulary (hand-written, loosely: what a model trained on
# the world could relate them to), per cause in the PHRASES schema: assets/toy/real_classes.json.
_REAL = read_toy_asset("real_classes.json")
_GRAY_ON_BLACK = _REAL["gray_on_black"]  # the colour and background notes every real class shares


def _spec(name: str, shape: dict, texture: dict) -> ClassSpec:
    notes = {"shape": shape, "texture": texture, **_GRAY_ON_BLACK}
    return ClassSpec(name, {"size": "large"}, notes=notes)


def fashion_specs() -> tuple[ClassSpec, ...]:
    return tuple(_spec(c["name"], c["shape"], c["texture"]) for c in _REAL["fashion"])


def digit_specs() -> tuple[ClassSpec, ...]:
    return tuple(_spec(c["name"], c["shape"], _REAL["digit_texture"]) for c in _REAL["digits"])
