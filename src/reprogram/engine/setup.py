"""From a config to the pieces of a run: data, backbone, description files, model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from reprogram.backbones import Backbone, load_backbone
from reprogram.data import Splits, dataset_info, few_shot, load_dataset
from reprogram.data.catalog import DATASETS
from reprogram.descriptions import TextBank, read_description_file
from reprogram.engine.config import TrainConfig
from reprogram.errors import ReprogramError
from reprogram.methods import Recipe, Reprogrammer, build_reprogrammer, get_recipe
from reprogram.precision import resolve_device

DESCRIPTIONS_ENV = "REPROGRAM_DESCRIPTIONS"


def _published_key(dataset: str) -> str | None:
    name = (
        dataset_info(dataset).name
        if dataset in DATASETS or dataset in ("fgvc", "flowers102")
        else None
    )
    return dataset_info(name).description_key if name else None


def default_description_files(recipe: Recipe, dataset: str) -> list[str]:
    """Description files a method uses when none are given.

    * ``folder:PATH``: ``PATH/descriptions/`` (``cse_N.json``, ``des.json``, ``dist.json``).
    * published datasets: ``$REPROGRAM_DESCRIPTIONS/{causes,attributes}/`` in the published naming.
    """
    if not recipe.needs_descriptions:
        return []
    folder, prefix = None, ""
    if dataset.startswith("folder:"):
        folder = Path(dataset[len("folder:") :]) / "descriptions"
    elif _published_key(dataset) and os.environ.get(DESCRIPTIONS_ENV):
        folder, prefix = Path(os.environ[DESCRIPTIONS_ENV]), _published_key(dataset) + "_"
    if folder is None or not folder.is_dir():
        raise ReprogramError(
            f"method '{recipe.name}' needs description files: pass --descriptions FILE … "
            f"(or set {DESCRIPTIONS_ENV} to a folder in the published layout)"
        )

    def find(*names: str) -> Path:
        for name in names:
            for candidate in (
                folder / name,
                folder / "causes" / name,
                folder / "attributes" / name,
            ):
                if candidate.is_file():
                    return candidate
        raise ReprogramError(f"{folder}: no {names[0]} for method '{recipe.name}'")

    if recipe.texts == "causes":
        return [str(find(f"{prefix}cse_{i}.json")) for i in (1, 2, 3)]
    if recipe.texts == "attribute-pair":
        return [str(find(f"{prefix}des.json")), str(find(f"{prefix}dist.json"))]
    return [str(find(f"{prefix}des.json"))]


def default_clusters(config: TrainConfig) -> int:
    if config.clusters:
        return config.clusters
    key = (
        _published_key(config.dataset)
        if not config.dataset.startswith(("folder:", "csv:"))
        else None
    )
    return dataset_info(config.dataset).clusters if key else 3


@dataclass
class RunParts:
    config: TrainConfig
    splits: Splits
    backbone: Backbone
    model: Reprogrammer


def load_data(config: TrainConfig) -> Splits:
    splits = load_dataset(config.dataset, config.root, config.split_seed)
    return few_shot(splits, config.shots or None, config.seed)


def build_backbone(config: TrainConfig) -> Backbone:
    return load_backbone(
        config.backbone,
        config.weights,
        device=resolve_device(config.device),
        quick_gelu=config.quick_gelu,
    )


def build_model(
    config: TrainConfig, backbone: Backbone, classnames: list[str], bank: TextBank | None = None
) -> Reprogrammer:
    recipe = get_recipe(config.method)
    descriptions = []
    if bank is None and recipe.needs_descriptions:
        files = config.descriptions or default_description_files(recipe, config.dataset)
        config.descriptions = [str(f) for f in files]
        descriptions = [(str(f), read_description_file(f)) for f in files]
    options = config.method_options()
    options.clusters = default_clusters(config)
    model = build_reprogrammer(
        config.method, backbone, classnames, descriptions, options, config.seed, bank
    )
    if config.grad_checkpointing and hasattr(backbone, "set_grad_checkpointing"):
        backbone.set_grad_checkpointing(True)
    return model


def prepare(config: TrainConfig) -> RunParts:
    """Read the data, load the backbone and build the method's model."""
    config.validate()
    splits = load_data(config)
    backbone = build_backbone(config)
    model = build_model(config, backbone, splits.classnames)
    return RunParts(config, splits, backbone, model)
