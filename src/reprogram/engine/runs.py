"""Using finished runs: reload a model, evaluate, predict, multi-seed tables, comparisons."""

from __future__ import annotations

import contextlib
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
from reprogram.engine.checkpoint import CONFIG, load_checkpoint, read_results
from reprogram.engine.config import TrainConfig, flat_items, read_config_file
from reprogram.engine.evaluate import Evaluation, evaluate
from reprogram.engine.paths import absolute_paths
from reprogram.engine.progress import Reporter
from reprogram.engine.setup import build_backbone, build_model, description_files
from reprogram.errors import ReprogramError
from reprogram.model.attribution import top_class_drivers
from reprogram.model.methods import Reprogrammer, get_recipe
from reprogram.model.precision import Precision, resolve_precision
from reprogram.storage.files import atomic_write_text
from reprogram.text.descriptions import TextBank


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
    run_dir: str | Path,
    device: str | None = None,
    backbone: Backbone | None = None,
    *,
    weights: str | None = None,
    root: str | None = None,
) -> LoadedRun:
    """Rebuild a run's model with its selected prompts, PRM and exact description texts.

    ``weights`` and ``root`` point a moved run at its backbone weights and datasets; the
    backbone fingerprint saved with the run keeps this safe (other weights are refused)."""
    checkpoint = load_checkpoint(run_dir)
    config = TrainConfig.from_dict(checkpoint["config"])
    if device is not None:
        config.runtime.device = device
    if weights is not None:
        config.backbone.weights = str(weights)
    if root is not None:
        config.data.root = str(root)
    if backbone is None:
        try:
            backbone = build_backbone(config)
        except ReprogramError as err:
            if weights is not None or config.backbone.weights is None:
                raise
            raise ReprogramError(
                f"{err} (if the run's weights moved, pass --weights FILE)"
            ) from err
    expected = checkpoint["backbone"]
    if backbone.fingerprint != expected["fingerprint"]:
        raise ReprogramError(
            f"{run_dir}: trained with backbone {expected['arch']} from "
            f"{expected.get('weights') or 'its built-in weights'} (fingerprint "
            f"{expected['fingerprint']}), got fingerprint {backbone.fingerprint}"
            + (f" from {config.backbone.weights}" if config.backbone.weights else "")
            + ": pass --weights with the file the run was trained with"
        )
    classnames = checkpoint["classnames"]
    model = build_model(config, backbone, classnames, TextBank.from_dict(checkpoint["text_bank"]))
    state = checkpoint["best"]["state"] if checkpoint["best"]["epoch"] > 0 else checkpoint["state"]
    model.load_trainable_state(state)
    return LoadedRun(config, model.eval(), classnames, checkpoint)


def zero_shot_model(config: TrainConfig) -> tuple[Reprogrammer, list[str]]:
    """The model and class names of a method that trains nothing, built from ``config``."""
    if get_recipe(config.method.name).trainable:
        raise ReprogramError(
            f"method '{config.method.name}' must be trained first: use --checkpoint RUN"
        )
    classnames = load_dataset(
        config.data.dataset, config.data.root, config.data.split_seed
    ).classnames
    return build_model(config, build_backbone(config), classnames), classnames


def class_difference(found: list[str], expected: list[str], limit: int = 5) -> str:
    """Which classes differ between a dataset (``found``) and a run (``expected``)."""

    def shown(names: list[str]) -> str:
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        return ", ".join(repr(n) for n in names[:limit]) + more

    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    parts = []
    if missing:
        parts.append(f"not in the dataset: {shown(missing)}")
    if extra:
        parts.append(f"not in the run: {shown(extra)}")
    if not parts:
        first = next(i for i, (a, b) in enumerate(zip(found, expected, strict=False)) if a != b)
        parts.append(
            f"same classes in another order (class {first} is {found[first]!r} in the dataset, "
            f"{expected[first]!r} in the run)"
        )
    return "; ".join(parts)


class NonFiniteScores(ReprogramError):
    """A model whose class scores are not finite (its prompts diverged): nothing to predict."""


DIVERGED = (
    "its training diverged (the non-finite guard stops such a run); train it again, e.g. with "
    "a smaller lr"
)


def evaluate_split(
    model: Reprogrammer,
    config: TrainConfig,
    split: str,
    classnames: list[str] | None = None,
    reporter: Reporter | None = None,
) -> Evaluation:
    """Evaluate a model on a split of the config's dataset (the class lists must agree)."""
    from reprogram.data.subsets import subsample_classes

    splits = load_dataset(config.data.dataset, config.data.root, config.data.split_seed)
    if split == "val" and config.data.shots:
        from reprogram.data import few_shot

        splits = few_shot(splits, config.data.shots, config.seed)
    splits = subsample_classes(splits, config.data.subsample_classes)
    if classnames is not None and list(splits.classnames) != list(classnames):
        raise ReprogramError(
            f"dataset {config.data.dataset} has other classes than the checkpoint: "
            + class_difference(list(splits.classnames), list(classnames))
        )
    reporter = reporter or Reporter(config.runtime.quiet)
    images = decode_center(
        splits.split(split), model.image_size, skip_bad=config.data.skip_bad_images
    )
    if images.skipped:
        reporter.line(
            f"skipped {len(images.skipped)} undecodable images (e.g. {images.skipped[0]})"
        )
    dtype = resolve_precision(config.backbone.precision, model.text_features.device)
    with reporter.bar(f"eval {split}", len(images)) as advance:
        result = evaluate(model, images, config.runtime.eval_batch_size, dtype, advance)
    check_finite_scores(result)
    return result


def check_finite_scores(result: Evaluation) -> None:
    """Refuse an evaluation whose model gave non-finite class scores (its accuracy would be
    that of arbitrary answers)."""
    if result.nonfinite:
        raise NonFiniteScores(
            f"the run's prompts give non-finite class scores for {result.nonfinite} of "
            f"{result.count} images: {DIVERGED}"
        )


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
    policy = Precision.resolve(precision, device)
    size = model.image_size
    pixels = torch.stack(
        [
            torch.from_numpy(to_uint8_chw(center_crop(resize_short_side(load_rgb(p), size), size)))
            for p in paths
        ]
    )
    with torch.no_grad():
        output = model(as_float(pixels.to(device)), policy)
    finite = torch.isfinite(output.logits.float()).all(dim=1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise NonFiniteScores(
            f"the run's prompts give non-finite class scores for {paths[first]} "
            f"({int((~finite).sum())} of {len(paths)} images): {DIVERGED}"
        )
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


# Settings that never make runs unlike: the seed (what a cell averages over) and where the
# backbone's weights were read from (its fingerprint stands for them); execution settings are
# not in a config's identity at all.
NOT_IDENTITY = ("seed", "backbone", "weights")


def run_identity(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """What a run shares with the runs it may be averaged with: every training setting of its
    config but the seed and execution settings, and the backbone by weight fingerprint."""
    config = read_config_file(Path(run_dir) / CONFIG)
    settings = flat_items(config) if config is not None else {}
    identity = {k: v for k, v in settings.items() if k not in NOT_IDENTITY}
    for key in ("method", "dataset", "shots", "epochs"):
        identity.setdefault(key, results.get(key))
    backbone = results.get("backbone") or {}
    identity["backbone"] = {
        k: backbone.get(k)
        for k in ("fingerprint", "quick_gelu_used", "input_size", "mean", "std")
        if k in backbone
    }
    return identity


def run_differences(run_dir: str | Path, config: TrainConfig, limit: int = 3) -> list[str]:
    """How the run in ``run_dir`` (finished, or a checkpoint to resume) differs from the run
    ``config`` asks for, as ``key=theirs (asked: ours)``; empty when it is that run.

    Runs are alike as :func:`comparison_table` groups them: every setting of the config, the seed
    included (a folder holds one seed's run), and the backbone by weights: the same name and file,
    or else the same weight fingerprint (a moved file is the same backbone)."""
    run_dir = Path(run_dir)
    stored = read_config_file(run_dir / CONFIG)
    if stored is None:
        return [f"it has no {CONFIG}"]
    stored = absolute_paths(stored)  # as stored, but for names stored as paths by older versions
    asked = config.updated().validate()
    if get_recipe(asked.method.name).needs_descriptions:  # else given ones are unused
        asked.data.descriptions = description_files(asked)
        with contextlib.suppress(ReprogramError):  # a run stores them resolved (older ones not)
            stored.data.descriptions = description_files(stored)
    else:
        asked.data.descriptions = stored.data.descriptions = []
    theirs, ours = flat_items(stored), flat_items(asked)
    differ = [k for k in ours if _json(theirs.get(k)) != _json(ours[k])]
    differ.sort(key=lambda k: k not in ("method", "dataset", "seed"))  # the telling ones first
    backbone = [k for k in differ if k in ("backbone", "weights")]
    if backbone and _fingerprint(run_dir) == build_backbone(asked).fingerprint:
        differ = [k for k in differ if k not in backbone]
    shown = [f"{k}={_json(theirs.get(k))} (asked: {_json(ours[k])})" for k in differ[:limit]]
    return shown + ([f"{len(differ) - limit} more"] if len(differ) > limit else [])


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _fingerprint(run_dir: Path) -> str | None:
    """The weight fingerprint of a run's backbone (results.json, else its checkpoint)."""
    try:
        results = read_results(run_dir)
    except ReprogramError:
        results = load_checkpoint(run_dir)
    return (results.get("backbone") or {}).get("fingerprint")


def check_reusable(
    run_dir: str | Path,
    config: TrainConfig,
    remedy: str = "choose another --out, or add --overwrite to train it again there",
) -> None:
    """Refuse to reuse (or resume) the run in ``run_dir`` for ``config`` unless it is that run
    (:func:`run_differences`): one line naming the differences, then ``remedy``."""
    differences = run_differences(run_dir, config)
    if differences:
        raise ReprogramError(
            f"{run_dir} holds a run of other settings ({'; '.join(differences)}): {remedy}"
        )


def _label(settings: dict[str, Any], short: bool) -> str:
    """``epochs=10, descriptions=["des.json"]`` (paths by file name when ``short``)."""

    def text(value: Any) -> str:
        if short and isinstance(value, list):
            value = [Path(v).name if isinstance(v, str) and "/" in v else v for v in value]
        if short and isinstance(value, str) and "/" in value:
            return Path(value).name
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    return ", ".join(f"{k}={text(v)}" for k, v in settings.items())


def _variants(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group of one (method, dataset) cell: the settings that tell it from the others."""
    keys = sorted({k for g in groups for k in g})
    varying = [k for k in keys if len({json.dumps(g.get(k), sort_keys=True) for g in groups}) > 1]
    return [{k: g.get(k) for k in varying} for g in groups]


def _cell(runs: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    mean, std = mean_std([100 * r["test_accuracy"] for _, r in runs])
    return {
        "mean": mean,
        "std": std if len(runs) > 1 else None,
        "n": len(runs),
        "seeds": sorted(r["seed"] for _, r in runs),
        "wall_time_s": mean_std([r["wall_time_s"] for _, r in runs])[0],
        "runs": [str(d) for d, _ in runs],
    }


def comparison_table(run_dirs: list[Path]) -> dict[str, Any]:
    """Test accuracy mean ± std over seeds per cell, and mean wall time.

    A cell holds only runs that share method, dataset, backbone (fingerprint) and every other
    training setting; runs of one method and dataset that differ in some setting become rows of
    their own, named by the settings that differ (``variant``)."""
    groups: dict[str, tuple[dict[str, Any], list[tuple[Path, dict[str, Any]]]]] = {}
    for run in run_dirs:
        results = read_results(run)
        if results.get("test_accuracy") is None:  # never tested (skip_test: a tuning trial)
            continue
        identity = run_identity(run, results)
        key = json.dumps(identity, sort_keys=True, default=str)
        groups.setdefault(key, (identity, []))[1].append((Path(run), results))
    by_cell: dict[tuple[str, str], list[tuple[dict, list]]] = {}
    for identity, runs in groups.values():
        by_cell.setdefault((identity["method"], identity["dataset"]), []).append((identity, runs))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for (method, dataset), members in by_cell.items():
        variants = _variants([m[0] for m in members])
        labels = [_label(v, short=True) for v in variants]
        if len(set(labels)) < len(labels):  # e.g. two description files of one name
            labels = [_label(v, short=False) for v in variants]
        for settings, variant, (_, runs) in zip(variants, labels, members, strict=True):
            row = rows.setdefault(
                (method, variant),
                {"method": method, "variant": variant, "settings": settings, "cells": {}},
            )
            row["cells"][dataset] = _cell(runs)
    order = list(_METHOD_ORDER)
    ranked = sorted(rows, key=lambda k: (order.index(k[0]) if k[0] in order else 99, k))
    return {
        "datasets": sorted({d for _, d in by_cell}),
        "rows": [rows[k] for k in ranked],
    }


_METHOD_ORDER = ("zero-shot", "zero-shot-desc", "vp", "ar", "attrvr", "dvp-cse", "dvp-cls")


def row_name(row: dict[str, Any]) -> str:
    """A table row's label: the method, and the settings that tell its runs from another row's."""
    return f"{row['method']} [{row['variant']}]" if row.get("variant") else row["method"]


def format_cell(cell: dict[str, Any] | None, wall_time: bool = True) -> str:
    """``71.2 ± 1.3 (n=3, 12 s)``; one run shows no spread: ``71.2 (n=1, 12 s)``."""
    if not cell:
        return "—"
    spread = f" ± {cell['std']:.1f}" if cell.get("std") is not None else ""
    n = cell.get("n", len(cell["seeds"]))
    extra = f", {cell['wall_time_s']:.0f} s" if wall_time else ""
    return f"{cell['mean']:.1f}{spread} (n={n}{extra})"


def table_markdown(table: dict[str, Any]) -> str:
    datasets = table["datasets"]
    lines = [
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for row in table["rows"]:
        cells = [format_cell(row["cells"].get(dataset)) for dataset in datasets]
        lines.append(f"| {row_name(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, run_dirs: list[Path]) -> dict[str, Any]:
    """Write summary.md and summary.json (test accuracy in %, mean ± std over seeds)."""
    table = comparison_table(run_dirs)
    atomic_write_text(out_dir / "summary.md", table_markdown(table))
    atomic_write_text(out_dir / "summary.json", json.dumps(table, indent=2) + "\n")
    return table


__all__ = [
    "LoadedRun",
    "NonFiniteScores",
    "check_finite_scores",
    "check_reusable",
    "Prediction",
    "comparison_table",
    "evaluate_split",
    "format_cell",
    "find_runs",
    "load_run",
    "predict_images",
    "row_name",
    "run_differences",
    "run_identity",
    "table_markdown",
    "write_summary",
]
