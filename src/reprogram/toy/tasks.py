"""Downstream tasks for reprogramming the toy CLIP, written to disk in the ``folder:`` layout.

``make_task(name, out_dir)`` writes::

    out_dir/train/<class>/<nnnnn>.png   (shots per class)
    out_dir/val/<class>/<nnnnn>.png
    out_dir/test/<class>/<nnnnn>.png
    out_dir/classnames.txt              (label order, one per line; folder name = class name)
    out_dir/descriptions/cse_1.json … cse_<v>.json   (one per cause, in task.json's order)
    out_dir/descriptions/des.json, dist.json          (descriptive / distinctive attributes)
    out_dir/task.json                   (name, task noun, causes, classes, splits, shift notes)

Tasks (see :data:`TASKS`): ``heldout`` is the in-distribution zero-shot check (30 (shape, colour)
pairs never seen in pretraining); the ``world`` tasks put the world under a shift pretraining never
saw, with classes that fix two or more factors; ``fashion-mnist`` and ``digits`` are real images
(Debian's ``dataset-fashion-mnist``, scikit-learn's ``load_digits``), described in the world's
words.
"""

from __future__ import annotations

import gzip
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reprogram.errors import ReprogramError
from reprogram.io import atomic_write_json, atomic_write_text
from reprogram.toy import world
from reprogram.toy.describe import DEFAULT_CAUSES, ClassSpec, write_descriptions

SPLITS = ("train", "val", "test")
DEFAULT_SHOTS = {"train": 16, "val": 4, "test": 50}

# A sampler draws images for one split: (class index per image, rng, image size) -> uint8 N×S×S×3
Sampler = Callable[[np.ndarray, np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class TaskDef:
    name: str
    kind: str  # "world" | "fashion-mnist" | "digits"
    task_noun: str
    classes: tuple[ClassSpec, ...] = field(repr=False)
    shift: str  # what pretraining never saw
    causes: tuple[str, ...] = DEFAULT_CAUSES
    options: dict = field(default_factory=dict)

    @property
    def classnames(self) -> list[str]:
        return [c.name for c in self.classes]


# ---------------------------------------------------------------------------------------------
# World tasks
# ---------------------------------------------------------------------------------------------
def _pair_classes(shapes: Sequence[str], colors: Sequence[str], **varies) -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(f"{c} {s}", {"shape": s, "color": c}, varies=dict(varies))
        for s, c in itertools.product(shapes, colors)
    )


def _shape_texture_classes(
    shapes: Sequence[str], textures: Sequence[str], **varies
) -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(f"{t} {s}", {"shape": s, "texture": t}, varies=dict(varies))
        for s, t in itertools.product(shapes, textures)
    )


def _triple_classes(shapes, colors, textures) -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(f"{t} {c} {s}", {"shape": s, "color": c, "texture": t})
        for s, c, t in itertools.product(shapes, colors, textures)
    )


def _scenes_for(classes: Sequence[ClassSpec], labels: np.ndarray, rng, **kwargs) -> world.Scenes:
    fixed: dict[str, list[str]] = {}
    names = sorted({k for spec in classes for k in spec.factors})
    for name in names:
        fixed[name] = [classes[i].factors[name] for i in labels]
    extra_fixed = kwargs.pop("fixed", {})
    fixed.update(extra_fixed)
    return world.sample_scenes(len(labels), rng, fixed=fixed, **kwargs)


def _clutter(scenes: world.Scenes, size: int, rng: np.random.Generator, count: int) -> np.ndarray:
    """Render scenes with ``count`` small distractor objects behind the target, as float images."""
    n = len(scenes)
    image = np.broadcast_to(
        scenes.bg_rgb.astype(np.float32)[:, None, None, :], (n, size, size, 3)
    ).copy()
    for _ in range(count):
        other = world.sample_scenes(n, rng, radius_scale=0.45, noise_std=0.0)
        other = other.replace(cx=rng.uniform(-0.9, 0.9, n), cy=rng.uniform(-0.9, 0.9, n))
        alpha, colour = world.object_layer(other, size)
        image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
    alpha, colour = world.object_layer(scenes, size)
    image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
    image += (
        world._noise(scenes.noise_seed, (size, size, 3))
        * scenes.noise_std.astype(np.float32)[:, None, None, None]
    )
    return np.clip(image, 0, 1)


def _world_sampler(task: TaskDef) -> Sampler:
    opts = task.options
    shift = opts.get("shift", "none")

    def sample(labels: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
        kwargs = {}
        if shift == "noise":
            kwargs["noise_std"] = float(opts.get("noise_std", 0.35))
        if shift == "tiny":
            kwargs["radius_scale"] = float(opts.get("radius_scale", 0.4))
        if opts.get("sizes"):
            sizes = list(opts["sizes"])
            kwargs["fixed"] = {"size": [sizes[i] for i in rng.integers(0, len(sizes), len(labels))]}
        scenes = _scenes_for(task.classes, labels, rng, **kwargs)
        if shift == "clutter":
            image = _clutter(scenes, size, rng, int(opts.get("distractors", 6)))
        else:
            image = world.render(scenes, size, dtype=np.float32)
        if shift == "invert":
            image = 1.0 - image
        elif shift == "channels":
            image = image[..., list(opts.get("order", (2, 0, 1)))]
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    return sample


# ---------------------------------------------------------------------------------------------
# Real images: Fashion-MNIST and scikit-learn digits
# ---------------------------------------------------------------------------------------------
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


def _pool_sampler(pools: dict[str, tuple[np.ndarray, np.ndarray]]) -> Callable:
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


def _fashion_pools(rng: np.random.Generator, shots: dict[str, int]) -> dict:
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


def _digits_pools(rng: np.random.Generator, shots: dict[str, int]) -> dict:
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


def _fashion_specs() -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(
            name, {"size": "large"}, notes={"shape": shape, "texture": texture, **_GRAY_ON_BLACK}
        )
        for name, shape, texture in FASHION_CLASSES
    )


def _digit_specs() -> tuple[ClassSpec, ...]:
    texture = _n("one flat colour", "a soft blurry edge", names=("plain",))
    return tuple(
        ClassSpec(
            name, {"size": "large"}, notes={"shape": shape, "texture": texture, **_GRAY_ON_BLACK}
        )
        for name, shape in DIGIT_CLASSES
    )


# ---------------------------------------------------------------------------------------------
# The registry (built explicitly)
# ---------------------------------------------------------------------------------------------
def _world(name: str, classes, shift: str, notes: str, **options) -> TaskDef:
    return TaskDef(
        name, "world", "object", tuple(classes), notes, options={"shift": shift, **options}
    )


TASKS: dict[str, TaskDef] = {
    task.name: task
    for task in (
        TaskDef(
            "heldout",
            "world",
            "object",
            tuple(ClassSpec(f"{c} {s}", {"shape": s, "color": c}) for s, c in world.HELD_OUT_PAIRS),
            "none: in-distribution images, but these 30 (shape, colour) pairs never occur in "
            "pretraining",
            options={"shift": "none"},
        ),
        _world(
            "noise",
            _pair_classes(
                ("circle", "square", "triangle", "star", "heart", "ring"),
                ("red", "green", "blue", "yellow"),
            ),
            "noise",
            "heavy Gaussian sensor noise (std 0.3 of the intensity range; pretraining: 0.02); "
            "objects medium or large",
            noise_std=0.3,
            sizes=("medium", "large"),
        ),
        _world(
            "invert",
            _pair_classes(
                ("circle", "triangle", "star", "cross", "crescent"),
                ("red", "green", "blue", "yellow"),
            ),
            "invert",
            "colours inverted (1 - x): a red object looks cyan, a blue one yellow, "
            "backgrounds swap black and white",
        ),
        _world(
            "channels",
            _triple_classes(
                ("square", "star", "heart"),
                ("red", "green", "blue", "yellow"),
                ("solid", "striped"),
            ),
            "channels",
            "colour channels rotated (R,G,B) -> (B,R,G): red looks green, green looks blue, "
            "blue looks red",
            order=(2, 0, 1),
        ),
        _world(
            "clutter",
            _shape_texture_classes(
                ("circle", "square", "triangle", "diamond", "cross"),
                ("solid", "striped", "dotted", "checkered"),
            ),
            "clutter",
            "six small distractor objects behind the target (pretraining: one object); "
            "the target is medium or large",
            distractors=6,
            sizes=("medium", "large"),
        ),
        _world(
            "tiny",
            _pair_classes(
                ("square", "triangle", "star", "cross", "ring"), ("red", "green", "blue", "purple")
            ),
            "tiny",
            "objects at 0.35x the pretraining medium/large sizes (radius 0.11-0.2 of half "
            "the image; pretraining's smallest: 0.19-0.25)",
            radius_scale=0.35,
            sizes=("medium", "large"),
        ),
        TaskDef(
            "fashion-mnist",
            "fashion-mnist",
            "clothing item",
            _fashion_specs(),
            "real grayscale photos of clothes (Fashion-MNIST), names never in a caption; "
            "descriptions relate them to the world's shapes and textures",
        ),
        TaskDef(
            "digits",
            "digits",
            "handwritten digit",
            _digit_specs(),
            "real 8x8 handwritten digits (scikit-learn load_digits) upscaled; "
            "descriptions relate them to the world's shapes",
        ),
    )
}


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str) -> TaskDef:
    if name not in TASKS:
        raise ReprogramError(f"unknown toy task '{name}' (known: {', '.join(TASKS)})")
    return TASKS[name]


def _split_rng(seed: int, task: str, split: str) -> np.random.Generator:
    """Independent streams per split, so changing the train shots leaves the test set as it is."""
    key = [seed, sum(ord(ch) * 31**i for i, ch in enumerate(task)) % (2**31), SPLITS.index(split)]
    return np.random.default_rng(key)


def generate_split(
    task: TaskDef | str, split: str, count: int, *, image_size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """In memory: (uint8 N×S×S×3 images, labels) of one split with ``count`` images per class."""
    task = get_task(task) if isinstance(task, str) else task
    return _generate(task, {split: count}, image_size, seed)[split]


def _generate(task: TaskDef, shots: dict[str, int], size: int, seed: int) -> dict:
    out = {}
    if task.kind == "world":
        sampler = _world_sampler(task)
        for split, count in shots.items():
            labels = np.repeat(np.arange(len(task.classes)), count)
            out[split] = (sampler(labels, _split_rng(seed, task.name, split), size), labels)
        return out
    full = {**DEFAULT_SHOTS, **shots}
    pools_rng = np.random.default_rng([seed, 7])
    pools = (_fashion_pools if task.kind == "fashion-mnist" else _digits_pools)(pools_rng, full)
    draw = _pool_sampler(pools)
    for split, count in shots.items():
        counts = dict.fromkeys(range(len(task.classes)), count)
        out[split] = draw(split, counts, _split_rng(seed, task.name, split), size)
    return out


def make_task(
    name: str,
    out_dir: str | Path,
    *,
    image_size: int = 64,
    seed: int = 0,
    shots: int = DEFAULT_SHOTS["train"],
    val_shots: int = DEFAULT_SHOTS["val"],
    test_per_class: int = DEFAULT_SHOTS["test"],
    overwrite: bool = False,
) -> Path:
    """Write task ``name`` to ``out_dir`` (folder layout above) and return the folder."""
    from PIL import Image

    task = get_task(name)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ReprogramError(f"{out_dir} exists and is not empty (pass overwrite to replace it)")
    counts = {"train": int(shots), "val": int(val_shots), "test": int(test_per_class)}
    if min(counts.values()) < 1:
        raise ReprogramError(f"every split needs at least one image per class (got {counts})")
    splits = _generate(task, counts, image_size, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for split, (images, labels) in splits.items():
            for classname in task.classnames:
                (tmp / split / classname).mkdir(parents=True, exist_ok=True)
            seen: dict[int, int] = {}
            for image, label in zip(images, labels, strict=True):
                k = seen.get(int(label), 0)
                seen[int(label)] = k + 1
                Image.fromarray(image).save(tmp / split / task.classnames[label] / f"{k:05d}.png")
        atomic_write_text(tmp / "classnames.txt", "\n".join(task.classnames) + "\n")
        write_descriptions(task.classes, tmp / "descriptions", causes=task.causes, seed=seed)
        atomic_write_json(
            tmp / "task.json", task_metadata(task, image_size=image_size, seed=seed, shots=counts)
        )
        _usual_permissions(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _usual_permissions(folder: Path) -> None:
    """Give the task the modes of ordinary files (mkdtemp/mkstemp make them private: 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def task_metadata(task: TaskDef, *, image_size: int, seed: int, shots: dict[str, int]) -> dict:
    return {
        "name": task.name,
        "source": "reprogram.toy",
        "kind": task.kind,
        "task": task.task_noun,
        "causes": list(task.causes),
        "descriptions": {f"cse_{i}": cause for i, cause in enumerate(task.causes, start=1)}
        | {"des": "descriptive attributes", "dist": "distinctive attributes"},
        "classes": task.classnames,
        "class_factors": {c.name: c.factors for c in task.classes},
        "shift": task.shift,
        "image_size": image_size,
        "seed": seed,
        "per_class": shots,
        "held_out_pairs": [list(p) for p in world.HELD_OUT_PAIRS]
        if task.name == "heldout"
        else None,
    }
