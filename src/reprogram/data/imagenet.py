"""ImageNet and its shifted test sets (V2, Sketch, A, R) in CoOp's folder layouts.

* ``imagenet/images/{train,val}/<wnid>/*`` and ``imagenet/classnames.txt`` (``wnid name`` lines):
  as in CoOp, the official *val* images are the test set; our validation split is a seeded 20 % of
  the train images per class (few-shot draws then take ``min(K, 4)`` of them).
* ``imagenetv2/imagenetv2-matched-frequency-format-val/<label>/`` (``0`` … ``999``),
  ``imagenet-sketch/images/<wnid>/``, ``imagenet-adversarial/imagenet-a/<wnid>/``,
  ``imagenet-rendition/imagenet-r/<wnid>/``: test sets only. Their classes are the class folders
  present (A and R hold 200 of the 1,000), in CoOp's order (sorted folders);
  :attr:`Splits.parent_classes` maps each to its index among ImageNet's classes.

``classnames.txt`` is read from the dataset's folder, else from ``imagenet/`` beside it. CoOp's
list spells two names twice ("missile", "sunglasses"): the second gets `` (2)`` appended so every
class has its own name; :func:`text_classnames` gives the published spelling back for prompts and
description look-ups (so both classes use the one published description entry).
"""

from __future__ import annotations

import re
from pathlib import Path

from reprogram.data.catalog import DatasetInfo
from reprogram.data.readers import (
    Sample,
    Splits,
    _check_not_empty,
    _class_folders,
    _images_in,
    _read_lines,
    seeded_split,
)
from reprogram.errors import ReprogramError

CLASSNAMES_FILE = "classnames.txt"
VAL_FRACTION = 0.2  # of each class's train images, held out for model selection
_REPEAT = re.compile(r"^(?P<name>.*) \((?P<count>\d+)\)$")


def unique_names(names: list[str]) -> list[str]:
    """Make repeated names distinct: the n-th occurrence (n >= 2) becomes ``name (n)``."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def text_classnames(classnames: list[str]) -> list[str]:
    """The published spelling of each class (undoes :func:`unique_names`), for texts."""
    present = set(classnames)
    result = []
    for name in classnames:
        match = _REPEAT.match(name)
        repeated = match and match["name"] in present and int(match["count"]) >= 2
        result.append(match["name"] if repeated else name)
    return result


def read_wnid_classnames(path: Path) -> tuple[list[str], list[str]]:
    """``wnid name`` lines to (wnids, distinct class names), in file order."""
    wnids, names = [], []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not name.strip():
            raise ReprogramError(f"{path}:{number}: expected 'wnid class name', got {line!r}")
        wnids.append(wnid)
        names.append(name.strip())
    repeated = sorted({w for w in wnids if wnids.count(w) > 1})
    if repeated:
        raise ReprogramError(f"{path}: folders listed twice: {', '.join(repeated[:5])}")
    if not wnids:
        raise ReprogramError(f"{path}: no classes listed")
    return wnids, unique_names(names)


def _find_folder(info: DatasetInfo, root: Path) -> Path:
    candidates = [root / info.folder, *(root / f for f in info.other_folders), root / info.name]
    for candidate in [*candidates, root]:
        if (candidate / info.image_dir).is_dir():
            return candidate
    raise ReprogramError(
        f"{info.name}: image folder not found: {root / info.folder / info.image_dir} "
        f"(is --root the folder holding '{info.folder}/'?)"
    )


def _find_classnames(folder: Path, root: Path) -> Path:
    for candidate in (folder / CLASSNAMES_FILE, root / "imagenet" / CLASSNAMES_FILE):
        if candidate.is_file():
            return candidate
    raise ReprogramError(
        f"{folder / CLASSNAMES_FILE} not found (CoOp's 'wnid name' list; "
        f"copy imagenet/{CLASSNAMES_FILE} there)"
    )


def _collect(folder: Path, label_of: dict[str, int], listing: Path) -> list[Sample]:
    samples = []
    for name in _class_folders(folder):
        if name not in label_of:
            raise ReprogramError(f"{folder / name}: folder '{name}' is not listed in {listing}")
        samples += [Sample(str(image), label_of[name]) for image in _images_in(folder / name)]
    return samples


def read_imagenet_family(info: DatasetInfo, root: Path, split_seed: int = 0) -> Splits:
    """Read ``imagenet`` or one of its targets (``info.layout``) from ``root``."""
    folder = _find_folder(info, root)
    listing = _find_classnames(folder, root)
    wnids, names = read_wnid_classnames(listing)
    images = folder / info.image_dir
    if info.layout == "imagenet":
        label_of = {wnid: i for i, wnid in enumerate(wnids)}
        if not (images / "train").is_dir() or not (images / "val").is_dir():
            raise ReprogramError(f"{images}: expected train/ and val/ folders of <wnid>/ images")
        splits = Splits(info.name, names, source=str(folder))
        train = _collect(images / "train", label_of, listing)
        splits.train, splits.val, _ = seeded_split(train, (VAL_FRACTION, 0.0), split_seed)
        splits.test = _collect(images / "val", label_of, listing)
        _check_not_empty(splits, f"{images / 'train'}/<wnid>/")
        return splits
    if info.layout == "imagenet-v2":
        present = sorted(int(n) for n in _class_folders(images) if n.isdigit())
        bad = [n for n in present if n >= len(wnids)]
        if bad:
            raise ReprogramError(f"{images}: folder '{bad[0]}' is not a label 0..{len(wnids) - 1}")
        keep = list(range(len(wnids)))
        label_of = {str(n): n for n in present}
    else:
        index = {wnid: i for i, wnid in enumerate(wnids)}
        unknown = [n for n in _class_folders(images) if n not in index]
        if unknown:
            raise ReprogramError(f"{images / unknown[0]}: folder not listed in {listing}")
        keep = [index[wnid] for wnid in _class_folders(images)]  # CoOp: sorted folders
        label_of = {wnids[parent]: label for label, parent in enumerate(keep)}
    if not label_of:
        raise ReprogramError(f"{images}: no class folders found")
    splits = Splits(info.name, [names[i] for i in keep], source=str(folder), parent_classes=keep)
    splits.test = _collect(images, label_of, listing)
    if not splits.test:
        raise ReprogramError(f"{images}: no images found")
    return splits
