"""Dataset readers: the paper's datasets (CoOp / BlackVIP layout), class-per-folder, CSV.

Every reader returns :class:`Splits`: class names in label order and (path, label) samples for
``train``, ``val`` and ``test``. Readers only read: nothing is written into a dataset folder.
"""

from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from reprogram.data.catalog import DatasetInfo, dataset_info
from reprogram.errors import ReprogramError
from reprogram.storage.files import read_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SPLITS = ("train", "val", "test")
DESCRIPTIONS_FOLDER = "descriptions"


@dataclass(frozen=True)
class Sample:
    path: str
    label: int


@dataclass
class Splits:
    """A dataset: class names (label order) and samples per split."""

    name: str
    classnames: list[str]
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    source: str = ""  # where it was read from (for messages and the run record)
    parent_classes: list[int] | None = None  # label -> class index in the parent (imagenet_a: 200)
    notes: list[str] = field(default_factory=list)  # what the reader inferred, for the user

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise ReprogramError(f"unknown split '{name}' (expected one of {', '.join(SPLITS)})")
        return getattr(self, name)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-/]+", " ", name).strip().lower()


def canonical_class_index(info: DatasetInfo) -> dict[str, int]:
    """Map raw and normalised spellings of a published dataset's classes to label indices."""
    names = info.classnames
    index = {name: i for i, name in enumerate(names)}
    index.update({_norm(name): i for i, name in enumerate(names)})
    for raw, published in info.aliases:
        index[raw] = index[_norm(raw)] = names.index(published)
    return index


def _resolve_dataset_folder(info: DatasetInfo, root: Path) -> tuple[Path, Path]:
    """(dataset folder, split file): ``root/<folder>``, ``root/<name>`` or ``root`` itself."""
    markers = info.split_files or ("variants.txt",)
    for candidate in (root / info.folder, root / info.name, root):
        for marker in markers:
            if (candidate / marker).is_file():
                return candidate, candidate / marker
    expected = root / info.folder / markers[0]
    raise ReprogramError(
        f"{info.name}: split file not found: {expected} "
        f"(is --root the folder holding '{info.folder}/'?)"
    )


def read_published(name: str, root: str | Path) -> Splits:
    """Read one of the paper's datasets from ``root`` in the CoOp (or BlackVIP) layout."""
    info = dataset_info(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ReprogramError(f"{info.name}: --root folder not found: {root}")
    if info.layout != "coop":
        from reprogram.data.imagenet import read_imagenet_family

        return read_imagenet_family(info, root)
    folder, split_path = _resolve_dataset_folder(info, root)
    if info.name == "fgvc_aircraft":
        return _read_fgvc(info, folder)
    data = read_json(split_path)
    if not isinstance(data, dict):
        raise ReprogramError(f"{split_path}: expected an object with train/val/test lists")
    index = canonical_class_index(info)
    num_classes = len(info.classnames)
    splits = Splits(info.name, info.classnames, source=str(folder))
    for split in SPLITS:
        if not isinstance(data.get(split), list):
            raise ReprogramError(f"{split_path}: no '{split}' list")
        samples = []
        for position, entry in enumerate(data[split]):
            if not (isinstance(entry, list) and len(entry) >= 3 and isinstance(entry[0], str)):
                raise ReprogramError(
                    f"{split_path}: {split}[{position}] is not [path, label, classname]: {entry!r}"
                )
            rel, raw_label, raw_name = entry[0], entry[1], str(entry[2])
            if (
                isinstance(raw_label, bool)
                or not isinstance(raw_label, int)
                or not (0 <= raw_label < num_classes)
            ):
                raise ReprogramError(
                    f"{split_path}: {split}[{position}] ({rel}) has label {raw_label!r}, outside "
                    f"the {num_classes} classes of {info.name} (0..{num_classes - 1})"
                )
            label = index.get(raw_name, index.get(_norm(raw_name)))
            if label is None:
                raise ReprogramError(
                    f"{split_path}: {split}[{position}] ({rel}) has class '{raw_name}', "
                    f"which is not a class of {info.name}"
                )
            samples.append(Sample(str(folder / info.image_dir / rel), label))
        setattr(splits, split, samples)
    _note_empty(splits, str(split_path))
    return splits


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ReprogramError(f"cannot read {path}: {err}") from err


def _read_fgvc(info: DatasetInfo, folder: Path) -> Splits:
    """FGVC-Aircraft as CoOp reads it: ``variants.txt`` and ``images_variant_{split}.txt``."""
    variants_path = folder / "variants.txt"
    variants = [line.strip() for line in _read_lines(variants_path) if line.strip()]
    index = canonical_class_index(info)
    unknown = [v for v in variants if v not in index and _norm(v) not in index]
    if unknown:
        raise ReprogramError(
            f"{variants_path}: classes not in fgvc_aircraft: {', '.join(unknown[:5])}"
        )
    splits = Splits(info.name, info.classnames, source=str(folder))
    for split in SPLITS:
        list_path = folder / f"images_variant_{split}.txt"
        if not list_path.is_file():
            raise ReprogramError(f"fgvc_aircraft: split file not found: {list_path}")
        samples = []
        for number, line in enumerate(_read_lines(list_path), start=1):
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")
            label = index.get(variant, index.get(_norm(variant)))
            if not variant or label is None:
                raise ReprogramError(
                    f"{list_path}:{number}: unknown class '{variant}' (line: {line.strip()!r})"
                )
            samples.append(Sample(str(folder / info.image_dir / f"{image_id}.jpg"), label))
        setattr(splits, split, samples)
    _note_empty(splits, str(folder / "images_variant_train.txt"))
    return splits


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _classnames_for_folder(root: Path, found: list[str]) -> list[str]:
    listing = root / "classnames.txt"
    if listing.is_file():
        names = [line.strip() for line in _read_lines(listing) if line.strip()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ReprogramError(f"{listing}: classes listed twice: {', '.join(duplicates[:5])}")
        extra = sorted(set(found) - set(names))
        if extra:
            raise ReprogramError(f"{listing}: class folders not listed: {', '.join(extra[:5])}")
        return names
    return found


def seeded_split(
    samples: list[Sample], fractions: tuple[float, float] = (0.2, 0.2), seed: int = 0
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Split samples per class into train/val/test with the given val and test fractions."""
    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    train, val, test = [], [], []
    for label in sorted(by_class):
        items = list(by_class[label])
        rng.shuffle(items)
        n_test = round(len(items) * fractions[1])
        n_val = round(len(items) * fractions[0])
        test += items[:n_test]
        val += items[n_test : n_test + n_val]
        train += items[n_test + n_val :]
    return train, val, test


def read_folder(path: str | Path, split_seed: int = 0) -> Splits:
    """Class-per-folder images: ``PATH/{train,val,test}/<class>/`` or ``PATH/<class>/``.

    Without sub-folders, or without ``val/``, a seeded per-class split is made (60/20/20, or 20%
    of train as val). ``PATH/classnames.txt`` (one per line) fixes the label order; otherwise
    class folders are sorted by name.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ReprogramError(f"dataset folder not found: {root}")
    has_splits = (root / "train").is_dir()
    if has_splits:
        if not (root / "test").is_dir():
            raise ReprogramError(f"{root}: has train/ but no test/ folder")
        found = sorted(
            set().union(*(_class_folders(root / s) for s in SPLITS if (root / s).is_dir()))
        )
    else:
        # PATH/descriptions/ holds a folder dataset's description files, not a class
        found = [
            name
            for name in _class_folders(root)
            if name != DESCRIPTIONS_FOLDER or _images_in(root / name)
        ]
    classnames = _classnames_for_folder(root, found)
    if not classnames:
        raise ReprogramError(f"{root}: no class folders found")
    label_of = {name: i for i, name in enumerate(classnames)}

    def collect(folder: Path) -> list[Sample]:
        return [
            Sample(str(image), label_of[name])
            for name in _class_folders(folder)
            if name in label_of
            for image in _images_in(folder / name)
        ]

    splits = Splits(f"folder:{root}", classnames, source=str(root))
    if has_splits:
        splits.train, splits.test = collect(root / "train"), collect(root / "test")
        if (root / "val").is_dir():
            splits.val = collect(root / "val")
        else:
            splits.train, splits.val, _ = seeded_split(splits.train, (0.2, 0.0), split_seed)
        where = f"{root / 'train'}/<class>/"
    else:
        splits.train, splits.val, splits.test = seeded_split(collect(root), (0.2, 0.2), split_seed)
        where = f"{root}/<class>/"
    _check_not_empty(splits, where)
    return splits


def read_csv(path: str | Path, split_seed: int = 0) -> Splits:
    """A CSV file with columns ``path,label`` and optionally ``split`` (train/val/test).

    ``label`` is a class name, or an integer index into ``classnames.txt`` beside the CSV.
    Relative paths are relative to the CSV file. Without a split column a seeded split is made.
    """
    csv_path = Path(path).expanduser()
    if not csv_path.is_file():
        raise ReprogramError(f"CSV file not found: {csv_path}")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ReprogramError(f"{csv_path}: cannot read CSV ({err})") from err
    if not {"path", "label"} <= set(reader.fieldnames or []):
        raise ReprogramError(f"{csv_path}: expected a header with columns path,label[,split]")
    if not rows:
        raise ReprogramError(f"{csv_path}: no rows below the header")
    listing = csv_path.parent / "classnames.txt"
    declared = (
        [line.strip() for line in _read_lines(listing) if line.strip()]
        if listing.is_file()
        else None
    )
    labels = [(row.get("label") or "").strip() for row in rows]
    notes: list[str] = []
    if declared is None:
        if all(label.isdigit() for label in labels):
            declared = [str(i) for i in range(max(int(label) for label in labels) + 1)]
        else:
            declared = sorted({label for label in labels if label})
            notes.append(_found_classes_note(csv_path, labels, declared))
    label_of = {name: i for i, name in enumerate(declared)}
    by_split: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    unsplit: list[Sample] = []
    for number, (row, label) in enumerate(zip(rows, labels, strict=True), start=2):
        if label in label_of:
            index = label_of[label]
        elif label.isdigit() and int(label) < len(declared):
            index = int(label)
        else:
            raise ReprogramError(
                f"{csv_path}:{number}: label '{label}' is not in the class list "
                f"({len(declared)} classes{', from ' + str(listing) if listing.is_file() else ''})"
            )
        raw_path = (row.get("path") or "").strip()
        if not raw_path:
            raise ReprogramError(f"{csv_path}:{number}: empty path")
        image = Path(raw_path).expanduser()
        sample = Sample(str(image if image.is_absolute() else csv_path.parent / image), index)
        split = (row.get("split") or "").strip().lower()
        if split and split not in SPLITS:
            raise ReprogramError(f"{csv_path}:{number}: split '{split}' is not train/val/test")
        (by_split[split] if split else unsplit).append(sample)
    splits = Splits(f"csv:{csv_path}", declared, source=str(csv_path), notes=notes)
    if unsplit:
        train, val, test = seeded_split(unsplit, (0.2, 0.2), split_seed)
        by_split["train"] += train
        by_split["val"] += val
        by_split["test"] += test
    splits.train, splits.val, splits.test = by_split["train"], by_split["val"], by_split["test"]
    _check_not_empty(splits, str(csv_path))
    return splits


def _found_classes_note(csv_path: Path, labels: list[str], classes: list[str]) -> str:
    """The class list read from the label column, with counts (a typo shows as a small class)."""
    counts = {name: 0 for name in classes}
    for label in labels:
        if label in counts:
            counts[label] += 1
    listed = ", ".join(f"{name} ({count})" for name, count in counts.items())
    return (
        f"{csv_path}: {len(classes)} classes taken from the label column (no classnames.txt "
        f"beside it): {listed}"
    )


def _empty_classes_message(splits: Splits, where: str) -> str | None:
    present = {s.label for s in splits.train}
    empty = [name for i, name in enumerate(splits.classnames) if i not in present]
    if not empty:
        return None
    return f"{where}: {len(empty)} class(es) with no training image: {', '.join(empty[:5])}" + (
        " …" if len(empty) > 5 else ""
    )


def _check_not_empty(splits: Splits, where: str) -> None:
    message = _empty_classes_message(splits, where)
    if message:
        raise ReprogramError(message)


def _note_empty(splits: Splits, where: str) -> None:
    """A published split file lists every class; one that misses some is noted, not refused
    (few-shot training refuses such classes unless ``allow_small_classes``)."""
    message = _empty_classes_message(splits, where)
    if message:
        splits.notes.append(message)


def load_dataset(spec: str, root: str | Path | None = None, split_seed: int = 0) -> Splits:
    """Read a dataset: a published name (with ``root``), ``folder:PATH`` or ``csv:FILE``."""
    if spec.startswith("folder:"):
        return read_folder(spec[len("folder:") :], split_seed)
    if spec.startswith("csv:"):
        return read_csv(spec[len("csv:") :], split_seed)
    info = dataset_info(spec)
    if root is None:
        raise ReprogramError(
            f"dataset '{info.name}' needs --root (the folder holding '{info.folder}/')"
        )
    return read_published(info.name, root)
