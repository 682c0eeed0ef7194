"""The published tables, shipped as package data (``assets/published/*.json``), and how a run is
matched to them: method, dataset, backbone and shots.

Each file holds one paper's rows: ``paper``, ``defaults`` (protocol and source, which a row may
override) and ``rows``, each with our method name (``method``; ``name`` is the paper's), the
published backbone, per-dataset ``cells`` keyed by our dataset names (where the paper gives
them), the ``average`` over its datasets (where given), and a ``variant`` for ablations (never
matched to a run). ``backbones.json`` maps what a run records to the published backbone names.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import PurePath
from typing import Any

from reprogram.data.catalog import ALIASES, is_published
from reprogram.errors import ReprogramError

BACKBONES_FILE = "backbones.json"


@dataclass(frozen=True)
class PublishedRow:
    """One row of a published table (test accuracy in %)."""

    paper: str
    source: str
    table: str | None
    method: str | None  # our method name (None: a method reprogram does not have)
    name: str  # the method as the paper names it
    backbone: str  # ViT-B/16, RN50, RN101, ViT-B/32
    shots: int
    seeds: int
    statistic: str
    weights: str
    cells: dict[str, float] = field(default_factory=dict)  # our dataset name -> accuracy
    average: float | None = None  # the paper's average over ``datasets``
    datasets: tuple[str, ...] = ()  # what the average is over: the cells, or the file's list
    variant: str | None = None  # an ablation: never matched to a run
    file: str = ""

    @property
    def citation(self) -> str:
        table = f", table {self.table}" if self.table else ""
        return f"{self.paper}; {self.source}{table}"


@dataclass(frozen=True)
class PublishedValue:
    """A published number a reproduced cell is compared with."""

    value: float
    row: PublishedRow


def _published_files() -> list[tuple[str, dict[str, Any]]]:
    folder = resources.files("reprogram") / "assets" / "published"
    found = []
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json") and item.name != BACKBONES_FILE:
            found.append((item.name, json.loads(item.read_text(encoding="utf-8"))))
    return found


def parse_rows(name: str, data: dict[str, Any]) -> list[PublishedRow]:
    """The rows of one published-table file, each with the file's defaults filled in."""
    defaults = data.get("defaults", {})
    rows = []
    for number, raw in enumerate(data.get("rows", []), start=1):
        values = {**defaults, **raw}
        try:
            rows.append(
                PublishedRow(
                    paper=data["paper"],
                    source=values["source"],
                    table=values.get("table"),
                    method=values["method"],
                    name=values["name"],
                    backbone=values["backbone"],
                    shots=int(values["shots"]),
                    seeds=int(values["seeds"]),
                    statistic=values["statistic"],
                    weights=values["weights"],
                    cells={k: float(v) for k, v in (values.get("cells") or {}).items()},
                    datasets=tuple(values.get("cells") or values.get("datasets") or ()),
                    average=None if values.get("average") is None else float(values["average"]),
                    variant=values.get("variant"),
                    file=name,
                )
            )
        except KeyError as err:
            raise ReprogramError(f"published table {name}: row {number} has no {err}") from err
    return rows


@functools.cache
def published_rows() -> tuple[PublishedRow, ...]:
    """Every packaged published row, file by file."""
    return tuple(row for name, data in _published_files() for row in parse_rows(name, data))


@functools.cache
def _backbone_names() -> dict[str, str]:
    folder = resources.files("reprogram") / "assets" / "published"
    data = json.loads((folder / BACKBONES_FILE).read_text(encoding="utf-8"))
    return {
        _key(alias): published
        for published, aliases in data["names"].items()
        for alias in [published, *aliases]
    }


def _key(name: str) -> str:
    return name.replace("/", "-").lower()


def published_backbone(backbone: dict[str, Any] | None) -> str | None:
    """The published backbone a run's recorded backbone (results.json ``backbone``) is, or None:
    random weights, the toy CLIP, unknown architectures and weights that are not OpenAI's
    (``quick_gelu_used`` false) match nothing."""
    backbone = backbone or {}
    arch = str(backbone.get("arch") or "")
    if not arch or arch.startswith("random:") or backbone.get("quick_gelu_used") is False:
        return None
    for prefix in ("hf:", "local-dir:"):
        if arch.startswith(prefix):
            arch = PurePath(arch[len(prefix) :].rstrip("/")).name
    if "/" in arch and _key(arch) not in _backbone_names():  # a folder given as the backbone
        arch = PurePath(arch.rstrip("/")).name
    return _backbone_names().get(_key(arch))


def published_dataset(dataset: str) -> str | None:
    """Our catalog name of a run's dataset (``fgvc`` -> ``fgvc_aircraft``); None for others."""
    return ALIASES.get(dataset, dataset) if is_published(dataset) else None


def _matching(method: str, backbone: str | None, shots: int | None) -> list[PublishedRow]:
    if backbone is None:
        return []
    return [
        row
        for row in published_rows()
        if row.variant is None
        and row.method == method
        and row.backbone == backbone
        and row.shots == shots
    ]


def published_cell(
    method: str, dataset: str, backbone: str | None, shots: int | None
) -> PublishedValue | None:
    """The published accuracy of ``method`` on ``dataset`` (first file that has it)."""
    key = published_dataset(dataset)
    for row in _matching(method, backbone, shots):
        if key is not None and key in row.cells:
            return PublishedValue(row.cells[key], row)
    return None


def published_average(
    method: str, datasets: list[str], backbone: str | None, shots: int | None
) -> PublishedValue | None:
    """The published average over exactly ``datasets``: the paper's own average where a row's
    datasets are those (and it gives one), else the mean of its cells over them."""
    keys = [published_dataset(d) for d in datasets]
    if not keys or None in keys:
        return None
    rows = _matching(method, backbone, shots)
    for row in rows:
        if row.average is not None and set(row.datasets) == set(keys):
            return PublishedValue(row.average, row)
    for row in rows:
        if set(keys) <= set(row.cells):
            return PublishedValue(sum(row.cells[k] for k in keys) / len(keys), row)
    return None


__all__ = [
    "PublishedRow",
    "PublishedValue",
    "parse_rows",
    "published_average",
    "published_backbone",
    "published_cell",
    "published_dataset",
    "published_rows",
]
