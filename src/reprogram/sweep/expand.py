"""A spec's grid expanded into runs, each an ordinary run folder with a stable, readable name:
``OUT/<dataset>/<method>/<backbone>/<shots>-shot/<options>/seed-N``.

``<options>`` holds the grid axes of the run's options, by key in alphabetical order as the spec
writes their values (``lr=10,m=20``), or ``default`` where the spec has none; fixed options are
not in the name (the run's ``config.yaml`` holds them all).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprogram.engine.config import TrainConfig, load_config
from reprogram.errors import ReprogramError
from reprogram.sweep.spec import Axis, DatasetEntry, SweepSpec, _safe

NO_OPTIONS = "default"
PLURALS = {
    "dataset": "datasets",
    "method": "methods",
    "backbone": "backbones",
    "shots": "shot counts",
    "options": "option sets",
    "seed": "seeds",
}


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its folder under the sweep's output and its config's values."""

    name: str  # the run folder, relative to the sweep's output: dtd/vp/ViT-B-16/16-shot/…
    values: dict[str, Any] = field(compare=False)  # config keys as load_config takes them
    labels: dict[str, str] = field(compare=False)  # dataset, method, backbone, shots, options, seed

    def config(self, **runtime: Any) -> TrainConfig:
        """The run's config, with execution settings (device, quiet, …) from ``runtime``."""
        return load_config(None, {**self.values, **runtime})

    @property
    def group(self) -> str:
        """The name without the seed: the runs a table cell averages."""
        return self.name.rpartition("/")[0]


def default_out(spec: SweepSpec) -> Path:
    return spec.out if spec.out is not None else Path("runs") / "sweep"


def dataset_value(entry: DatasetEntry, out: Path) -> tuple[str, str | None]:
    """``(dataset, root)`` as a run's config holds them: a toy task is its written folder."""
    task = entry.toy_task
    if task is None:
        return entry.name, entry.root
    root = Path(entry.root).expanduser() if entry.root else out / "data"
    return f"folder:{(root / task).absolute()}", None


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(_value_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return _safe(str(value))


def options_label(axes: dict[str, Any]) -> str:
    if not axes:
        return NO_OPTIONS
    return ",".join(f"{key}={_value_text(axes[key])}" for key in sorted(axes))


def _grid(options: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fixed options, and every combination of the axes (key -> value)."""
    fixed = {k: v for k, v in options.items() if not isinstance(v, Axis)}
    axes = {k: v.values for k, v in options.items() if isinstance(v, Axis)}
    combos = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    return fixed, combos


def expand(spec: SweepSpec, out: str | Path | None = None) -> list[SweepRun]:
    """Every run of the spec's grid, in folder order (dataset, method, backbone, shots,
    options, seed). Each run's config is checked here (a bad combination names the run)."""
    out = Path(out) if out is not None else default_out(spec)
    runs: list[SweepRun] = []
    for dataset in spec.datasets:
        name, root = dataset_value(dataset, out)
        for method in spec.methods:
            fixed, combos = _grid({**spec.options, **method.options})
            for backbone, shots, axes, seed in itertools.product(
                spec.backbones, spec.shots, combos, spec.seeds
            ):
                labels = {
                    "dataset": dataset.label,
                    "method": method.name,
                    "backbone": backbone.label,
                    "shots": f"{shots}-shot",
                    "options": options_label(axes),
                    "seed": f"seed-{seed}",
                }
                values = {
                    **fixed,
                    **axes,
                    "method": method.name,
                    "dataset": name,
                    "root": root,
                    "backbone": backbone.name,
                    "weights": backbone.weights,
                    "shots": shots,
                    "seed": seed,
                }
                run = SweepRun("/".join(labels.values()), values, labels)
                _check(run, spec)
                runs.append(run)
    return runs


def _check(run: SweepRun, spec: SweepSpec) -> None:
    try:
        run.config().validate()
    except ReprogramError as err:
        raise ReprogramError(f"{spec.where.file}: run {run.name}: {err}") from None


def expansion_text(runs: list[SweepRun], out: Path) -> str:
    """What a sweep will run: the count by part, then every run folder."""
    parts = {
        key: sorted({r.labels[key] for r in runs}, key=[r.labels[key] for r in runs].index)
        for key in ("dataset", "method", "backbone", "shots", "options", "seed")
    }
    counts = " × ".join(f"{len(v)} {PLURALS[k]}" for k, v in parts.items())
    lines = [f"sweep into {out}: {len(runs)} runs ({counts})"]
    lines += [f"  {run.name}" for run in runs]
    return "\n".join(lines)
