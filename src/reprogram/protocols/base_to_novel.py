"""Base-to-novel generalisation (CoCoOp's protocol) on the reprogramming engine.

The classes are split as CoCoOp's ``subsample_classes``: the first ``ceil(C / 2)`` labels are
base, the rest novel, each relabelled from 0. The few-shot draw is made over all classes first
(as CoOp), then train and validation keep the base classes: an ordinary run on the base half.
Base accuracy is that run's test accuracy (base test images, classifier over base classes);
novel accuracy uses the novel test images with a classifier over the novel classes only, the
trained prompts and the novel classes' own descriptions (see :mod:`reprogram.protocols.transfer`
for the PRM and clusters). The harmonic mean ``2·b·n / (b + n)`` summarises both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprogram.data import load_dataset
from reprogram.data.subsets import subsample_classes
from reprogram.engine.checkpoint import read_results
from reprogram.engine.config import TrainConfig
from reprogram.engine.progress import Reporter
from reprogram.engine.runs import load_run, mean_std
from reprogram.engine.seeds import check_seeds, reusable_run
from reprogram.engine.setup import check_texts
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError
from reprogram.protocols.transfer import evaluate_samples, transfer_model
from reprogram.storage.files import atomic_write_json, atomic_write_text

RESULTS_FILE = "base2novel.json"
TABLE_FILE = "base2novel.md"


def harmonic_mean(base: float, novel: float) -> float:
    return 2 * base * novel / (base + novel) if base + novel > 0 else 0.0


def _base_config(config: TrainConfig) -> TrainConfig:
    return config.updated(subsample_classes="base").validate()


def _train_base(config: TrainConfig, out: Path, resume: bool, overwrite: bool) -> dict[str, Any]:
    """The base run in ``out``: a finished one of these settings is reused (one of other
    settings refused, or replaced with ``overwrite``), an unfinished one resumed."""
    run = reusable_run(config, out, resume, overwrite)
    if run.finished:
        return read_results(out)
    _check_novel_texts(config)
    return fit(config, out, resume=run.resume, overwrite=run.overwrite)


def _check_novel_texts(config: TrainConfig) -> None:
    """The novel classes are scored with their own descriptions: missing ones are refused
    before the base run trains, not after."""
    full = load_dataset(config.data.dataset, config.data.root, config.data.split_seed)
    try:
        check_texts(config, subsample_classes(full, "novel").classnames)
    except ReprogramError as err:
        raise ReprogramError(f"novel classes: {err} (checked before training)") from None



def run_base_to_novel(
    config: TrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Train on the base classes into ``out``, evaluate base and novel, write the table."""
    out = Path(out)
    config = _base_config(config)
    base_results = _train_base(config, out, resume, overwrite)
    run = load_run(out, device=config.runtime.device)
    full = load_dataset(run.config.data.dataset, run.config.data.root, run.config.data.split_seed)
    novel = subsample_classes(full, "novel")
    # the very description files the base run used, sampled with its rule and seed
    model = transfer_model(
        run, novel.classnames, run.config.data.dataset, run.config.data.descriptions
    )
    reporter = Reporter(config.runtime.quiet)
    evaluation = evaluate_samples(
        model, novel.test, novel.num_classes, run, label="novel test", reporter=reporter
    )
    recipe = run.model.recipe
    base, novel_acc = base_results["test_accuracy"], evaluation.accuracy
    result = {
        "protocol": "base-to-novel",
        "method": run.config.method.name,
        "dataset": run.config.data.dataset,
        "seed": run.config.seed,
        "shots": run.config.data.shots,
        "base_classes": len(run.classnames),
        "novel_classes": novel.num_classes,
        "base_accuracy": base,
        "novel_accuracy": novel_acc,
        "harmonic_mean": harmonic_mean(base, novel_acc),
        "base_count": base_results["test_count"],
        "novel_count": evaluation.count,
        "novel_prm": recipe.aggregation.on_new_classes,
        "novel_clusters": recipe.grouping.on_new_classes,
        "description_files": model.description_files,
        "base_classnames": list(run.classnames),
        "novel_classnames": list(novel.classnames),
        "novel_per_class_accuracy": dict(zip(novel.classnames, evaluation.per_class, strict=True)),
    }
    atomic_write_json(out / RESULTS_FILE, result)
    atomic_write_text(out / TABLE_FILE, base_to_novel_markdown([result]))
    return result


def run_base_to_novel_seeds(
    config: TrainConfig,
    seeds: list[int],
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """One base-to-novel run per seed into ``out/seed-N``; mean ± std over seeds in ``out``."""
    check_seeds(seeds)
    out = Path(out)
    for seed in seeds:  # every folder checked before any training
        base = _base_config(config.updated(seed=seed))
        reusable_run(base, out / f"seed-{seed}", resume, overwrite)
    results = [
        run_base_to_novel(config.updated(seed=seed), out / f"seed-{seed}", resume, overwrite)
        for seed in seeds
    ]
    summary = {"protocol": "base-to-novel", "seeds": list(seeds), "runs": results}
    for key in ("base_accuracy", "novel_accuracy", "harmonic_mean"):
        mean, std = mean_std([100 * r[key] for r in results])
        summary[key] = {"mean": mean, "std": std}
    atomic_write_json(out / RESULTS_FILE, summary)
    atomic_write_text(out / TABLE_FILE, base_to_novel_markdown(results))
    return summary


def base_to_novel_markdown(results: list[dict[str, Any]]) -> str:
    """Base, novel and harmonic-mean accuracy (%); several seeds give mean ± std."""
    first = results[0]

    def cell(key: str) -> str:
        mean, std = mean_std([100 * r[key] for r in results])
        return f"{mean:.1f}" if len(results) == 1 else f"{mean:.1f} ± {std:.1f}"

    seeds = ", ".join(str(r["seed"]) for r in results)
    return (
        "| method | dataset | base | novel | HM |\n|---|---|---|---|---|\n"
        f"| {first['method']} | {first['dataset']} | {cell('base_accuracy')} | "
        f"{cell('novel_accuracy')} | {cell('harmonic_mean')} |\n\n"
        f"Test accuracy in % ({first['base_classes']} base, {first['novel_classes']} novel "
        f"classes; {first['shots']} shots; seed {seeds}).\n"
    )
