"""From a config to the pieces of a run: data, backbone, description files, model."""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reprogram.backbones import Backbone, load_backbone
from reprogram.data import Splits, dataset_info, few_shot, load_dataset
from reprogram.data.catalog import is_published
from reprogram.data.imagenet import text_classnames
from reprogram.engine.config import TrainConfig
from reprogram.engine.progress import Reporter
from reprogram.errors import ReprogramError, routed_warnings
from reprogram.model.methods import (
    Recipe,
    Reprogrammer,
    build_reprogrammer,
    build_text_bank,
    get_recipe,
)
from reprogram.model.precision import resolve_device
from reprogram.text.descriptions import TextBank, read_description_file
from reprogram.text.packaged import PAPER_CAUSES, materialize
from reprogram.text.packaged import PREFIX as PACKAGED_PREFIX

DESCRIPTIONS_ENV = "REPROGRAM_DESCRIPTIONS"


def _published_key(dataset: str) -> str | None:
    return dataset_info(dataset).description_key if is_published(dataset) else None


def _find_in(folder: Path, patterns: Sequence[str], what: str) -> Path:
    """The one file in ``folder`` (or its causes/, attributes/) matching the first pattern found."""
    for pattern in patterns:
        found = sorted(
            {p for sub in ("", "causes", "attributes") for p in (folder / sub).glob(pattern)}
        )
        if len(found) > 1:
            names = ", ".join(p.name for p in found[:4])
            raise ReprogramError(f"{folder}: several {what} files ({names}): pass --descriptions")
        if found:
            return found[0]
    raise ReprogramError(f"{folder}: no {patterns[0]} ({what})")


def _folder_description_files(
    recipe: Recipe, folder: Path, prefix: str, causes: Sequence[int]
) -> list[str]:
    """A folder of description files: ``[KEY_]cse_N.json`` (or ``csl_N``), ``[KEY_]des.json``,
    ``[KEY_]dist.json`` — the published names and what ``reprogram describe`` writes."""
    anyprefix = prefix or "*_"

    def find(*stems: str) -> str:
        patterns = [f"{p}{stem}.json" for stem in stems for p in (prefix, anyprefix)]
        return str(_find_in(folder, patterns, f"'{stems[0]}' for method '{recipe.name}'"))

    return [find(*stems) for stems in recipe.texts.file_stems(causes)]


def default_description_files(
    recipe: Recipe, dataset: str, causes: Sequence[int] = (), source: str = ""
) -> list[str]:
    """Description files a method uses when none are given.

    * ``folder:PATH``: ``PATH/descriptions/`` (``cse_N.json``, ``des.json``, ``dist.json``, also
      with a ``KEY_`` prefix as ``reprogram describe`` writes them).
    * published datasets: the packaged sets (``packaged:…``; see ``reprogram descriptions
      list``), or ``$REPROGRAM_DESCRIPTIONS/{causes,attributes}/`` when that is set.

    ``causes`` picks other causes than 1-3 (dvp-cse); ``source`` one of AttrVR's other LLMs.
    """
    if not recipe.needs_descriptions:
        return []
    numbers = list(causes) or list(PAPER_CAUSES)
    key = None if dataset.startswith(("folder:", "csv:")) else _published_key(dataset)
    if source and not key:
        raise ReprogramError(
            "--description-source picks a packaged set: it needs a published dataset"
        )
    if dataset.startswith("folder:"):
        folder = Path(dataset[len("folder:") :]) / "descriptions"
        if folder.is_dir():
            return _folder_description_files(recipe, folder, "", numbers)
    elif key and os.environ.get(DESCRIPTIONS_ENV) and not source:
        folder = Path(os.environ[DESCRIPTIONS_ENV])
        return _folder_description_files(recipe, folder, key + "_", numbers)
    elif key:
        return recipe.texts.packaged_specs(key, list(causes), source)
    raise ReprogramError(
        f"method '{recipe.name}' needs description files: pass --descriptions FILE … "
        "(or use a published dataset, whose descriptions are packaged)"
    )


def cause_names(specs: Sequence[str], dataset: str) -> list[str] | None:
    """Readable names of the cause files a run uses ("pattern", …), or None if not all known.

    From the ``reprogram describe`` manifest beside a file, else from the published causes of a
    packaged or published-name file (``dtd_cse_2.json`` is dtd's second cause).
    """
    from reprogram.text.describe.manifest import cause_name

    known = dataset_info(dataset).causes if _published_key(dataset) else ()
    names = []
    for spec in specs:
        name = None if str(spec).startswith(PACKAGED_PREFIX) else cause_name(spec)
        match = re.search(r"_cs[el]_(\d+)$", Path(str(spec)).stem)
        if name is None and match and 1 <= int(match[1]) <= len(known):
            name = known[int(match[1]) - 1]
        if name is None:
            return None
        names.append(name)
    return names if len(set(names)) == len(names) else None


def is_template_file(spec: str) -> bool:
    from reprogram.text.describe.manifest import is_template

    return not str(spec).startswith(PACKAGED_PREFIX) and is_template(spec)


def default_clusters(config: TrainConfig) -> int:
    if config.method.clusters:
        return config.method.clusters
    key = (
        _published_key(config.data.dataset)
        if not config.data.dataset.startswith(("folder:", "csv:"))
        else None
    )
    return dataset_info(config.data.dataset).clusters if key else 3


class RunWarnings:
    """What a run did that the user should know: printed as it happens, kept for results.json."""

    def __init__(self, reporter: Reporter | None = None) -> None:
        self.reporter = reporter
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        if message in self.messages:
            return
        self.messages.append(message)
        self._print(message)

    def attach(self, reporter: Reporter) -> None:
        """Print from now on through ``reporter``, starting with the messages so far."""
        self.reporter = reporter
        for message in self.messages:
            self._print(message)

    def _print(self, message: str) -> None:
        if self.reporter is not None and not self.reporter.quiet:  # one line, as written
            self.reporter.console.print(f"warning: {message}", soft_wrap=True, markup=False)

    @contextlib.contextmanager
    def catching(self) -> Iterator[RunWarnings]:
        """Inside: Python's user warnings (``UserWarning``, ``RuntimeWarning``) are this run's
        (see :func:`reprogram.errors.routed_warnings`)."""
        with routed_warnings(self.add):
            yield self


@dataclass
class RunParts:
    config: TrainConfig
    splits: Splits
    backbone: Backbone
    model: Reprogrammer
    warnings: RunWarnings = field(default_factory=RunWarnings)


def _listed(counts: dict[str, int], limit: int = 5) -> str:
    shown = ", ".join(f"{name} ({count})" for name, count in list(counts.items())[:limit])
    return shown + (f" and {len(counts) - limit} more" if len(counts) > limit else "")


def warn_small_classes(
    warnings: RunWarnings, labels: Sequence[int], classnames: Sequence[str], wanted: int, what: str
) -> None:
    """Warn about classes with no image in ``labels``, and with fewer than ``wanted``."""
    counts = Counter(int(label) for label in labels)
    empty = [name for i, name in enumerate(classnames) if counts[i] == 0]
    if empty:
        warnings.add(
            f"{len(empty)} classes have no usable {what} image: {', '.join(empty[:5])}"
            + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        )
    small = {name: counts[i] for i, name in enumerate(classnames) if 0 < counts[i] < wanted}
    if small:
        warnings.add(
            f"{len(small)} classes have fewer {what} images than the {wanted} asked: "
            f"{_listed(small)}"
        )


def warn_descriptions(
    warnings: RunWarnings,
    recipe: Recipe,
    files: Sequence[str],
    classnames: Sequence[str],
    m: int,
    length: str = "raw",
) -> None:
    """What ``reprogram descriptions check`` finds that changes what a run trains on."""
    from reprogram.text.describe.check import check_file

    if recipe.texts.per_cause and len(files) == 1:
        warnings.add(
            f"{recipe.name} was given one description file: it trains one prompt only "
            "(the paper uses one file per cause, e.g. 3)"
        )
    for path in files:
        report = check_file(path, classnames, min_valid=1, target=m, length=length)
        if report.duplicate_keys:
            warnings.add(
                f"{path}: class keys repeated in the JSON (only the last is used): "
                f"{', '.join(report.duplicate_keys[:5])}"
            )
        if report.below_target:
            warnings.add(
                f"{path}: {len(report.below_target)} classes have fewer than m={m} valid "
                f"sentences and are sampled with replacement: {_listed(report.below_target)}"
            )


def load_data(config: TrainConfig, warnings: RunWarnings | None = None) -> Splits:
    """The run's splits (few-shot); ``warnings`` learns of classes short of training images."""
    splits = _load_splits(config)
    for note in splits.notes if warnings is not None else ():
        warnings.add(note)
    if warnings is not None and config.data.shots:
        labels = [sample.label for sample in splits.train]
        warn_small_classes(warnings, labels, splits.classnames, config.data.shots, "training")
    return splits


def _load_splits(config: TrainConfig) -> Splits:
    from reprogram.data.subsets import subsample_classes

    splits = load_dataset(config.data.dataset, config.data.root, config.data.split_seed)
    # classes short of shots are refused where training would use them (allow_small_classes)
    trains = get_recipe(config.method.name).trainable and config.optim.epochs > 0
    allow_small = config.data.allow_small_classes or not trains
    # as CoOp: the few-shot draw over all classes first, then the base/novel half
    return subsample_classes(
        few_shot(splits, config.data.shots or None, config.seed, allow_small=allow_small),
        config.data.subsample_classes,
    )


def build_backbone(config: TrainConfig) -> Backbone:
    return load_backbone(
        config.backbone.name,
        config.backbone.weights,
        device=resolve_device(config.runtime.device),
        quick_gelu=config.backbone.quick_gelu,
    )


def description_files(config: TrainConfig) -> list[str]:
    """The description files a run of ``config`` reads: those given, else its method's
    defaults (none for a method without descriptions: the given ones, unused)."""
    recipe = get_recipe(config.method.name)
    if not recipe.needs_descriptions:
        return list(config.data.descriptions)
    if config.data.descriptions and (config.data.causes or config.data.description_source):
        raise ReprogramError(
            "--causes and --description-source pick packaged files: not with --descriptions"
        )
    files = config.data.descriptions or default_description_files(
        recipe, config.data.dataset, config.data.causes, config.data.description_source
    )
    return [str(f) for f in files]


def read_descriptions(
    config: TrainConfig,
) -> tuple[list[tuple[str, dict[str, list[str]]]], list[str]]:
    """The method's description files (given, or the dataset's defaults: stored in
    ``config.data.descriptions``) read: ``[(spec, {class: sentences})]`` and their local paths."""
    config.data.descriptions = description_files(config)
    paths = [str(materialize(f)) for f in config.data.descriptions]
    descriptions = [
        (spec, read_description_file(path))
        for spec, path in zip(config.data.descriptions, paths, strict=True)
    ]
    return descriptions, paths


def check_texts(config: TrainConfig, classnames: Sequence[str]) -> None:
    """Refuse now what building the method's texts for ``classnames`` would refuse later
    (missing classes, classes without a usable sentence): no backbone needed."""
    recipe = get_recipe(config.method.name)
    if not recipe.needs_descriptions:
        return
    descriptions, _ = read_descriptions(copy.deepcopy(config))
    texts = text_classnames(list(classnames))
    build_text_bank(recipe, texts, descriptions, config.method.options(), config.seed)


def build_model(
    config: TrainConfig,
    backbone: Backbone,
    classnames: list[str],
    bank: TextBank | None = None,
    warnings: RunWarnings | None = None,
) -> Reprogrammer:
    recipe = get_recipe(config.method.name)
    descriptions = []
    texts = text_classnames(classnames)  # ImageNet's repeated names share their texts
    if bank is None and recipe.needs_descriptions:
        descriptions, paths = read_descriptions(config)
        if warnings is not None:
            method = config.method
            warn_descriptions(warnings, recipe, paths, texts, method.m, method.description_length)
    options = config.method.options()
    options.clusters = default_clusters(config)
    model = build_reprogrammer(
        config.method.name, backbone, texts, descriptions, options, config.seed, bank
    )
    if bank is None and descriptions:
        names = cause_names(config.data.descriptions, config.data.dataset)
        if recipe.texts.per_cause and names and len(names) == len(model.bank.group_names):
            model.bank.group_names = names
        model.bank.template = any(is_template_file(f) for f in config.data.descriptions)
    if config.runtime.grad_checkpointing and hasattr(backbone, "set_grad_checkpointing"):
        backbone.set_grad_checkpointing(True)
    return model


def unread_settings(config: TrainConfig) -> list[str]:
    """One line per setting that differs from the method's default although none of its parts
    reads it (``Part.options``): ``--descriptions`` for vp, ``clusters`` for dvp-cse, …"""
    from reprogram.engine.config import flat_items
    from reprogram.model.recipes import list_methods

    recipe = get_recipe(config.method.name)
    some_read = {key for name in list_methods() for key in get_recipe(name).read_options}
    defaults = flat_items(TrainConfig().updated(method=recipe.name))
    return [
        f"{key}={value!r} is ignored: method '{recipe.name}' ({recipe.describe()}) does not read it"
        for key, value in flat_items(config).items()
        if key in some_read - recipe.read_options and value != defaults[key]
    ]


def prepare(config: TrainConfig, warnings: RunWarnings | None = None) -> RunParts:
    """Read the data, load the backbone and build the method's model."""
    config.validate()
    if is_published(config.data.dataset) and dataset_info(config.data.dataset).eval_only:
        name = dataset_info(config.data.dataset).name
        raise ReprogramError(
            f"{name} is a test set only: train on imagenet, then evaluate the run with "
            f"reprogram eval --checkpoint RUN --dataset {name}"
        )
    warnings = warnings if warnings is not None else RunWarnings()
    for message in unread_settings(config):
        warnings.add(message)
    splits = load_data(config, warnings)
    backbone = build_backbone(config)
    model = build_model(config, backbone, splits.classnames, warnings=warnings)
    return RunParts(config, splits, backbone, model, warnings)
