"""The typed training configuration: paper defaults, YAML files, command-line overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from reprogram.errors import ReprogramError
from reprogram.model.methods import MethodOptions

# Execution settings: how a run is executed, not what it computes. On --resume they come from
# the command line; everything else (the run's identity) comes from the checkpoint.
RUNTIME_FIELDS = (
    "device",
    "compile",
    "grad_checkpointing",
    "deterministic",
    "eval_batch_size",
    "checkpoint_every",
    "quiet",
    "tensorboard",
)
LR_SCHEDULE_SPANS = ("all-epochs", "training-steps")


@dataclass
class TrainConfig:
    """Everything a run needs. Defaults are the paper's (DVP, ICML 2025)."""

    method: str = "dvp-cse"
    dataset: str = ""
    root: str | None = None
    backbone: str = "ViT-B-16"
    weights: str | None = None
    quick_gelu: bool | None = None
    descriptions: list[str] = field(default_factory=list)
    causes: list[int] = field(default_factory=list)  # packaged causes for dvp-cse; [] = 1, 2, 3
    description_source: str = ""  # packaged AttrVR set: gpt4omini_llm, gpt4omini_mllm, llama, phi3
    shots: int = 16  # per class from train; 0 = all images
    seed: int = 1
    split_seed: int = 0  # for folder/CSV datasets without explicit splits
    subsample_classes: str = "all"  # all | base | novel (base-to-novel: CoCoOp's halves)
    epochs: int = 200
    batch_size: int = 64
    lr: float = 40.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = True
    prm_warmup_epochs: int = 1  # the paper's epoch 0 only estimates the PRM
    # cosine over all epochs x steps, stepped in training epochs only (published; the last lr is
    # not 0), or "training-steps": over the training epochs' steps only (ends at lr 0)
    lr_schedule_span: str = "all-epochs"
    eval_every: int = 0  # evaluate validation every N epochs; 0 = about 20 times per run
    select_on: str = "val"  # "val" (ours) or "test" (the official scripts' optimistic protocol)
    eval_batch_size: int = 256
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    grad_checkpointing: bool = False
    deterministic: bool = False
    skip_bad_images: bool = False
    allow_small_classes: bool = False  # train classes with fewer images than `shots`
    checkpoint_every: int = 1
    quiet: bool = False
    tensorboard: bool = False  # also write TensorBoard event files beside metrics.jsonl
    # method options (see MethodOptions)
    m: int = 20
    prm_top_k: int = 3
    attr_top_k: int = 3
    alpha: float = 0.5
    clusters: int | None = None
    kmeans_seed: int = 0
    kmeans_n_init: int | None = None  # DVP-cls k-means restarts; None: sklearn default (published)
    description_sampling: str = "published"  # "distinct": no repeats when a class has exactly m
    template: str = "This is a photo of {}."
    frame: int | None = None

    def method_options(self) -> MethodOptions:
        names = {f.name for f in fields(MethodOptions)}
        return MethodOptions(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def validate(self) -> TrainConfig:
        from reprogram.model.methods import get_recipe

        get_recipe(self.method)
        if self.select_on not in ("val", "test"):
            raise ReprogramError(f"select_on must be 'val' or 'test', got '{self.select_on}'")
        for name in ("epochs", "batch_size", "eval_batch_size", "m", "checkpoint_every"):
            if getattr(self, name) < (0 if name == "epochs" else 1):
                raise ReprogramError(f"{name} must be positive, got {getattr(self, name)}")
        if self.shots < 0:
            raise ReprogramError(f"shots must be >= 0 (0 = all images), got {self.shots}")
        if not self.dataset:
            raise ReprogramError("no dataset given (--dataset NAME, folder:PATH or csv:FILE)")
        _validate_options(self)
        if self.subsample_classes not in ("all", "base", "novel"):
            raise ReprogramError(
                f"subsample_classes must be all, base or novel, got '{self.subsample_classes}'"
            )
        return absolute_paths(self)  # also for configs built in code, before a run stores them

    def resolved_eval_every(self) -> int:
        return self.eval_every or max(1, self.epochs // 20)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _validate_options(config: TrainConfig) -> None:
    """Static checks of the optimiser and method options (those needing the model are made
    where it is built: the frame in ``PromptBank``, clusters in ``build_reprogrammer``)."""
    import math
    import string

    if not math.isfinite(config.lr) or config.lr < 0:
        raise ReprogramError(f"lr must be a finite number >= 0, got {config.lr}")
    if config.momentum < 0:
        raise ReprogramError(f"momentum must be >= 0, got {config.momentum}")
    if config.eval_every < 0:
        raise ReprogramError(
            f"eval_every must be >= 0 (0 = about 20 times per run), got {config.eval_every}"
        )
    for name in ("prm_top_k", "attr_top_k"):
        value = getattr(config, name)
        if not 1 <= value <= config.m:
            raise ReprogramError(
                f"{name} must be between 1 and m ({config.m}, descriptions per class), got {value}"
            )
    if not 0.0 <= config.alpha <= 1.0:
        raise ReprogramError(f"alpha must be between 0 and 1, got {config.alpha}")
    if config.clusters is not None and config.clusters < 1:
        raise ReprogramError(
            f"clusters must be at least 1 (omit it for the dataset's default), "
            f"got {config.clusters}"
        )
    if config.frame is not None and config.frame < 1:
        raise ReprogramError(
            f"frame must be at least 1 px (omit it for the default), got {config.frame}"
        )
    try:
        fields_ = [f for _, f, _, _ in string.Formatter().parse(config.template) if f is not None]
    except ValueError as err:
        raise ReprogramError(f"template {config.template!r}: {err}") from err
    if fields_ != [""]:
        raise ReprogramError(
            f"template {config.template!r} must hold exactly one '{{}}' for the class name "
            f"(e.g. 'This is a photo of {{}}.'), found {len(fields_)} fields "
            + (f"({', '.join(repr(f) for f in fields_ if f)})" if any(fields_) else "")
        )


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


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
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return hint(value)
    except (TypeError, ValueError) as err:
        raise ReprogramError(
            f"config key '{name}': cannot read {value!r} as {hint.__name__}"
        ) from err


def apply_overrides(config: TrainConfig, overrides: dict[str, Any], source: str) -> TrainConfig:
    hints = _field_types()
    for key, value in overrides.items():
        name = key.replace("-", "_")
        if name not in hints:
            close = [n for n in hints if n.startswith(name[:3])]
            hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
            raise ReprogramError(f"{source}: unknown config key '{key}'{hint}")
        setattr(config, name, _coerce(name, value, hints[name]))
    return config


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then a YAML file, then explicit overrides (command line)."""
    config = TrainConfig()
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
        apply_overrides(config, data, str(path))
    if overrides:
        apply_overrides(
            config, {k: v for k, v in overrides.items() if v is not None}, "command line"
        )
    return absolute_paths(config)


PATH_PREFIXES = ("folder:", "csv:", "local-dir:", "hf:")


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def _absolute_spec(spec: str, bare_folder: bool = False) -> str:
    """``folder:PATH``-style specs with an absolute PATH; with ``bare_folder`` also a bare
    existing folder (a backbone folder given without ``--weights``)."""
    for prefix in PATH_PREFIXES:
        if spec.startswith(prefix):
            return prefix + _absolute(spec[len(prefix) :])
    if bare_folder and spec and Path(spec).expanduser().is_dir():
        return _absolute(spec)
    return spec


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """Make every path a run stores absolute (relative ones are read from the current folder),
    so that ``eval``, ``predict``, ``explain`` and ``--resume`` work from any folder.

    Names (``dtd``, ``ViT-B-16``, ``random:tiny``) and weight tags that are no path stay as given.
    """
    config.dataset = _absolute_spec(config.dataset)
    config.backbone = _absolute_spec(config.backbone, bare_folder=config.weights is None)
    if config.root:
        config.root = _absolute(config.root)
    if config.weights and (
        Path(config.weights).expanduser().exists() or any(c in config.weights for c in "/\\~")
    ):
        config.weights = _absolute(config.weights)
    config.descriptions = [_absolute(p) for p in config.descriptions]
    return config


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``--set key=value`` items to a dict."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ReprogramError(f"--set expects key=value, got '{item}'")
        result[key.strip()] = value.strip()
    return result


def save_config(config: TrainConfig, path: str | Path) -> None:
    from reprogram.storage.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def resumed_config(saved: dict[str, Any], command_line: TrainConfig) -> TrainConfig:
    """A resumed run's config: its identity (method, data, hyper-parameters) from the
    checkpoint's ``saved`` config, its execution settings (:data:`RUNTIME_FIELDS`) from the
    command line."""
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in saved.items() if k in known}
    values.setdefault("lr_schedule_span", "training-steps")  # what runs made before it used
    values.update({name: getattr(command_line, name) for name in RUNTIME_FIELDS})
    return TrainConfig(**values)
