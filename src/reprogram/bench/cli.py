"""The ``reprogram bench`` command (registered by ``reprogram.cli``)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to the ``reprogram`` application."""

    @app.command("bench")
    def bench(
        backbone: Annotated[
            str, typer.Option(help="architecture; random weights: random:ARCH")
        ] = "random:ViT-B-16",
        method: Annotated[
            str, typer.Option(help="a prompt-training method (dvp-cse, dvp-cls, ar, …)")
        ] = "dvp-cse",
        batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
        classes: Annotated[int, typer.Option(help="synthetic dataset: classes")] = 47,
        train_per_class: Annotated[
            int, typer.Option("--train-per-class", help="training images per class")
        ] = 16,
        test_images: Annotated[
            int, typer.Option("--test-images", help="synthetic dataset: test images")
        ] = 1692,
        image_size: Annotated[
            int, typer.Option("--image-size", help="synthetic dataset: JPEG side in px")
        ] = 320,
        epochs: Annotated[
            int, typer.Option(help="epochs of the end-to-end runs (first = PRM only)")
        ] = 200,
        reference_epochs: Annotated[
            int,
            typer.Option(
                "--reference-epochs", help="reference epochs actually run, then projected"
            ),
        ] = 3,
        steps: Annotated[
            int, typer.Option(help="timed training steps for the step throughput")
        ] = 20,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1")] = "auto",
        compile: Annotated[
            bool, typer.Option("--compile/--no-compile", help="torch.compile our model")
        ] = False,
        precision: Annotated[
            str, typer.Option(help="ours: auto (bf16 on GPUs), fp32, bf16, fp16")
        ] = "auto",
        grad_checkpointing: Annotated[
            bool,
            typer.Option(
                "--grad-checkpointing/--no-grad-checkpointing", help="ours: checkpoint the encoder"
            ),
        ] = False,
        data: Annotated[
            str | None, typer.Option(help="a class-per-folder dataset instead of synthetic JPEGs")
        ] = None,
        skip_reference: Annotated[
            bool, typer.Option("--skip-reference", help="no end-to-end run of the reference loop")
        ] = False,
        json_out: Annotated[
            Path | None, typer.Option("--json", help="write the results to this JSON file")
        ] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress lines")] = False,
    ) -> None:
        """Time our engine against a loop in the official scripts' structure, on one device."""
        from reprogram.bench.run import BenchOptions, format_table, run_bench

        options = BenchOptions(
            backbone=backbone,
            method=method,
            batch_size=batch_size,
            classes=classes,
            train_per_class=train_per_class,
            test_images=test_images,
            image_size=image_size,
            epochs=epochs,
            reference_epochs=reference_epochs,
            steps=steps,
            device=device,
            precision=precision,
            compile=compile,
            grad_checkpointing=grad_checkpointing,
            skip_reference=skip_reference,
            data=data,
        )
        command = "reprogram " + " ".join(shlex.quote(a) for a in sys.argv[1:])

        def log(text: str) -> None:
            if not quiet:
                typer.echo(f"bench: {text}", err=True)

        result = run_bench(options, json_path=json_out, command=command, log=log)
        typer.echo(format_table(result))
        if json_out is not None:
            typer.echo(f"results written to {json_out}")
        if not result["equivalence_passed"]:
            raise typer.Exit(code=1)
