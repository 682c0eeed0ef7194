"""A sweep's spec: the YAML file that declares a grid of runs, read into typed, checked parts.

::

    out: runs/table                   # where the run folders go (--out overrides)
    methods: [vp, ar, {name: dvp-cse, m: [10, 20]}]   # a method's own option grid beside it
    root: ~/data                      # for the published datasets without their own root
    datasets: [dtd, {name: eurosat, root: /other}, toy:heldout, folder:my/images]
    backbones: [{name: ViT-B-16, weights: ~/weights/ViT-B-16.pt}]
    shots: 16                         # a value or a list
    seeds: [1, 2, 3]
    lr: [10, 40]                      # any config key: a list is a grid axis, a value is fixed
    set: {prm_top_k: [3, 5]}          # the same, for any config key
    executor: local                   # which executor runs it (--executor overrides)
    local: {workers: 2}               # each executor's settings
    slurm: {partition: gpu, time: 120, gpus_per_task: 1}

Every error names the file, line and key at fault in one line. Relative paths are read from the
current folder, as for ``train``'s options. ``toy:NAME`` is a task of the toy world, written once
into its root (default ``OUT/data``) as a ``folder:`` dataset.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reprogram.engine.config import (
    FLAT_KEYS,
    TrainConfig,
    is_runtime_key,
    load_config,
    resolve_key,
)
from reprogram.errors import ReprogramError

# what a spec names with its own keys (not as option grids)
AXIS_KEYS = {
    "method": "methods",
    "dataset": "datasets",
    "root": "root (or a dataset's root)",
    "backbone": "backbones",
    "weights": "backbones (name and weights)",
    "shots": "shots",
    "seed": "seeds",
}
SPEC_KEYS = (
    "out", "methods", "datasets", "root", "backbones", "shots", "seeds", "set", "executor",
)  # fmt: skip
EXECUTORS = ("local", "slurm")
TOY_PREFIX = "toy:"
KeyPath = tuple[str | int, ...]  # a key's place: ("methods", 1, "m")


@dataclass(frozen=True)
class Where:
    """Positions of a spec's keys: ``where(("methods", 1))`` -> ``sweep.yaml:3: methods[1]``."""

    file: str
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def __call__(self, path: KeyPath) -> str:
        known = [path[:n] for n in range(len(path), 0, -1) if path[:n] in self.lines]
        line = self.lines[known[0]] if known else None
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        return f"{self.file}:{line}: {key}" if line else f"{self.file}: {key}"

    def error(self, path: KeyPath, message: str) -> ReprogramError:
        return ReprogramError(f"{self(path)}: {message}")


@dataclass(frozen=True)
class MethodEntry:
    name: str
    options: dict[str, Any] = field(default_factory=dict)  # flat key -> value, or a grid axis


@dataclass(frozen=True)
class DatasetEntry:
    name: str  # as given: dtd, folder:PATH, csv:FILE, toy:TASK
    root: str | None
    label: str  # its folder in the sweep's tree

    @property
    def toy_task(self) -> str | None:
        return self.name[len(TOY_PREFIX) :] if self.name.startswith(TOY_PREFIX) else None


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    weights: str | None
    label: str


@dataclass
class SweepSpec:
    """A checked spec: the grid's parts (see the module) and each executor's settings."""

    methods: list[MethodEntry]
    datasets: list[DatasetEntry]
    backbones: list[BackboneEntry]
    shots: list[int]
    seeds: list[int]
    options: dict[str, Any]  # flat config key -> a fixed value or an Axis
    out: Path | None = None
    executor: str = "local"
    executors: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> settings
    where: Where = field(default_factory=lambda: Where("spec"))
    extra: dict[str, Any] = field(default_factory=dict)  # the caller's own keys, unchecked


@dataclass(frozen=True)
class Axis:
    """A grid axis of one config key: the values as the spec writes them."""

    values: tuple[Any, ...]


def _positions(node: yaml.Node, path: KeyPath = ()) -> dict[KeyPath, int]:
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            lines.update(_positions(value, sub))
            lines[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_positions(item, (*path, index)))
    return lines


def read_yaml(path: str | Path) -> tuple[dict[str, Any], Where]:
    """A spec file's mapping and its keys' lines."""
    path = Path(path)
    if not path.is_file():
        raise ReprogramError(f"sweep spec not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ReprogramError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    if not isinstance(data, dict):
        raise ReprogramError(f"{path}: expected a mapping of sweep keys (methods, datasets, …)")
    return data, Where(str(path), _positions(node) if node is not None else {})


def load_spec(path: str | Path, extra_keys: tuple[str, ...] = ()) -> SweepSpec:
    """Read and check a sweep spec file (see the module). ``extra_keys``: top-level keys a
    caller reads itself (a tuning spec's search space, say), kept unchecked in ``spec.extra``
    (``spec.where`` names their lines)."""
    data, where = read_yaml(path)
    return parse_spec(data, where, extra_keys)


def parse_spec(
    data: dict[str, Any], where: Where | None = None, extra_keys: tuple[str, ...] = ()
) -> SweepSpec:
    """Check a spec given as a mapping (what :func:`load_spec` reads from YAML)."""
    where = where or Where("spec")
    options: dict[str, Any] = {}
    executors: dict[str, dict[str, Any]] = {}
    extra = {key: data[key] for key in extra_keys if key in data}
    for key, value in data.items():
        if key in extra_keys:
            continue
        if key in EXECUTORS:
            executors[key] = _mapping(value, (key,), where)
        elif key == "set":
            for name, item in _mapping(value, (key,), where).items():
                _add_option(options, name, item, ("set", name), where)
        elif key not in SPEC_KEYS:
            _add_option(options, key, value, (key,), where)
    if "methods" not in data:
        raise where.error(("methods",), "missing: the methods to run (e.g. methods: [vp, dvp-cse])")
    if "datasets" not in data:
        raise where.error(("datasets",), "missing: the datasets to run on")
    root = data.get("root")
    executor = str(data.get("executor", "local"))
    if executor not in EXECUTORS:
        known = ", ".join(EXECUTORS)
        raise where.error(("executor",), f"unknown executor '{executor}' (known: {known})")
    spec = SweepSpec(
        methods=_methods(data["methods"], where),
        datasets=_datasets(data["datasets"], None if root is None else str(root), where),
        backbones=_backbones(data.get("backbones"), where),
        shots=_ints(data.get("shots", TrainConfig().data.shots), ("shots",), where, least=0),
        seeds=_ints(data.get("seeds", TrainConfig().seed), ("seeds",), where, least=0),
        options=options,
        out=Path(str(data["out"])).expanduser() if data.get("out") else None,
        executor=executor,
        executors=executors,
        where=where,
        extra=extra,
    )
    from reprogram.sweep.executors import check_settings

    for name, settings in executors.items():
        check_settings(name, settings, where)
    return spec


def _mapping(value: Any, path: KeyPath, where: Where) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error(path, f"expected a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _ints(value: Any, path: KeyPath, where: Where, least: int) -> list[int]:
    items = _list(value)
    if not items:
        raise where.error(path, "empty: give at least one value")
    result = []
    for index, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, int) or item < least:
            at = (*path, index) if isinstance(value, list) else path
            raise where.error(at, f"expected a whole number >= {least}, got {item!r}")
        result.append(item)
    if len(set(result)) < len(result):
        raise where.error(path, f"a value is given twice ({result})")
    return result


FLAT_NAMES = {found: flat for flat, found in FLAT_KEYS.items()}


def _add_option(options: dict[str, Any], key: str, value: Any, path: KeyPath, where: Where) -> None:
    """Check an option and add it to ``options`` by its flat key (``optim.lr`` as ``lr``)."""
    checked = _option(key, value, path, where)
    flat = FLAT_NAMES[resolve_key(key)]  # type: ignore[index]
    if flat in options:
        raise where.error(path, f"'{flat}' is given twice")
    options[flat] = checked


def _list_valued(key: str) -> bool:
    part, name = resolve_key(key)  # type: ignore[misc]
    owner = TrainConfig if part is None else type(getattr(TrainConfig(), part))
    return typing.get_origin(typing.get_type_hints(owner)[name]) is list


def _option(key: str, value: Any, path: KeyPath, where: Where) -> Any:
    """A config key's fixed value or :class:`Axis`, checked (``lr: [10, 40]`` is an axis;
    for a list-valued key such as ``causes``, a list of lists is)."""
    found = resolve_key(key)
    if found is None:
        close = difflib.get_close_matches(key, [*SPEC_KEYS, *EXECUTORS, *FLAT_KEYS], n=3)
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        known = ", ".join(SPEC_KEYS)
        raise where.error(
            path, f"unknown key '{key}': not a sweep key ({known}) or a config key{hint}"
        )
    own = next((flat for flat in AXIS_KEYS if FLAT_KEYS[flat] == found), None)
    if own is not None:
        raise where.error(path, f"'{key}' is a sweep key of its own: use {AXIS_KEYS[own]}")
    is_axis = isinstance(value, list) and (
        not _list_valued(key) or any(isinstance(v, list) for v in value)
    )
    values = value if is_axis else [value]
    if is_axis and not values:
        raise where.error(path, "empty list: give at least one value")
    if is_axis and is_runtime_key(key):
        raise where.error(path, f"'{key}' is an execution setting: give one value, not a list")
    for index, item in enumerate(values):
        try:
            load_config(None, {key: item}, source="")
        except ReprogramError as err:
            raise where.error((*path, index) if is_axis else path, str(err)) from None
    return Axis(tuple(values)) if is_axis else value


def _entry(
    item: Any, path: KeyPath, where: Where, allowed: tuple[str, ...] | None
) -> dict[str, Any]:
    """A list item given as a name or as a mapping with ``name`` (and only ``allowed`` keys
    beside it; ``None``: any)."""
    if isinstance(item, str):
        return {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise where.error(path, f"expected a name or a mapping with 'name', got {item!r}")
    entry = {str(k): v for k, v in item.items()}
    extra = sorted(set(entry) - {"name", *(allowed or entry)})
    if extra:
        known = ", ".join(("name", *(allowed or ())))
        raise where.error((*path, extra[0]), f"unknown key '{extra[0]}' (known: {known})")
    return entry


def _entries(
    value: Any, key: str, where: Where, allowed: tuple[str, ...] | None
) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """Each item of section ``key`` (a list, or one item) with its key path, as :func:`_entry`."""
    for index, item in enumerate(_list(value)):
        path = (key, index) if isinstance(value, list) else (key,)
        yield path, _entry(item, path, where, allowed)


def _methods(value: Any, where: Where) -> list[MethodEntry]:
    from reprogram.model.recipes import get_recipe

    entries = []
    for path, entry in _entries(value, "methods", where, None):
        name = str(entry.pop("name"))
        try:
            get_recipe(name)
        except ReprogramError as err:
            raise where.error(path, str(err)) from None
        options: dict[str, Any] = {}
        grid = _mapping(entry.pop("set", None), (*path, "set"), where)
        for key, option in entry.items():
            _add_option(options, key, option, (*path, key), where)
        for key, option in grid.items():
            _add_option(options, key, option, (*path, "set", key), where)
        entries.append(MethodEntry(name, options))
    _unique([f"{e.name} {e.options}" for e in entries], "methods", where)
    return entries


def _datasets(value: Any, root: str | None, where: Where) -> list[DatasetEntry]:
    from reprogram.data.catalog import dataset_info, is_published

    entries = []
    for path, entry in _entries(value, "datasets", where, ("root", "label")):
        name = str(entry["name"])
        own_root = entry.get("root")
        label = entry.get("label")
        if name.startswith(TOY_PREFIX):
            from reprogram.toy.tasks import get_task

            try:
                get_task(name[len(TOY_PREFIX) :])
            except ReprogramError as err:
                raise where.error(path, str(err)) from None
            label = label or name[len(TOY_PREFIX) :]
        elif name.startswith(("folder:", "csv:")):
            label = label or Path(name.partition(":")[2].rstrip("/")).stem
            own_root = None
        else:
            if not is_published(name):
                try:
                    dataset_info(name)
                except ReprogramError as err:
                    raise where.error(path, str(err)) from None
            name = dataset_info(name).name
            own_root = own_root if own_root is not None else root
            if own_root is None:
                raise where.error(
                    path, f"dataset '{name}' needs a root (a top-level 'root:' or its own)"
                )
            label = label or name
        entries.append(DatasetEntry(name, None if own_root is None else str(own_root), str(label)))
    _unique([e.label for e in entries], "datasets", where, "give one a 'label'")
    return entries


def _backbones(value: Any, where: Where) -> list[BackboneEntry]:
    if value is None:
        value = [TrainConfig().backbone.name]
    entries = []
    for _, entry in _entries(value, "backbones", where, ("weights", "label")):
        name = str(entry["name"])
        weights = entry.get("weights")
        label = entry.get("label") or _backbone_label(name)
        weights = None if weights is None else str(weights)
        entries.append(BackboneEntry(name, weights, _safe(str(label))))
    _unique([e.label for e in entries], "backbones", where, "give one a 'label'")
    return entries


def _backbone_label(name: str) -> str:
    for prefix in ("local-dir:", "hf:"):
        if name.startswith(prefix):
            return Path(name[len(prefix) :].rstrip("/")).name
    return name.replace("/", "-").replace(":", "-")


def _safe(text: str) -> str:
    """A folder name: letters, digits and ``.-_+=,`` kept, anything else as ``_``."""
    return "".join(c if c.isalnum() or c in ".-_+=," else "_" for c in text) or "_"


def _unique(labels: list[str], key: str, where: Where, hint: str = "") -> None:
    seen = set()
    for index, label in enumerate(labels):
        if label in seen:
            more = f": {hint}" if hint else ""
            raise where.error((key, index), f"'{label.split()[0]}' is given twice{more}")
        seen.add(label)
