"""The typed training configuration: paper defaults, YAML files, command-line overrides.

A :class:`TrainConfig` is made of typed parts, each holding its fields' defaults once:

- ``data`` (:class:`DataConfig`): which images and description files, how they are split;
- ``method`` (:class:`MethodConfig`): the method's name and its hyper-parameters, whose
  defaults are :class:`~reprogram.model.options.MethodOptions`' (it extends that class), then
  the method's own (its recipe's ``overrides``, see below);
- ``backbone`` (:class:`BackboneConfig`): the frozen model (name, weights, QuickGELU) and the
  ``precision`` its image encoder runs in: precision changes the numbers, so it is identity;
- ``optim`` (:class:`OptimConfig`): epochs, batches, SGD, schedule, evaluation and selection;
- ``runtime`` (:class:`RuntimeConfig`): how a run executes (device, compile, quiet, …), not
  what it computes;
- ``seed`` (top level): it seeds the shots, the description sampling and the training alike.

Everything but ``runtime`` is the run's identity: it is what ``config.yaml`` and the checkpoint
hold (:meth:`TrainConfig.to_dict`, read back by the versioned :meth:`TrainConfig.from_dict`),
and on ``--resume`` it comes from the checkpoint while ``runtime`` comes from the command line.

Users type flat keys (``lr``, ``m``; a part's ``name`` field is typed as the part: ``method``,
``backbone``) or dotted ones (``optim.lr``, ``method.name``) in YAML files and ``--set``.

Method defaults: naming a method (``method: x`` in a YAML file, ``--method x``,
``load_config(None, {"method": "x"})``, ``TrainConfig().updated(method="x")``) sets every method
option that is not given alongside it to x's default (:meth:`Recipe.options
<reprogram.model.recipes.Recipe.options>`). "Alongside" is the same ``updated`` call, or for
:func:`load_config` the user's YAML file and the command line together; a value given there wins.
A run's own config (``config.yaml``, the checkpoint: :meth:`TrainConfig.from_dict`) holds resolved
values and is read back exactly, without applying any defaults again.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import string
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from reprogram.engine.paths import absolute_paths
from reprogram.errors import ReprogramError
from reprogram.model.options import MethodOptions
from reprogram.text.descriptions import LENGTH_MODES

VERSION = 2  # of the persisted form; 1 = the flat form of earlier run folders
# What runs stored before these keys existed used (they are read back with it, not the default).
LEGACY = {"method": {"description_length": "stripped", "logit_scale_cap": 100.0}}
LR_SCHEDULE_SPANS = ("all-epochs", "training-steps")
HEAD_OPTIMIZERS = ("adam", "sgd")
HEAD_SCHEDULES = ("cosine", "constant")


def _positive(name: str, value: int, least: int = 1) -> None:
    if value < least:
        raise ReprogramError(f"{name} must be positive, got {value}")


@dataclass
class DataConfig:
    """The images and description files a run reads, and how they are split."""

    dataset: str = ""
    root: str | None = None
    shots: int = 16  # per class from train; 0 = all images
    split_seed: int = 0  # for folder/CSV datasets without explicit splits
    subsample_classes: str = "all"  # all | base | novel (base-to-novel: CoCoOp's halves)
    augment: bool = True
    skip_bad_images: bool = False
    allow_small_classes: bool = False  # train classes with fewer images than `shots`
    descriptions: list[str] = field(default_factory=list)
    causes: list[int] = field(default_factory=list)  # packaged causes for dvp-cse; [] = 1, 2, 3
    description_source: str = ""  # packaged AttrVR set: gpt4omini_llm, gpt4omini_mllm, llama, phi3

    def validate(self) -> None:
        if self.shots < 0:
            raise ReprogramError(f"shots must be >= 0 (0 = all images), got {self.shots}")
        if not self.dataset:
            raise ReprogramError("no dataset given (--dataset NAME, folder:PATH or csv:FILE)")
        if self.subsample_classes not in ("all", "base", "novel"):
            raise ReprogramError(
                f"subsample_classes must be all, base or novel, got '{self.subsample_classes}'"
            )


@dataclass
class MethodConfig(MethodOptions):
    """The method (``name``, flat key ``method``) and its options (defaults: MethodOptions', then
    the method's own: see :meth:`take_method_defaults` and the module)."""

    name: str = "dvp-cse"

    def options(self) -> MethodOptions:
        return MethodOptions(**{f.name: getattr(self, f.name) for f in fields(MethodOptions)})

    def take_method_defaults(self, given: Collection[str] = ()) -> MethodConfig:
        """Set every option not in ``given`` to the default of the method ``name``."""
        from reprogram.model.recipes import get_recipe

        defaults = get_recipe(self.name).options()
        for f in fields(MethodOptions):
            if f.name not in given:
                setattr(self, f.name, getattr(defaults, f.name))
        return self

    def validate(self) -> None:
        """Static checks (those needing the model are made where it is built: the frame in
        ``PromptBank``, clusters in ``build_reprogrammer``)."""
        from reprogram.model.methods import get_recipe

        get_recipe(self.name)
        _positive("m", self.m)
        for name in ("prm_top_k", "attr_top_k"):
            value = getattr(self, name)
            if not 1 <= value <= self.m:
                raise ReprogramError(
                    f"{name} must be between 1 and m ({self.m}, descriptions per class), "
                    f"got {value}"
                )
        if not 0.0 <= self.alpha <= 1.0:
            raise ReprogramError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.clusters is not None and self.clusters < 1:
            raise ReprogramError(
                f"clusters must be at least 1 (omit it for the dataset's default), "
                f"got {self.clusters}"
            )
        if self.frame is not None and self.frame < 1:
            raise ReprogramError(
                f"frame must be at least 1 px (omit it for the default), got {self.frame}"
            )
        if self.probe_init not in ("zero", "text"):
            raise ReprogramError(f"probe_init must be 'zero' or 'text', got '{self.probe_init}'")
        _check_template(self.template)
        if self.description_length not in LENGTH_MODES:
            raise ReprogramError(
                f"description_length must be one of {', '.join(LENGTH_MODES)}, "
                f"got '{self.description_length}'"
            )
        cap = self.logit_scale_cap
        if cap is not None and not (math.isfinite(cap) and cap > 0):
            raise ReprogramError(
                f"logit_scale_cap must be a finite number > 0 (omit it for the model's own "
                f"scale), got {cap}"
            )


def _check_template(template: str) -> None:
    try:
        found = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ReprogramError(f"template {template!r}: {err}") from err
    if found != [""]:
        raise ReprogramError(
            f"template {template!r} must hold exactly one '{{}}' for the class name "
            f"(e.g. 'This is a photo of {{}}.'), found {len(found)} fields "
            + (f"({', '.join(repr(f) for f in found if f)})" if any(found) else "")
        )


@dataclass
class BackboneConfig:
    """The frozen model (``name``, flat key ``backbone``) and its image encoder's precision."""

    name: str = "ViT-B-16"
    weights: str | None = None
    quick_gelu: bool | None = None
    precision: str = "auto"


@dataclass
class OptimConfig:
    """Training epochs, SGD, the learning-rate schedule, evaluation and model selection."""

    epochs: int = 200
    batch_size: int = 64
    lr: float = 40.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    prm_warmup_epochs: int = 1  # the paper's epoch 0 only estimates the PRM
    # cosine over all epochs x steps, stepped in training epochs only (published; the last lr is
    # not 0), or "training-steps": over the training epochs' steps only (ends at lr 0)
    lr_schedule_span: str = "all-epochs"
    eval_every: int = 0  # evaluate validation every N epochs; 0 = about 20 times per run
    select_on: str = "val"  # "val" (ours) or "test" (the official scripts' optimistic protocol)
    # trained heads (RVP's P and E, ...): the paper gives lr 1e-3 only; Adam and the prompt's
    # cosine are our choice (docs/methods.md, "RVP"); sgd uses ``momentum``
    head_lr: float = 1e-3
    head_optimizer: str = "adam"  # adam | sgd
    head_schedule: str = "cosine"  # cosine (the prompt's per-step cosine) | constant

    def resolved_eval_every(self) -> int:
        return self.eval_every or max(1, self.epochs // 20)

    def validate(self) -> None:
        if self.select_on not in ("val", "test"):
            raise ReprogramError(f"select_on must be 'val' or 'test', got '{self.select_on}'")
        _positive("epochs", self.epochs, least=0)
        _positive("batch_size", self.batch_size)
        if not math.isfinite(self.lr) or self.lr < 0:
            raise ReprogramError(f"lr must be a finite number >= 0, got {self.lr}")
        if not math.isfinite(self.head_lr) or self.head_lr < 0:
            raise ReprogramError(f"head_lr must be a finite number >= 0, got {self.head_lr}")
        if self.head_optimizer not in HEAD_OPTIMIZERS:
            raise ReprogramError(
                f"head_optimizer must be {' or '.join(HEAD_OPTIMIZERS)}, "
                f"got '{self.head_optimizer}'"
            )
        if self.head_schedule not in HEAD_SCHEDULES:
            raise ReprogramError(
                f"head_schedule must be {' or '.join(HEAD_SCHEDULES)}, got '{self.head_schedule}'"
            )
        if self.momentum < 0:
            raise ReprogramError(f"momentum must be >= 0, got {self.momentum}")
        _positive("prm_warmup_epochs", self.prm_warmup_epochs, least=0)
        if self.eval_every < 0:
            raise ReprogramError(
                f"eval_every must be >= 0 (0 = about 20 times per run), got {self.eval_every}"
            )


@dataclass
class RuntimeConfig:
    """How a run executes, not what it computes; never persisted (on --resume: the caller's)."""

    device: str = "auto"
    compile: bool = False
    grad_checkpointing: bool = False
    deterministic: bool = False
    eval_batch_size: int = 256
    checkpoint_every: int = 1
    quiet: bool = False
    tensorboard: bool = False  # also write TensorBoard event files beside metrics.jsonl
    skip_test: bool = False  # never read the test split (tuning): results hold no test numbers

    def validate(self) -> None:
        _positive("eval_batch_size", self.eval_batch_size)
        _positive("checkpoint_every", self.checkpoint_every)


PARTS: dict[str, type] = {
    "method": MethodConfig,
    "data": DataConfig,
    "backbone": BackboneConfig,
    "optim": OptimConfig,
    "runtime": RuntimeConfig,
}
IDENTITY_PARTS = ("method", "data", "backbone", "optim")


@dataclass
class TrainConfig:
    """Everything a run needs. Defaults are the paper's (DVP, ICML 2025); see the module."""

    method: MethodConfig = field(default_factory=lambda: MethodConfig().take_method_defaults())
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 1

    def validate(self) -> TrainConfig:
        self.method.validate()
        self.optim.validate()
        self.runtime.validate()
        self.data.validate()
        self._check_warmup()
        if self.runtime.skip_test and self.optim.select_on == "test":
            raise ReprogramError("select_on 'test' reads the test split: not with skip_test")
        return absolute_paths(self)  # also for configs built in code, before a run stores them

    def _check_warmup(self) -> None:
        """A method whose aggregator is estimated (the PRM) only estimates it in its first
        ``prm_warmup_epochs``: at least one epoch after them must train (0 epochs: evaluate)."""
        from reprogram.model.recipes import get_recipe

        recipe = get_recipe(self.method.name)
        warmup, epochs = self.optim.prm_warmup_epochs, self.optim.epochs
        if recipe.trainable and recipe.aggregation.estimates and 0 < epochs <= warmup:
            raise ReprogramError(
                f"prm_warmup_epochs ({warmup}) must be below epochs ({epochs}): {recipe.name} "
                f"only estimates its PRM in the first {warmup}, so nothing would be trained "
                "(raise epochs, or set prm_warmup_epochs=0 to train from the first epoch)"
            )

    def to_dict(self) -> dict[str, Any]:
        """The run's identity as persisted (config.yaml, checkpoint): no runtime part."""
        return {
            "version": VERSION,
            "seed": self.seed,
            **{p: _part_dict(getattr(self, p)) for p in IDENTITY_PARTS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from :meth:`to_dict`'s nested form, or from the flat form (no ``version``)
        of earlier run folders: each flat key goes to its part, unknown ones are dropped."""
        if "version" not in data:
            values = {k: v for k, v in data.items() if k in FLAT_KEYS}
            values.setdefault("lr_schedule_span", "training-steps")  # what those runs used
            for legacy in LEGACY.values():
                for key, value in legacy.items():
                    values.setdefault(key, value)
            return _set(cls(), values, "from_dict()")
        if data["version"] != VERSION:
            raise ReprogramError(
                f"config version {data['version']} is not one this reprogram reads ({VERSION})"
            )
        config = cls(seed=data.get("seed", cls.seed))
        for part, kind in PARTS.items():
            given = {**LEGACY.get(part, {}), **(data.get(part) or {})}
            unknown = sorted(set(given) - {f.name for f in fields(kind)})
            if unknown:
                raise ReprogramError(f"config part '{part}': unknown keys {', '.join(unknown)}")
            setattr(config, part, kind(**given))
        return config

    def updated(self, **values: Any) -> TrainConfig:
        """A copy with the given settings (flat or dotted keys, values as typed) changed; naming
        the method brings its defaults for the method options not given (see the module)."""
        config = _set(copy.deepcopy(self), values, "updated()")
        return _take_method_defaults(config, _given(values))


def _set(config: TrainConfig, values: dict[str, Any], source: str) -> TrainConfig:
    for key, value in values.items():
        owner, name = _owner(config, key, source)
        setattr(owner, name, value)
    return config


def _given(values: Overrides) -> set[tuple[str | None, str]]:
    """The ``(part, field)`` of each key of ``values`` (flat, dotted or nested)."""
    return {found for key, _ in _dotted(values) if (found := resolve_key(key)) is not None}


def _take_method_defaults(
    config: TrainConfig, given: Iterable[tuple[str | None, str]]
) -> TrainConfig:
    """If ``given`` names the method: its defaults for the method options not in ``given``."""
    given = set(given)
    if ("method", "name") in given:
        config.method.take_method_defaults({name for part, name in given if part == "method"})
    return config


def _part_dict(part: Any) -> dict[str, Any]:
    values = dataclasses.asdict(part)
    return {"name": values.pop("name"), **values} if "name" in values else values


def _flat_keys() -> dict[str, tuple[str | None, str]]:
    """Every flat key a user may type: ``key -> (part, field)`` (``None``: top level)."""
    keys: dict[str, tuple[str | None, str]] = {"seed": (None, "seed")}
    for part, kind in PARTS.items():
        for f in fields(kind):
            key = part if f.name == "name" else f.name
            if key in keys:
                raise AssertionError(f"config key '{key}' is in two parts")
            keys[key] = (part, f.name)
    return keys


FLAT_KEYS = _flat_keys()


def resolve_key(key: str) -> tuple[str | None, str] | None:
    """``lr`` or ``optim.lr`` -> ``("optim", "lr")``; ``None`` for an unknown key."""
    name = key.replace("-", "_")
    part, dot, rest = name.partition(".")
    if dot:
        known = part in PARTS and rest in {f.name for f in fields(PARTS[part])}
        return (part, rest) if known else None
    return FLAT_KEYS.get(name)


def is_runtime_key(key: str) -> bool:
    return (resolve_key(key) or (None, ""))[0] == "runtime"


def _owner(config: TrainConfig, key: str, source: str) -> tuple[Any, str]:
    found = resolve_key(key)
    if found is None:
        name = key.replace("-", "_").rpartition(".")[2]
        close = [n for n in FLAT_KEYS if n.startswith(name[:3])]
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        raise ReprogramError(f"{source + ': ' if source else ''}unknown config key '{key}'{hint}")
    part, name = found
    return (config if part is None else getattr(config, part)), name


def flat_items(config: TrainConfig, runtime: bool = False) -> dict[str, Any]:
    """The settings by flat key (the names users type), without ``runtime`` unless asked."""
    return {
        key: copy.deepcopy(getattr(config if part is None else getattr(config, part), name))
        for key, (part, name) in FLAT_KEYS.items()
        if runtime or part != "runtime"
    }


def _hint(key: str) -> Any:
    part, name = resolve_key(key)  # type: ignore[misc]
    return typing.get_type_hints(TrainConfig if part is None else PARTS[part])[name]


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert a YAML or command-line value to the field's type, naming the key on failure."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(name, value, inner)
    if origin is list:
        items = value if isinstance(value, list) else [v for v in str(value).split(",") if v]
        return [_coerce(name, v, args[0]) for v in items]
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint in (int, float) and isinstance(value, bool):  # YAML `epochs: true` is no 1
            raise ValueError(value)
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return hint(value)
    except (TypeError, ValueError) as err:
        raise ReprogramError(
            f"config key '{name}': cannot read {value!r} as {hint.__name__}"
        ) from err


Overrides = Mapping[str, Any] | Iterable[tuple[str, Any]]  # settings by key, in order


def _dotted(overrides: Overrides) -> list[tuple[str, Any]]:
    """Nested YAML mappings of a part (``optim: {lr: 10}``) as dotted keys (``optim.lr``); the
    items in order (a key may come twice: ``--epochs`` and ``--set epochs=…``)."""
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    flat: list[tuple[str, Any]] = []
    for key, value in items:
        if key in PARTS and isinstance(value, dict):
            flat += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            flat.append((key, value))
    return flat


def apply_overrides(config: TrainConfig, overrides: Overrides, source: str) -> TrainConfig:
    """Set each key (flat, dotted or nested) to its value read as the field's type. One field
    given two different values in ``overrides`` (``shots`` and ``data: {shots: …}``,
    ``--epochs`` and ``--set epochs=…``) is refused, naming both."""
    seen: dict[tuple[str | None, str], tuple[str, Any]] = {}
    prefix = f"{source}: " if source else ""
    for key, value in _dotted(overrides):
        owner, name = _owner(config, key, source)
        try:
            typed = _coerce(name, value, _hint(key))
        except ReprogramError as err:
            raise ReprogramError(f"{prefix}{err}") from None
        found = resolve_key(key)
        if found in seen and seen[found][1] != typed:
            first, before = seen[found]
            spelled = f"'{first}'" + (f" (and '{key}')" if key != first else "")
            raise ReprogramError(
                f"{prefix}config key {spelled} is given two values, {before!r} and {typed!r}: "
                "give it once"
            )
        seen[found] = (key, typed)  # type: ignore[index]
        setattr(owner, name, typed)
    return config


def load_config(
    path: str | Path | None = None,
    overrides: Overrides | None = None,
    source: str = "command line",
) -> TrainConfig:
    """Defaults, then a YAML file (a user's flat keys, or a run's config.yaml), then explicit
    overrides (named ``source`` in errors); a method named in either brings its defaults."""
    config = TrainConfig()
    given: set[tuple[str | None, str]] = set()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ReprogramError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ReprogramError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(data, dict):
            raise ReprogramError(f"{path}: expected a mapping of config keys")
        if "version" in data:
            config = TrainConfig.from_dict(data)  # resolved: every method option is given
            given = {("method", f.name) for f in fields(MethodConfig)}
        else:
            apply_overrides(config, data, str(path))
            given = _given(data)
    if overrides:
        overrides = [(k, v) for k, v in _dotted(overrides) if v is not None]
        apply_overrides(config, overrides, source)
        given |= _given(overrides)
    return absolute_paths(_take_method_defaults(config, given))


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``--set key=value`` items to a dict; a key set twice to different values is refused."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ReprogramError(f"--set expects key=value, got '{item}'")
        key, value = key.strip(), value.strip()
        if result.get(key, value) != value:
            raise ReprogramError(
                f"--set: config key '{key}' is given two values, {result[key]!r} and {value!r}: "
                "give it once"
            )
        result[key] = value
    return result


def save_config(config: TrainConfig, path: str | Path) -> None:
    from reprogram.storage.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def read_config_file(path: str | Path) -> TrainConfig | None:
    """A run folder's config.yaml (either form), or ``None`` when there is none."""
    path = Path(path)
    return TrainConfig.from_dict(yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def resumed_config(saved: dict[str, Any], command_line: TrainConfig) -> TrainConfig:
    """A resumed run's config: its identity (method, data, hyper-parameters) from the
    checkpoint's ``saved`` config, its execution settings (``runtime``) from the command line."""
    config = TrainConfig.from_dict(saved)
    config.runtime = copy.deepcopy(command_line.runtime)
    return config
