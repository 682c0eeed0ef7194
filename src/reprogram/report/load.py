"""Reading a finished run for the report, once: results, history, model, test images, attribution.

The model is rebuilt by the engine's run loader (:func:`reprogram.engine.runs.load_run`, which reads
the checkpoint once); when it or the test images cannot be had, the reason is kept and the sections
that need them say why they are not shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reprogram.backbones import Backbone
from reprogram.data import DecodedImages
from reprogram.engine.checkpoint import METRICS, read_metrics, read_results
from reprogram.engine.runs import LoadedRun
from reprogram.errors import ReprogramError
from reprogram.model.attribution import Attribution, attribute
from reprogram.report.common import run_title
from reprogram.report.head_maths import InterClassPass, inter_matrix

Log = Callable[[str], None]


@dataclass
class Options:
    """How much the report shows and where the model runs."""

    examples: int = 4  # test images shown with each prompt applied
    max_classes: int = 40  # beyond this, class-wise figures show a labelled selection
    top_descriptions: int = 5  # per class, in the description table
    max_per_class: int | None = None  # cap on test images per class for the attribution pass
    device: str | None = "auto"  # None: each run's configured device; auto: a GPU if there is one
    batch_size: int = 128
    reference: str | None = None  # method the others are compared with (default: the first)
    weights: str | None = None  # the runs' backbone weights file, if it moved
    root: str | None = None  # the runs' dataset folder, if it moved

    def __post_init__(self) -> None:
        self.max_classes = max(4, self.max_classes)  # a selection shows at least 4 classes


@dataclass
class RunSummary:
    """What the comparison needs from one run."""

    run_dir: Path
    anchor: str
    title: str
    results: dict[str, Any]
    history: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl (empty for untrained methods or a missing file)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return read_metrics(path)


def summarise(run_dir: Path, anchor: str) -> RunSummary:
    """results.json and metrics.jsonl of a run."""
    results = read_results(run_dir)
    return RunSummary(run_dir, anchor, run_title(results), results, read_history(run_dir))


@dataclass
class RunData:
    """One run as the sections see it; ``run``, ``images`` and ``attribution`` may be missing."""

    summary: RunSummary
    options: Options
    classnames: list[str]
    accuracy: list[float]  # per class, from results.json (NaN where a class has none)
    run: LoadedRun | None = None
    images: DecodedImages | None = None  # the test split, centre-cropped
    attribution: Attribution | None = None
    inter_class: InterClassPass | None = None  # what E does, for heads with an E (same pass)
    model_reason: str = ""
    image_reason: str = ""

    @property
    def model(self):
        return self.run.model if self.run is not None else None

    @property
    def method(self) -> str:
        return str(self.summary.results.get("method", "?"))

    @property
    def dtype(self) -> torch.dtype:
        from reprogram.model.precision import resolve_precision

        return resolve_precision(
            self.run.config.backbone.precision, self.model.text_features.device
        )

    def no_model_reason(self) -> str:
        return self.model_reason or "the model is not available"

    def no_images_reason(self) -> str:
        return self.model_reason or self.image_reason or "no test images"


class BackboneCache:
    """Keeps the last backbone, so runs of the same backbone share one copy in memory."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._backbone: Backbone | None = None

    @staticmethod
    def key(results: dict[str, Any], options: Options) -> tuple | None:
        """Runs with this key can share a backbone (None: the run's own device, not shared)."""
        if options.device is None or not results.get("backbone"):
            return None
        return json.dumps(results["backbone"], sort_keys=True), options.device, options.weights

    def get(self, key: tuple | None) -> Backbone | None:
        return self._backbone if key is not None and key == self._key else None

    def put(self, key: tuple | None, backbone: Backbone) -> None:
        if key is not None:
            self._key, self._backbone = key, backbone


def _rate(value: float | None) -> float:
    """A per-class accuracy from results.json; NaN for a class without test images."""
    return float("nan") if value is None else float(value)


def load_run_data(
    summary: RunSummary, options: Options, backbones: BackboneCache, log: Log
) -> RunData:
    """Everything the sections of one run need, with the reasons for what could not be had."""
    results = summary.results
    classnames = list(results.get("classnames") or list(results.get("per_class_accuracy", {})))
    per_class = results.get("per_class_accuracy", {})
    data = RunData(
        summary,
        options,
        classnames,
        [_rate(per_class.get(c)) for c in classnames],
    )
    _load_model(data, backbones)
    if data.run is not None:
        _load_test_images(data)
    if data.images is not None:
        log(f"  attributing {len(data.images)} test images")
        aggregator = data.model.aggregator
        if inter_matrix(aggregator) is not None:
            data.inter_class = InterClassPass(aggregator)
        data.attribution = attribute(
            data.model,
            data.images.pixels,
            data.images.labels,
            options.batch_size,
            data.dtype,
            observe=data.inter_class.observe if data.inter_class is not None else None,
        )
    return data


def _load_model(data: RunData, backbones: BackboneCache) -> None:
    from reprogram.engine.runs import load_run

    run_dir = data.summary.run_dir
    options = data.options
    key = BackboneCache.key(data.summary.results, options)
    try:
        data.run = load_run(
            run_dir,
            device=options.device,
            backbone=backbones.get(key),
            weights=options.weights,
            root=options.root,
        )
        backbones.put(key, data.run.backbone)
    except (ReprogramError, OSError, RuntimeError) as err:
        data.model_reason = f"the model could not be rebuilt from {run_dir} ({err})"
        data.summary.notes.append(data.model_reason)


def _cap_per_class(samples: list, cap: int | None) -> list:
    """The first ``cap`` samples of each class, in order (all of them without a cap)."""
    if not cap:
        return samples
    seen: dict[int, int] = {}
    kept = []
    for sample in samples:
        seen[sample.label] = seen.get(sample.label, 0) + 1
        if seen[sample.label] <= cap:
            kept.append(sample)
    return kept


def _load_test_images(data: RunData) -> None:
    from reprogram.data import decode_center, load_dataset

    config = data.run.config
    try:
        splits = load_dataset(config.data.dataset, config.data.root, config.data.split_seed)
        if list(splits.classnames) != list(data.run.classnames):
            raise ReprogramError(
                f"dataset {config.data.dataset} now has other classes than the run"
            )
        samples = _cap_per_class(splits.test, data.options.max_per_class)
        if not samples:
            raise ReprogramError("the test split is empty")
        data.images = decode_center(
            samples, data.model.image_size, skip_bad=config.data.skip_bad_images
        )
        if len(data.images) == 0:
            data.images = None
            raise ReprogramError("no test image could be decoded")
    except (ReprogramError, OSError) as err:
        data.image_reason = f"the test images of {config.data.dataset} could not be read ({err})"
        data.summary.notes.append(data.image_reason)


__all__ = [
    "BackboneCache",
    "Log",
    "Options",
    "RunData",
    "RunSummary",
    "load_run_data",
    "read_history",
    "summarise",
]
