"""The bench's inputs: its options, the dataset it runs on and the training config it builds."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from reprogram.errors import ReprogramError
from reprogram.speed.synthetic import SyntheticSpec, description_files, write_dataset


@dataclass
class BenchOptions:
    backbone: str = "random:ViT-B-16"
    method: str = "dvp-cse"
    batch_size: int = 64
    classes: int = 47
    train_per_class: int = 16
    test_images: int = 1692
    image_size: int = 320  # side of the synthetic source JPEGs
    epochs: int = 200
    reference_epochs: int = (
        3  # measured reference epochs (PRM epoch + training epochs), then projected
    )
    steps: int = 20  # timed training steps for the step throughput
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    grad_checkpointing: bool = False
    skip_reference: bool = False
    data: str | None = None  # a class-per-folder dataset instead of synthetic JPEGs
    eval_batch_size: int = 256
    seed: int = 1

    @classmethod
    def tiny(cls) -> BenchOptions:
        """The smallest bench that runs every phase on a CPU in seconds (dry runs, tests)."""
        return cls(
            backbone="random:tiny",
            classes=2,
            train_per_class=2,
            test_images=4,
            image_size=32,
            epochs=2,
            reference_epochs=2,
            steps=1,
            batch_size=4,
            eval_batch_size=8,
            device="cpu",
            precision="fp32",
        )

    def validate(self) -> BenchOptions:
        for name in (
            "batch_size",
            "classes",
            "train_per_class",
            "test_images",
            "image_size",
            "epochs",
            "steps",
            "eval_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ReprogramError(f"bench: {name} must be at least 1, got {getattr(self, name)}")
        if self.epochs < 2:
            raise ReprogramError(
                "bench: epochs must be at least 2 (epoch 1 only estimates the PRM)"
            )
        if not self.skip_reference and self.reference_epochs < 2:
            raise ReprogramError(
                "bench: reference_epochs must be at least 2 (a PRM epoch and a training epoch)"
            )
        from reprogram.model.methods import get_recipe

        if not get_recipe(self.method).trainable:
            raise ReprogramError(
                f"bench: method '{self.method}' trains nothing; pick a prompt method"
            )
        return self


def prepare_data(options: BenchOptions, tmp: Path) -> tuple[str, list[str], dict]:
    """(dataset spec, description files or [] for the defaults, dataset summary)."""
    from reprogram.engine.setup import default_description_files
    from reprogram.model.methods import get_recipe
    from reprogram.text.packaged import PAPER_CAUSES

    if options.data is None:
        spec = SyntheticSpec(
            classes=options.classes,
            train_per_class=options.train_per_class,
            val_per_class=min(options.train_per_class, 4),
            test_images=options.test_images,
            image_size=options.image_size,
            seed=options.seed,
        )
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
    recipe = get_recipe(options.method)
    try:
        files: list[str] = []
        default_description_files(recipe, dataset)
    except ReprogramError:  # no descriptions beside the images: synthetic ones (speed only)
        from reprogram.data import load_dataset

        names = load_dataset(dataset, None).classnames
        written = description_files(names, tmp / "descriptions", 25, options.seed)
        stems = recipe.texts.file_stems(PAPER_CAUSES)  # the first name of each file
        files = [str(written[alternatives[0]]) for alternatives in stems]
    return dataset, files, {"source": dataset}


def train_config(options: BenchOptions, dataset: str, descriptions: list[str]):
    from reprogram.engine.config import TrainConfig

    return TrainConfig().updated(
        method=options.method,
        dataset=dataset,
        backbone=options.backbone,
        descriptions=descriptions,
        shots=options.train_per_class,
        seed=options.seed,
        epochs=options.epochs,
        batch_size=options.batch_size,
        eval_batch_size=options.eval_batch_size,
        device=options.device,
        precision=options.precision,
        compile=options.compile,
        grad_checkpointing=options.grad_checkpointing,
        quiet=True,
    )
