"""The bench's inputs: its options, the dataset it runs on and the training config it builds."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from reprogram.errors import ReprogramError
from reprogram.speed.synthetic import (
    SyntheticSize,
    SyntheticSpec,
    description_files,
    write_dataset,
)

Options = TypeVar("Options", bound="SyntheticRunOptions")


@dataclass(frozen=True)
class SyntheticRunOptions(SyntheticSize):
    """What every speed run on a synthetic task shares: task size, backbone, method, runtime.

    The defaults are a DTD-sized task (those of :class:`SyntheticSize`); each run names its own.
    """

    backbone: str = "random:ViT-B-16"
    method: str = "dvp-cse"
    batch_size: int = 64
    eval_batch_size: int = 256
    device: str = "auto"
    precision: str = "auto"
    seed: int = 1

    LABEL: ClassVar[str] = "bench"  # names the run in error messages
    POSITIVE: ClassVar[tuple[str, ...]] = (
        "classes",
        "train_per_class",
        "test_images",
        "image_size",
        "batch_size",
        "eval_batch_size",
    )

    @classmethod
    def tiny(cls: type[Options], **overrides: Any) -> Options:
        """The smallest run of every step on a CPU in seconds (dry runs, tests)."""
        return cls(
            backbone="random:tiny",
            classes=2,
            train_per_class=2,
            test_images=4,
            image_size=32,
            batch_size=4,
            eval_batch_size=8,
            device="cpu",
            precision="fp32",
            **overrides,
        )

    def validate(self: Options) -> Options:
        """Raise :class:`ReprogramError` on a size below 1; returns ``self``."""
        for name in self.POSITIVE:
            if getattr(self, name) < 1:
                raise ReprogramError(
                    f"{self.LABEL}: {name} must be at least 1, got {getattr(self, name)}"
                )
        return self

    def spec(self, **extra: Any) -> SyntheticSpec:
        """The synthetic dataset of this run's size; ``extra`` sets the spec's other fields."""
        return SyntheticSpec(**self.size(), seed=self.seed, **extra)

    def train_config(self, dataset: str, **settings: Any):
        """The engine's config of this run on ``dataset``; ``settings`` adds or replaces keys."""
        from reprogram.engine.config import TrainConfig

        shared = {
            "method": self.method,
            "dataset": dataset,
            "backbone": self.backbone,
            "shots": self.train_per_class,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "device": self.device,
            "precision": self.precision,
            "quiet": True,
        }
        return TrainConfig().updated(**{**shared, **settings})


@dataclass(frozen=True)
class BenchOptions(SyntheticRunOptions):
    epochs: int = 200
    # measured reference epochs (PRM epoch + training epochs), then projected
    reference_epochs: int = 3
    steps: int = 20  # timed training steps for the step throughput
    peak_seconds: float = 1.0  # how long the matmul of the device's practical peak is timed
    compile: bool = False
    grad_checkpointing: bool = False
    skip_reference: bool = False
    data: str | None = None  # a class-per-folder dataset instead of synthetic JPEGs
    # methods whose evaluation images/s are measured side by side, model and folded export
    # (comma-separated, e.g. "rvp,dvp-cse"; "": none)
    eval_methods: str = ""

    POSITIVE: ClassVar[tuple[str, ...]] = (*SyntheticRunOptions.POSITIVE, "epochs", "steps")

    @classmethod
    def tiny(cls, **overrides: Any) -> BenchOptions:
        return super().tiny(epochs=2, reference_epochs=2, steps=1, peak_seconds=0.05, **overrides)

    def validate(self) -> BenchOptions:
        super().validate()
        if self.epochs < 2:
            raise ReprogramError(
                "bench: epochs must be at least 2 (epoch 1 only estimates the PRM)"
            )
        if not self.skip_reference and self.reference_epochs < 2:
            raise ReprogramError(
                "bench: reference_epochs must be at least 2 (a PRM epoch and a training epoch)"
            )
        from reprogram.model.methods import get_recipe

        if not get_recipe(self.method).prompt.trains:
            raise ReprogramError(
                f"bench: method '{self.method}' trains nothing; pick a prompt method"
            )
        from reprogram.speed.inference import parse_methods

        parse_methods(self.eval_methods)
        return self


def prepare_data(options: BenchOptions, tmp: Path) -> tuple[str, list[str], dict]:
    """(dataset spec, description files or [] for the defaults, dataset summary)."""
    if options.data is None:
        spec = options.spec(val_per_class=min(options.train_per_class, 4))
        started = time.perf_counter()
        root = write_dataset(tmp / "data", spec, workers=min(16, os.cpu_count() or 1))
        summary = {
            "source": f"synthetic JPEG {spec.image_size}x{spec.image_size}",
            "write_s": time.perf_counter() - started,
        }
        return f"folder:{root}", [], summary
    dataset = (
        options.data if options.data.startswith(("folder:", "csv:")) else f"folder:{options.data}"
    )
    files = method_descriptions(options.method, dataset, tmp / "descriptions", options)
    return dataset, files, {"source": dataset}


def method_descriptions(
    method: str, dataset: str, folder: Path, options: SyntheticRunOptions
) -> list[str]:
    """[] where ``method`` finds its description files beside ``dataset`` (or needs none), else
    synthetic ones written to ``folder`` (speed only)."""
    from reprogram.engine.setup import default_description_files
    from reprogram.model.methods import get_recipe
    from reprogram.text.packaged import PAPER_CAUSES

    recipe = get_recipe(method)
    try:
        default_description_files(recipe, dataset)
        return []
    except ReprogramError:  # no descriptions beside the images: synthetic ones (speed only)
        from reprogram.data import load_dataset

        names = load_dataset(dataset, None).classnames
        written = description_files(names, folder, 25, options.seed)
        stems = recipe.texts.file_stems(PAPER_CAUSES)  # the first name of each file
        return [str(written[alternatives[0]]) for alternatives in stems]


def train_config(options: BenchOptions, dataset: str, descriptions: list[str]):
    """The engine's config of the bench on ``dataset`` with these description files."""
    return options.train_config(
        dataset,
        descriptions=descriptions,
        epochs=options.epochs,
        compile=options.compile,
        grad_checkpointing=options.grad_checkpointing,
    )
