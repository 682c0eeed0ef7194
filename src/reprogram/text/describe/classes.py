"""Class lists for ``describe`` and ``descriptions check``: a file of names, or a dataset."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from reprogram.errors import ReprogramError


def read_class_list(path: str | Path) -> list[str]:
    """Class names in order: a text file with one name per line (blank lines skipped), or a JSON
    list of names, or a JSON object whose keys are the names (e.g. a description file)."""
    path = Path(path)
    if not path.is_file():
        raise ReprogramError(f"class list not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ReprogramError(f"{path}: not valid JSON ({err})") from None
        if isinstance(data, dict):
            data = list(data)
        if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
            raise ReprogramError(f"{path}: expected a JSON list of class names")
        names = [c.strip() for c in data]
    else:
        names = [line.strip() for line in text.splitlines()]
    return validate_classes([n for n in names if n], source=str(path))


def validate_classes(names: Sequence[str], source: str = "class list") -> list[str]:
    """Refuse an empty list or repeated names (each class is one key of the output files)."""
    names = list(names)
    if not names:
        raise ReprogramError(f"{source}: no class names")
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise ReprogramError(f"{source}: repeated class names: {', '.join(repeated[:10])}")
    return names


def dataset_classes(name: str) -> tuple[list[str], str, tuple[str, ...], str]:
    """A published dataset's class names, task noun, causes and description-file key."""
    from reprogram.data import dataset_info
    from reprogram.data.imagenet import text_classnames

    info = dataset_info(name)
    names = list(dict.fromkeys(text_classnames(info.classnames)))  # ImageNet: one per spelling
    return names, info.task, info.causes, info.description_key


def describe_inputs(
    classes: Path | None,
    dataset: str | None,
    task: str | None,
    causes: str | None,
    num_causes: int,
    key: str | None,
    mode: str,
) -> tuple[list[str], str, list[str], str]:
    """Class names, task noun, causes and file key of ``reprogram describe``'s options
    (exactly one of a class list file or a published dataset)."""
    from reprogram.text.describe.prompts import file_key, parse_list

    if (classes is None) == (dataset is None):
        raise ReprogramError("give exactly one of --classes FILE or --dataset NAME")
    if dataset is not None:
        names, info_task, info_causes, info_key = dataset_classes(dataset)
        if not 1 <= num_causes <= len(info_causes):
            raise ReprogramError(
                f"--num-causes must be 1..{len(info_causes)} for {dataset} "
                f"(its causes: {', '.join(info_causes)})"
            )
        cause_list = parse_list(causes) or list(info_causes[:num_causes])
        return names, task or info_task, cause_list, key or info_key
    assert classes is not None
    if not task:
        raise ReprogramError("--task is required with --classes (e.g. --task texture)")
    cause_list = parse_list(causes)
    if mode == "causes" and not cause_list:
        raise ReprogramError(
            "--causes is required with --classes in cause mode (e.g. 'pattern,color')"
        )
    return read_class_list(classes), task, cause_list, key or file_key(classes.stem)
