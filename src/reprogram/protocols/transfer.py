"""A trained run on other classes or other images: cross-dataset transfer, domain generalisation.

How a run meets a target dataset depends on the target's class list:

* **same classes** (ImageNet → ImageNet-V2 / -Sketch): the run's model as it is, PRM included.
* **class subset** (ImageNet → ImageNet-A / -R, 200 of the 1,000 classes): the run's model, with
  the logits restricted to the target's classes (mapped by name, in the target's label order).
* **new classes** (cross-dataset transfer, base → novel): the trained prompts move unchanged; the
  texts are the target's own descriptions sampled with the run's rule and seed; a PRM starts
  uniform (ω = 1/M over each class's own descriptions: there are no training counts for the new
  classes); DVP-cls assigns each new description to the nearest trained cluster centroid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reprogram.data import decode_center, load_dataset
from reprogram.data.readers import Sample
from reprogram.data.subsets import subset_mapping
from reprogram.engine.evaluate import Evaluation, predict_logits, summarise
from reprogram.engine.progress import Reporter
from reprogram.engine.runs import LoadedRun, check_finite_scores, load_run
from reprogram.engine.setup import build_model
from reprogram.errors import ReprogramError
from reprogram.model.methods import Reprogrammer
from reprogram.model.precision import resolve_precision
from reprogram.storage.files import atomic_write_json, atomic_write_text
from reprogram.text.descriptions import TextBank

SAME, SUBSET, NEW = "same classes", "class subset", "new classes"


def nearest_centroid_groups(
    trained_features: torch.Tensor, trained_groups: torch.Tensor, features: torch.Tensor
) -> torch.Tensor:
    """DVP-cls on new texts: each text joins the trained cluster with the nearest centroid.

    The centroids are recomputed from the run's own text bank (the mean of each cluster's
    L2-normalised features, which is what k-means converged to), so nothing extra is stored.
    ``trained_features`` C×M×d, ``trained_groups`` C×M, ``features`` C'×M'×d -> C'×M' groups.
    """
    dim = trained_features.shape[-1]
    flat = torch.nn.functional.normalize(trained_features.reshape(-1, dim).float(), dim=-1)
    labels = trained_groups.flatten().to(flat.device)
    count = int(labels.max()) + 1
    sums = torch.zeros(count, dim, device=flat.device).index_add_(0, labels, flat)
    centroids = sums / torch.bincount(labels, minlength=count).clamp_min(1).unsqueeze(1).float()
    new = torch.nn.functional.normalize(features.reshape(-1, dim).float(), dim=-1)
    nearest = torch.cdist(new, centroids.to(new.device)).argmin(dim=1)
    return nearest.view(features.shape[:-1]).cpu()


def transfer_model(
    run: LoadedRun, classnames: list[str], dataset: str, descriptions: list[str] | None = None
) -> Reprogrammer:
    """The run's trained prompts over new classes (see the module docstring for the rules).

    The texts are what a fresh run of the same method and seed on ``dataset`` would sample
    (``descriptions``, or the dataset's defaults); the PRM and other aggregators start fresh.
    """
    config = run.config.updated(dataset=dataset, descriptions=list(descriptions or []))
    if descriptions:  # explicit files replace the packaged picks the run may have made
        config = config.updated(causes=[], description_source="")
    model = build_model(config, run.backbone, classnames)
    trained: TextBank = run.model.bank
    if model.recipe.grouping.from_features:
        bank = model.bank
        bank.groups = nearest_centroid_groups(
            run.model.text_features, run.model.groups, model.text_features
        )
        bank.group_names = list(trained.group_names)
        model = build_model(config, run.backbone, classnames, bank)
    if len(model.bank.group_names) != len(trained.group_names):
        raise ReprogramError(
            f"{dataset}: {len(model.bank.group_names)} description groups "
            f"({', '.join(config.data.descriptions)}) for a run with {len(trained.group_names)} "
            f"prompts ({', '.join(trained.group_names)}): pass one description file per "
            "trained prompt with --descriptions"
        )
    prompts = {k: v for k, v in run.model.trainable_state().items() if k.startswith("prompts.")}
    model.load_trainable_state(prompts)
    model.description_files = list(config.data.descriptions)  # recorded in the results
    return model.eval()


@dataclass
class TargetEvaluation:
    """One target's result: how the run met it and what it scored."""

    target: str
    mode: str
    classnames: list[str]
    evaluation: Evaluation
    prm: str | None  # "trained", "uniform" or None (no PRM)
    description_files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "num_classes": len(self.classnames),
            "accuracy": self.evaluation.accuracy,
            "count": self.evaluation.count,
            "prm": self.prm,
            "description_files": self.description_files,
            "per_class_accuracy": dict(
                zip(self.classnames, self.evaluation.per_class, strict=True)
            ),
        }


def evaluate_samples(
    model: Reprogrammer,
    samples: list[Sample],
    num_classes: int,
    run: LoadedRun,
    columns: list[int] | None = None,
    label: str = "eval",
    reporter: Reporter | None = None,
) -> Evaluation:
    """Accuracy of ``model`` on samples; ``columns`` keeps only those logits (a class subset)."""
    reporter = reporter or Reporter(run.config.runtime.quiet)
    images = decode_center(samples, model.image_size, skip_bad=run.config.data.skip_bad_images)
    dtype = resolve_precision(run.config.backbone.precision, model.text_features.device)
    model.eval()
    with reporter.bar(label, len(images)) as advance:
        logits = predict_logits(model, images, run.config.runtime.eval_batch_size, dtype, advance)
    if columns is not None:
        logits = logits[:, torch.tensor(columns, device=logits.device)]
    evaluation = summarise(logits, images.labels, num_classes)
    check_finite_scores(evaluation)
    return evaluation


def evaluate_target(
    run: LoadedRun,
    dataset: str,
    root: str | None = None,
    descriptions: list[str] | None = None,
    split: str = "test",
    reporter: Reporter | None = None,
) -> TargetEvaluation:
    """Evaluate a loaded run on ``split`` of ``dataset`` (same classes, a subset, or new ones)."""
    config = run.config
    splits = load_dataset(dataset, root or config.data.root, config.data.split_seed)
    samples = splits.split(split)
    has_prm = run.model.recipe.aggregation.estimates
    names = list(splits.classnames)
    if names == list(run.classnames):
        mode, model, columns = SAME, run.model, None
    else:
        try:
            columns = subset_mapping(run.classnames, names, dataset)
            mode, model = SUBSET, run.model
        except ReprogramError:
            mode, columns = NEW, None
            model = transfer_model(run, names, dataset, descriptions)
    if mode != NEW and descriptions:
        raise ReprogramError(
            f"{dataset} has the run's classes ({mode}): its trained texts are used, "
            "drop --descriptions"
        )
    evaluation = evaluate_samples(
        model, samples, len(names), run, columns, f"{dataset} {split}", reporter
    )
    prm = ("uniform" if mode == NEW else "trained") if has_prm else None
    files = getattr(model, "description_files", None) or list(config.data.descriptions)
    return TargetEvaluation(dataset, mode, names, evaluation, prm, files)


def _source_row(run_dir: Path, subset: str) -> dict[str, Any] | None:
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    which = "source" if subset == "all" else f"source, {subset} classes"
    return {
        "target": f"{results['dataset']} ({which})",
        "mode": "source",
        "num_classes": len(results.get("classnames", [])),
        "accuracy": results["test_accuracy"],
        "count": results.get("test_count"),
    }


def evaluate_transfer(
    run_dir: str | Path,
    dataset: str | list[str],
    root: str | None = None,
    descriptions: list[str] | None = None,
    split: str = "test",
    device: str | None = None,
    quiet: bool = True,
    weights: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run on one target or several (domain generalisation): a results dict with a
    row per target (the first row is the run's own test accuracy, when it has one).

    ``weights`` points a moved run at its backbone weights (checked by fingerprint)."""
    run_dir = Path(run_dir)
    targets = [dataset] if isinstance(dataset, str) else list(dataset)
    if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
        raise ReprogramError("no target dataset given (--dataset NAME or --targets a,b,c)")
    if len(targets) > 1 and descriptions:
        raise ReprogramError("--descriptions applies to one --dataset, not to several --targets")
    run = load_run(run_dir, device=device, weights=weights)
    run.config = run.config.updated(quiet=quiet)
    reporter = Reporter(quiet)
    rows = [
        evaluate_target(run, target, root, descriptions, split, reporter).to_dict()
        for target in targets
    ]
    source = _source_row(run_dir, run.config.data.subsample_classes)
    return {
        "run": str(run_dir),
        "method": run.config.method.name,
        "source_dataset": run.config.data.dataset,
        "split": split,
        "source": source,
        "targets": rows,
        "mean_target_accuracy": sum(r["accuracy"] for r in rows) / len(rows),
    }


def transfer_markdown(result: dict[str, Any]) -> str:
    """One row per target: classes, how the run met it, images and accuracy (%)."""
    lines = [
        f"{result['method']} trained on {result['source_dataset']} ({result['split']} split)",
        "",
        "| target | classes | mode | PRM | images | accuracy (%) |",
        "|---|---|---|---|---|---|",
    ]
    rows = ([result["source"]] if result.get("source") else []) + result["targets"]
    for row in rows:
        lines.append(
            f"| {row['target']} | {row['num_classes']} | {row['mode']} | "
            f"{row.get('prm') or '—'} | {row.get('count') or '—'} | {100 * row['accuracy']:.1f} |"
        )
    if len(result["targets"]) > 1:
        lines.append(f"| mean over targets | | | | | {100 * result['mean_target_accuracy']:.1f} |")
    return "\n".join(lines) + "\n"


def write_transfer(result: dict[str, Any], out: str | Path) -> Path:
    """Write ``OUT.json`` and ``OUT.md`` (``out`` without a suffix, or ending in .json)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".json" else out
    atomic_write_json(stem.with_suffix(".json"), result)
    atomic_write_text(stem.with_suffix(".md"), transfer_markdown(result))
    return stem.with_suffix(".json")


def is_other_dataset(run_dir: str | Path, dataset: str | None) -> bool:
    """Whether ``dataset`` names another dataset than the one the run was trained on."""
    from reprogram.engine.checkpoint import load_checkpoint
    from reprogram.engine.config import TrainConfig

    if not dataset:
        return False
    data = TrainConfig.from_dict(load_checkpoint(run_dir)["config"]).data
    return dataset != data.dataset or data.subsample_classes != "all"


def default_output(run_dir: str | Path, targets: list[str]) -> Path:
    """``RUN/eval-<target>.json`` for one target, ``RUN/eval-domain-shift.json`` for several."""
    if len(targets) > 1:
        return Path(run_dir) / "eval-domain-shift.json"
    name = targets[0].rstrip("/").replace("\\", "/").split("/")[-1].split(":")[-1]
    return Path(run_dir) / f"eval-{name or 'target'}.json"
