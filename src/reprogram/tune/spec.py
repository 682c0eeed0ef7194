"""A tuning spec: a sweep spec of one task (one method, dataset, backbone, shots) and its
``tune:`` section, the search::

    out: runs/tune-heldout
    methods: [dvp-cse]
    datasets: [toy:heldout]
    backbones: [{name: toy, weights: ...}]
    seeds: [1, 2, 3]            # the best configuration's final runs (tested once)
    epochs: 10                  # fixed options, as in a sweep
    tune:
      trials: 20                # the trial budget, all workers together
      timeout: 3600             # the time budget (s): no trial starts after it
      seed: 1                   # the trials' training seed (default: the first of seeds)
      sampler: tpe              # tpe | random (seeded with sampler_seed + the worker's index)
      pruner: median            # median | hyperband | none, or {name: median, warmup_epochs: 2}
      storage: study.db         # a journal file, or a database URL (default: OUT/study.db)
      params:                   # config key -> its distribution
        lr: {low: 1, high: 100, log: true}      # a float key: a float range
        frame: {low: 8, high: 40, step: 8}      # an int key: an int range
        m: [5, 10, 20]                          # a list: the choices (any key)

Every error names the file, line and key at fault in one line, as the sweep spec's do.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprogram.engine.config import FLAT_KEYS, TrainConfig, is_runtime_key, resolve_key
from reprogram.errors import ReprogramError
from reprogram.sweep.expand import expand
from reprogram.sweep.spec import AXIS_KEYS, Axis, SweepSpec, Where, parse_spec, read_yaml

SECTION = "tune"
TUNE_KEYS = (
    "trials", "timeout", "seed", "sampler", "sampler_seed", "pruner", "study", "storage",
    "workers", "heartbeat", "params",
)  # fmt: skip
SAMPLERS = ("tpe", "random")
PRUNER_KEYS = {
    "median": ("startup_trials", "warmup_epochs"),
    "hyperband": ("min_epochs", "reduction_factor"),
    "none": (),
}
# config keys a search may not vary: the task, the trials' seed, and how runs are selected
FIXED = {"shots", "seed", "select_on", "split_seed", "subsample_classes"}


@dataclass(frozen=True)
class Param:
    """One config key's distribution: a float or int range, or choices."""

    key: str
    kind: str  # float | int | choice
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Pruner:
    name: str = "median"  # median | hyperband | none
    startup_trials: int = 5  # median: trials finished before any is pruned
    warmup_epochs: int = 1  # median: epochs of a trial before it may be pruned
    min_epochs: int = 1  # hyperband: the smallest budget
    reduction_factor: int = 3  # hyperband


@dataclass
class TuneSpec:
    """A checked tuning spec: the task (a sweep spec of one run per seed) and the search."""

    sweep: SweepSpec
    params: dict[str, Param]
    trials: int = 20
    timeout: float | None = None
    seed: int = 1
    sampler: str = "tpe"
    sampler_seed: int = 0
    pruner: Pruner = field(default_factory=Pruner)
    study: str = ""  # default: the output folder's name
    storage: str = ""  # default: OUT/study.db (SQLite)
    workers: int = 1
    heartbeat: float = 30.0  # seconds between a running trial's heartbeats

    @property
    def where(self) -> Where:
        return self.sweep.where

    def base_values(self, out: str | Path | None = None) -> dict[str, Any]:
        """The config values of the task (its first seed's run, into ``out``): every trial
        starts from them."""
        return dict(expand(self.sweep, out)[0].values)


def load_tune_spec(path: str | Path) -> TuneSpec:
    """Read and check a tuning spec file (see the module)."""
    data, where = read_yaml(path)
    return parse_tune_spec(data, where)


def parse_tune_spec(data: dict[str, Any], where: Where | None = None) -> TuneSpec:
    """Check a tuning spec given as a mapping (what :func:`load_tune_spec` reads)."""
    where = where or Where("spec")
    data = dict(data)
    if SECTION not in data:
        raise where.error((SECTION,), "missing: the search (tune: {params: …, trials: …})")
    section = data.pop(SECTION)
    if not isinstance(section, dict):
        raise where.error((SECTION,), f"expected a mapping, got {section!r}")
    sweep = parse_spec(data, where)
    _one_task(sweep, where)
    unknown = sorted(set(map(str, section)) - set(TUNE_KEYS))
    if unknown:
        known = ", ".join(TUNE_KEYS)
        raise where.error((SECTION, unknown[0]), f"unknown key '{unknown[0]}' (known: {known})")
    if "params" not in section:
        raise where.error((SECTION, "params"), "missing: the config keys to search")
    spec = TuneSpec(sweep=sweep, params={}, seed=sweep.seeds[0])
    spec.trials = _number(section, "trials", spec.trials, int, where, least=1)
    spec.timeout = _number(section, "timeout", None, float, where, least=0)
    spec.seed = _number(section, "seed", spec.seed, int, where, least=0)
    spec.sampler_seed = _number(section, "sampler_seed", 0, int, where, least=0)
    spec.workers = _number(section, "workers", 1, int, where, least=1)
    spec.heartbeat = _number(section, "heartbeat", spec.heartbeat, float, where, least=0.1)
    spec.sampler = str(section.get("sampler", spec.sampler))
    if spec.sampler not in SAMPLERS:
        raise where.error(
            (SECTION, "sampler"), f"unknown sampler '{spec.sampler}' (known: {', '.join(SAMPLERS)})"
        )
    spec.pruner = _pruner(section.get("pruner", "median"), where)
    spec.study = str(section.get("study") or "")
    spec.storage = str(section.get("storage") or "")
    params = section["params"]
    if not isinstance(params, dict) or not params:
        raise where.error((SECTION, "params"), "expected a mapping of config keys to search")
    base = spec.base_values()
    fixed = {resolve_key(k): k for k in {**sweep.options, **sweep.methods[0].options}}
    for key, value in params.items():
        path = (SECTION, "params", str(key))
        if resolve_key(str(key)) in fixed:
            raise where.error(path, f"'{key}' is also a fixed option: search it or fix it")
        spec.params[str(key)] = _param(str(key), value, base, path, where)
    return spec


def _one_task(sweep: SweepSpec, where: Where) -> None:
    for key, count in (
        ("methods", len(sweep.methods)),
        ("datasets", len(sweep.datasets)),
        ("backbones", len(sweep.backbones)),
        ("shots", len(sweep.shots)),
    ):
        if count != 1:
            raise where.error((key,), f"a tuning spec names one task: one of {key}, not {count}")
    options = {**sweep.options, **sweep.methods[0].options}
    for key, value in options.items():
        if isinstance(value, Axis):
            raise where.error((key,), f"'{key}' is a grid axis: search it in tune.params instead")
    if str(options.get("select_on", "val")) != "val":
        raise where.error(("select_on",), "tuning selects on validation: select_on must be val")


def _number(
    section: dict[str, Any],
    key: str,
    default: Any,
    kind: type,
    where: Where,
    least: float,
    path: tuple[str, ...] = (SECTION,),
) -> Any:
    value = section.get(key)
    if value is None:
        return default
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if bad or (kind is int and not float(value).is_integer()) or value < least:
        what = "a whole number" if kind is int else "a number"
        raise where.error((*path, key), f"expected {what} >= {least}, got {value!r}")
    return kind(value)


def _pruner(value: Any, where: Where) -> Pruner:
    path: tuple[str, ...] = (SECTION, "pruner")
    entry = {"name": value} if isinstance(value, str) or value is None else value
    if not isinstance(entry, dict) or "name" not in entry:
        raise where.error(path, f"expected a name or a mapping with 'name', got {value!r}")
    name = str(entry["name"] if entry["name"] is not None else "none")
    if name not in PRUNER_KEYS:
        known = ", ".join(PRUNER_KEYS)
        raise where.error(path, f"unknown pruner '{name}' (known: {known})")
    chosen = {}
    for key in entry:
        if key == "name":
            continue
        if key not in PRUNER_KEYS[name]:
            known = ", ".join(PRUNER_KEYS[name]) or "none"
            raise where.error((*path, key), f"not a setting of the {name} pruner (known: {known})")
        least = 2 if key == "reduction_factor" else 1 if key == "min_epochs" else 0
        chosen[key] = _number(entry, key, None, int, where, least, path)
    return Pruner(name, **{k: v for k, v in chosen.items() if v is not None})


def _hint(key: str) -> Any:
    part, name = resolve_key(key)  # type: ignore[misc]
    owner = TrainConfig if part is None else type(getattr(TrainConfig(), part))
    hint = typing.get_type_hints(owner)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, type(int | None)) else hint


def _param(key: str, value: Any, base: dict[str, Any], path: tuple, where: Where) -> Param:
    found = resolve_key(key)
    if found is None:
        close = [n for n in FLAT_KEYS if n.startswith(key.replace("-", "_")[:3])]
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        raise where.error(path, f"unknown key '{key}': not a config key{hint}")
    name = found[1] if found[0] is not None and found[1] != "name" else key
    if key in AXIS_KEYS or name in FIXED or found[1] == "name" or key in FIXED:
        raise where.error(path, f"'{key}' is part of the task: it cannot be searched")
    if is_runtime_key(key):
        raise where.error(path, f"'{key}' is an execution setting: it cannot be searched")
    hint = _hint(key)
    if isinstance(value, list):
        if not value:
            raise where.error(path, "empty list: give at least one choice")
        for index, item in enumerate(value):
            if item is not None and not isinstance(item, (bool, int, float, str)):
                raise where.error((*path, index), f"a choice is a single value, got {item!r}")
        param = Param(key, "choice", choices=tuple(value))
        checks = [((*path, i), v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        param = _range(key, value, hint, path, where)
        checks = [((*path, "low"), param.low), ((*path, "high"), param.high)]
    else:
        raise where.error(
            path, f"expected choices [a, b, …] or a range {{low, high}}, got {value!r}"
        )
    for at, item in checks:
        _check_value(key, item, base, at, where)
    return param


def _range(key: str, value: dict[str, Any], hint: Any, path: tuple, where: Where) -> Param:
    extra = sorted(set(map(str, value)) - {"low", "high", "log", "step"})
    if extra:
        raise where.error(
            (*path, extra[0]), f"unknown key '{extra[0]}' (known: low, high, log, step)"
        )
    if hint not in (int, float):
        kind = getattr(hint, "__name__", str(hint))
        raise where.error(path, f"'{key}' holds a {kind}: give its choices as a list")
    for bound in ("low", "high"):
        item = value.get(bound)
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise where.error((*path, bound), f"expected a number, got {item!r}")
        if hint is int and not float(item).is_integer():
            raise where.error((*path, bound), f"'{key}' is a whole number, got {item!r}")
    low, high, log = value["low"], value["high"], bool(value.get("log", False))
    if low >= high:
        raise where.error(path, f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise where.error((*path, "low"), f"a log range starts above 0, got {low}")
    step = value.get("step")
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
    ):
        raise where.error((*path, "step"), f"expected a number > 0, got {step!r}")
    if step is not None and log:
        raise where.error((*path, "step"), "a log range takes no step")
    kind = "int" if hint is int else "float"
    cast = int if hint is int else float
    return Param(key, kind, cast(low), cast(high), log, None if step is None else cast(step))


def _check_value(key: str, value: Any, base: dict[str, Any], path: tuple, where: Where) -> None:
    """``value`` is a valid setting of ``key`` for the task (its type and the config's checks)."""
    from reprogram.engine.config import load_config

    try:
        load_config(None, {**base, key: value}).validate()
    except ReprogramError as err:
        raise where.error(path, str(err)) from None
