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
words. The world tasks' factor lists, shifts and notes are data (``assets/toy/tasks.json``); the
sources live in :mod:`reprogram.toy.world_tasks` and :mod:`reprogram.toy.real_tasks`; this module
is the registry and the writer.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reprogram.errors import ReprogramError, lookup
from reprogram.storage.files import atomic_write_json, atomic_write_text
from reprogram.toy import world
from reprogram.toy.describe import DEFAULT_CAUSES, ClassSpec, write_descriptions
from reprogram.toy.real_tasks import (
    SPLITS,
    digit_specs,
    digits_pools,
    fashion_mnist_dir,
    fashion_pools,
    fashion_specs,
    pool_sampler,
)
from reprogram.toy.vocabulary import read_toy_asset
from reprogram.toy.world_tasks import (
    pair_classes,
    shape_texture_classes,
    triple_classes,
    world_sampler,
)

DEFAULT_SHOTS = {"train": 16, "val": 4, "test": 50}


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
# The registry (built explicitly)
# ---------------------------------------------------------------------------------------------
# Which classes a world task's factor lists make (the keys of its "factors" in tasks.json).
_CLASS_SETS = {
    ("shape", "color"): pair_classes,
    ("shape", "texture"): shape_texture_classes,
    ("shape", "color", "texture"): triple_classes,
}


def _world(entry: dict) -> TaskDef:
    """A world task from its entry in ``assets/toy/tasks.json``."""
    classes = _CLASS_SETS[tuple(entry["factors"])](*entry["factors"].values())
    return TaskDef(
        entry["name"], "world", "object", classes, entry["notes"], options=entry["options"]
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
        *(_world(entry) for entry in read_toy_asset("tasks.json")["world"]),
        TaskDef(
            "fashion-mnist",
            "fashion-mnist",
            "clothing item",
            fashion_specs(),
            "real grayscale photos of clothes (Fashion-MNIST), names never in a caption; "
            "descriptions relate them to the world's shapes and textures",
        ),
        TaskDef(
            "digits",
            "digits",
            "handwritten digit",
            digit_specs(),
            "real 8x8 handwritten digits (scikit-learn load_digits) upscaled; "
            "descriptions relate them to the world's shapes",
        ),
    )
}


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str) -> TaskDef:
    return lookup(TASKS, name, "toy task")


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
        sampler = world_sampler(task.classes, task.options)
        for split, count in shots.items():
            labels = np.repeat(np.arange(len(task.classes)), count)
            out[split] = (sampler(labels, _split_rng(seed, task.name, split), size), labels)
        return out
    full = {**DEFAULT_SHOTS, **shots}
    pools_rng = np.random.default_rng([seed, 7])
    pools = (fashion_pools if task.kind == "fashion-mnist" else digits_pools)(pools_rng, full)
    draw = pool_sampler(pools)
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
    # a plain mkdir (not mkdtemp, which is private: 0700) so every mode follows the umask
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
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
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


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


__all__ = [
    "DEFAULT_SHOTS",
    "SPLITS",
    "TASKS",
    "TaskDef",
    "fashion_mnist_dir",
    "generate_split",
    "get_task",
    "make_task",
    "task_metadata",
    "task_names",
]
