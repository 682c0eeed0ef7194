"""Check description files against a class list: missing classes, too few valid sentences,
duplicates. Pure functions returning a structured report; the CLI only prints it."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError
from reprogram.text.describe.manifest import is_template
from reprogram.text.descriptions import read_description_file, valid_sentences

DEFAULT_MIN_VALID = 10  # below this a class is a problem (the published sets have 12 or more)
DEFAULT_TARGET = 20  # m, the sentences sampled per class: fewer means sampling with replacement
FILE_PATTERN = re.compile(r"^(?P<key>.+)_(?:cse_\d+|csl_\d+|des|dist)$")


@dataclass
class FileReport:
    """Findings for one file. ``problems`` fail the check; ``warnings`` only with ``strict``."""

    path: str
    error: str | None = None  # the file could not be read
    classes: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    near_misses: dict[str, str] = field(default_factory=dict)  # missing class -> similar key
    too_few: dict[str, int] = field(default_factory=dict)  # class -> valid sentences (< min_valid)
    below_target: dict[str, int] = field(default_factory=dict)  # min_valid <= valid < target
    duplicates: dict[str, int] = field(default_factory=dict)  # class -> repeated valid sentences
    duplicate_keys: list[str] = field(default_factory=list)  # class keys present twice in the JSON
    template: bool = False  # made by the template fallback (weaker)

    def problems(self, strict: bool = False) -> list[str]:
        found = ([self.error] if self.error else []) + _findings(self, PROBLEMS)
        return found + (self.warnings() if strict else [])

    def warnings(self) -> list[str]:
        return _findings(self, WARNINGS)


Finding = tuple[str, str, Callable[[Any], int]]  # (FileReport field, message of its size, size)
PROBLEMS: tuple[Finding, ...] = (  # fail the check
    ("missing", "{} missing classes", len),
    ("too_few", "{} classes with too few valid sentences", len),
    ("duplicate_keys", "{} class keys repeated in the JSON", len),
)
WARNINGS: tuple[Finding, ...] = (  # fail it only with ``strict``
    ("extra", "{} classes not in the class list", len),
    ("below_target", "{} classes below the target count", len),
    ("duplicates", "{} duplicate sentences", lambda counts: sum(counts.values())),
    ("template", "template fallback (weaker than LLM descriptions)", int),
)


def _findings(report: FileReport, table: tuple[Finding, ...]) -> list[str]:
    """The message of each field of ``table`` that is set in ``report``."""
    return [
        message.format(size(getattr(report, name)))
        for name, message, size in table
        if getattr(report, name)
    ]


@dataclass
class CheckReport:
    """Findings for all files, with the thresholds used."""

    files: list[FileReport]
    min_valid: int = DEFAULT_MIN_VALID
    target: int = DEFAULT_TARGET
    strict: bool = False

    @property
    def ok(self) -> bool:
        return not any(f.problems(self.strict) for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for entry, report in zip(data["files"], self.files, strict=True):
            entry["problems"] = report.problems(self.strict)
            entry["warnings"] = report.warnings()
        return data


def normalise_sentence(text: str) -> str:
    return " ".join(text.split()).casefold()


def _normalise_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().casefold()


def _duplicate_keys(path: Path) -> list[str]:
    """Class keys that appear twice in the file (``json`` would silently keep the last)."""
    objects: list[list[str]] = []  # every JSON object's keys, innermost first, the top level last

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append([k for k, _ in pairs])
        return dict(pairs)

    try:
        json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=hook)
    except (OSError, ValueError):
        return []
    top = objects[-1] if objects else []
    return sorted(k for k, count in Counter(top).items() if count > 1)


def check_file(
    path: str | Path,
    classnames: Sequence[str],
    *,
    min_valid: int = DEFAULT_MIN_VALID,
    target: int = DEFAULT_TARGET,
    length: str = "raw",
) -> FileReport:
    """Check one ``{class: [sentences]}`` file against ``classnames`` (sentences counted as
    :func:`~reprogram.text.descriptions.valid_sentences`' ``length`` says)."""
    path = Path(path)
    report = FileReport(str(path), template=is_template(path))
    try:
        data = read_description_file(path)
    except ReprogramError as err:
        report.error = str(err)
        return report
    report.classes = len(data)
    report.duplicate_keys = _duplicate_keys(path)
    wanted = set(classnames)
    report.missing = [c for c in classnames if c not in data]
    report.extra = [c for c in data if c not in wanted]
    extra_by_norm = {_normalise_name(c): c for c in report.extra}
    report.near_misses = {
        c: extra_by_norm[_normalise_name(c)]
        for c in report.missing
        if _normalise_name(c) in extra_by_norm
    }
    for name in classnames:
        if name not in data:
            continue
        valid = valid_sentences(data[name], length)
        if len(valid) < min_valid:
            report.too_few[name] = len(valid)
        elif len(valid) < target:
            report.below_target[name] = len(valid)
        repeated = len(valid) - len({normalise_sentence(s) for s in valid})
        if repeated:
            report.duplicates[name] = repeated
    return report


def check_descriptions(
    paths: Sequence[str | Path],
    classnames: Sequence[str],
    *,
    min_valid: int = DEFAULT_MIN_VALID,
    target: int = DEFAULT_TARGET,
    strict: bool = False,
) -> CheckReport:
    """Check every file in ``paths`` against ``classnames``.

    Problems (``report.ok`` is False): unreadable file, missing class, a class with fewer than
    ``min_valid`` sentences of ``MIN_DESCRIPTION_CHARS`` or more, a class key repeated in the JSON.
    Warnings (problems too with ``strict``): classes not in the list, classes below ``target``
    valid sentences, duplicate sentences (common in the published sets), template-made files.
    """
    if min_valid < 1:
        raise ReprogramError("min_valid must be at least 1 (a class without valid sentences fails)")
    if not paths:
        raise ReprogramError("no description files to check")
    reports = [check_file(p, classnames, min_valid=min_valid, target=target) for p in paths]
    return CheckReport(reports, min_valid=min_valid, target=target, strict=strict)


def infer_dataset(paths: Sequence[str | Path]) -> str | None:
    """The published dataset named by the files (``dtd_cse_1.json`` -> ``dtd``), if all agree."""
    from reprogram.data import DATASETS

    by_key = {info.description_key: name for name, info in DATASETS.items()}
    found = set()
    for path in paths:
        match = FILE_PATTERN.match(Path(path).stem)
        if not match or match["key"] not in by_key:
            return None
        found.add(by_key[match["key"]])
    return found.pop() if len(found) == 1 else None


def expected_classes(
    files: Sequence[str | Path], dataset: str | None = None, classes: str | Path | None = None
) -> list[str]:
    """The class names description ``files`` are checked against: a class list file, a
    published dataset's, or the dataset their published-style names say (dtd_cse_1.json)."""
    from reprogram.text.describe.classes import dataset_classes, read_class_list

    if dataset is not None and classes is not None:
        raise ReprogramError("give only one of --dataset NAME or --classes FILE")
    if classes is not None:
        return read_class_list(classes)
    dataset = dataset or infer_dataset(files)
    if dataset is None:
        raise ReprogramError(
            "cannot tell the classes from the file names: pass --dataset or --classes"
        )
    return dataset_classes(dataset)[0]
