"""Using finished runs: reload a model, evaluate, predict, multi-seed tables, comparisons."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reprogram.backbones import Backbone
from reprogram.data import load_dataset
from reprogram.data.images import (
    as_float,
    center_crop,
    decode_center,
    load_rgb,
    resize_short_side,
    to_uint8_chw,
)
from reprogram.descriptions import TextBank
from reprogram.engine.checkpoint import load_checkpoint, read_results
from reprogram.engine.config import TrainConfig
from reprogram.engine.evaluate import Evaluation, evaluate
from reprogram.engine.progress import Reporter
from reprogram.engine.setup import build_backbone, build_model
from reprogram.errors import ReprogramError
from reprogram.io import atomic_write_text
from reprogram.methods import Reprogrammer
from reprogram.precision import autocast, resolve_precision
from reprogram.report.attribution import top_class_drivers


@dataclass
class LoadedRun:
    config: TrainConfig
    model: Reprogrammer
    classnames: list[str]
    checkpoint: dict[str, Any]

    @property
    def backbone(self) -> Backbone:
        return self.model.backbone


def load_run(
    run_dir: str | Path, device: str | None = None, backbone: Backbone | None = None
) -> LoadedRun:
    """Rebuild a run's model with its selected prompts, PRM and exact description texts."""
    checkpoint = load_checkpoint(run_dir)
    config = TrainConfig(**checkpoint["config"])
    if device is not None:
        config.device = device
    backbone = backbone or build_backbone(config)
    if backbone.fingerprint != checkpoint["backbone"]["fingerprint"]:
        raise ReprogramError(
            f"{run_dir}: trained with backbone {checkpoint['backbone']['arch']} "
            f"(fingerprint {checkpoint['backbone']['fingerprint']}), "
            f"got fingerprint {backbone.fingerprint}"
        )
    classnames = checkpoint["classnames"]
    model = build_model(config, backbone, classnames, TextBank.from_dict(checkpoint["text_bank"]))
    state = checkpoint["best"]["state"] if checkpoint["best"]["epoch"] > 0 else checkpoint["state"]
    model.load_trainable_state(state)
    return LoadedRun(config, model.eval(), classnames, checkpoint)


def evaluate_split(
    model: Reprogrammer,
    config: TrainConfig,
    split: str,
    classnames: list[str] | None = None,
    reporter: Reporter | None = None,
) -> Evaluation:
    """Evaluate a model on a split of the config's dataset (the class lists must agree)."""
    splits = load_dataset(config.dataset, config.root, config.split_seed)
    if classnames is not None and list(splits.classnames) != list(classnames):
        raise ReprogramError(
            f"dataset {config.dataset} has other classes than the checkpoint "
            f"({len(splits.classnames)} vs {len(classnames)})"
        )
    if split == "val" and config.shots:
        from reprogram.data import few_shot

        splits = few_shot(splits, config.shots, config.seed)
    reporter = reporter or Reporter(config.quiet)
    images = decode_center(splits.split(split), model.image_size, skip_bad=config.skip_bad_images)
    if images.skipped:
        reporter.line(
            f"skipped {len(images.skipped)} undecodable images (e.g. {images.skipped[0]})"
        )
    dtype = resolve_precision(config.precision, model.text_features.device)
    with reporter.bar(f"eval {split}", len(images)) as advance:
        return evaluate(model, images, config.eval_batch_size, dtype, advance)


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class, probability)
    prompt: str | None = None  # for multi-prompt methods: the prompt that contributed most
    description: str | None = None  # the description that contributed most to the top class
    prompt_shares: dict[str, float] | None = None


def predict_images(
    model: Reprogrammer,
    classnames: list[str],
    paths: list[str],
    top_k: int = 5,
    precision: str = "auto",
) -> list[Prediction]:
    """Top-k classes for image files, with the prompt and description that drove the top class."""
    device = model.text_features.device
    dtype = resolve_precision(precision, device)
    size = model.image_size
    pixels = torch.stack(
        [
            torch.from_numpy(to_uint8_chw(center_crop(resize_short_side(load_rgb(p), size), size)))
            for p in paths
        ]
    )
    with torch.no_grad(), autocast(device, dtype):
        output = model(as_float(pixels.to(device)))
    probabilities = output.logits.float().softmax(dim=1)
    drivers = top_class_drivers(model, output.scores, output.logits)
    predictions = []
    for i, path in enumerate(paths):
        values, indices = probabilities[i].topk(min(top_k, probabilities.shape[1]))
        top = [
            (classnames[j], float(v))
            for v, j in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        driver = drivers[i]
        prediction = Prediction(path, top, driver.prompt, driver.description, driver.prompt_shares)
        predictions.append(prediction)
    return predictions


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders under the given paths (a run folder, or a folder of runs such as seed-N)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "results.json").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.glob("**/results.json"))
        else:
            raise ReprogramError(f"not a run folder: {path}")
    if not found:
        raise ReprogramError(f"no finished runs (results.json) under {', '.join(map(str, paths))}")
    return found


def comparison_table(run_dirs: list[Path]) -> dict[str, Any]:
    """Test accuracy mean ± std over seeds per (method, dataset), and mean wall time."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for run in run_dirs:
        results = read_results(run)
        cells.setdefault((results["method"], results["dataset"]), []).append(results)
    methods = sorted(
        {m for m, _ in cells},
        key=lambda m: list(_METHOD_ORDER).index(m) if m in _METHOD_ORDER else 99,
    )
    datasets = sorted({d for _, d in cells})
    rows = []
    for method in methods:
        row = {"method": method, "cells": {}}
        for dataset in datasets:
            runs = cells.get((method, dataset), [])
            if runs:
                mean, std = mean_std([100 * r["test_accuracy"] for r in runs])
                time_mean, _ = mean_std([r["wall_time_s"] for r in runs])
                row["cells"][dataset] = {
                    "mean": mean,
                    "std": std,
                    "seeds": sorted(r["seed"] for r in runs),
                    "wall_time_s": time_mean,
                }
        rows.append(row)
    return {"datasets": datasets, "rows": rows}


_METHOD_ORDER = ("zero-shot", "zero-shot-desc", "vp", "ar", "attrvr", "dvp-cse", "dvp-cls")


def table_markdown(table: dict[str, Any]) -> str:
    datasets = table["datasets"]
    lines = [
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for row in table["rows"]:
        cells = []
        for dataset in datasets:
            cell = row["cells"].get(dataset)
            cells.append(
                f"{cell['mean']:.1f} ± {cell['std']:.1f} "
                f"(n={len(cell['seeds'])}, {cell['wall_time_s']:.0f} s)"
                if cell
                else "—"
            )
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, run_dirs: list[Path]) -> dict[str, Any]:
    """Write summary.md and summary.json (test accuracy in %, mean ± std over seeds)."""
    table = comparison_table(run_dirs)
    atomic_write_text(out_dir / "summary.md", table_markdown(table))
    atomic_write_text(out_dir / "summary.json", json.dumps(table, indent=2) + "\n")
    return table


__all__ = [
    "LoadedRun",
    "Prediction",
    "comparison_table",
    "evaluate_split",
    "find_runs",
    "load_run",
    "predict_images",
    "table_markdown",
    "write_summary",
]
