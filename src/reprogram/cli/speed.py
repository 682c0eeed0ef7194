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
            str | None,
            typer.Option(
                help="architecture; random weights: random:ARCH "
                "[default: random:ViT-B-16; --scale: random:tiny-224]"
            ),
        ] = None,
        method: Annotated[
            str, typer.Option(help="a prompt-training method (dvp-cse, dvp-cls, ar, …)")
        ] = "dvp-cse",
        batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
        classes: Annotated[
            int | None, typer.Option(help="synthetic dataset: classes [47; --scale: 1000]")
        ] = None,
        train_per_class: Annotated[
            int, typer.Option("--train-per-class", help="training images per class")
        ] = 16,
        test_images: Annotated[
            int | None,
            typer.Option(
                "--test-images", help="synthetic dataset: test images [1692; --scale: 50000]"
            ),
        ] = None,
        image_size: Annotated[
            int | None,
            typer.Option(
                "--image-size", help="synthetic dataset: JPEG side in px [320; --scale: 224]"
            ),
        ] = None,
        scale: Annotated[
            bool,
            typer.Option(
                "--scale",
                help="the ImageNet-sized preset: time and peak memory of each step of a run "
                "(decode, text encoding, an epoch, evaluation) instead of the comparison",
            ),
        ] = False,
        descriptions_per_class: Annotated[
            int,
            typer.Option(
                "--descriptions-per-class", help="--scale: descriptions per class and cause file"
            ),
        ] = 20,
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
        device: Annotated[
            str | None, typer.Option(help="auto, cpu, cuda, cuda:1 [auto; --scale: cpu]")
        ] = None,
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
        from reprogram.speed.run import BenchOptions, format_table, run_bench

        command = "reprogram " + " ".join(shlex.quote(a) for a in sys.argv[1:])

        def log(text: str) -> None:
            if not quiet:
                typer.echo(f"bench: {text}", err=True)

        sizes = {
            "backbone": backbone,
            "classes": classes,
            "test_images": test_images,
            "image_size": image_size,
            "device": device,
        }
        given = {k: v for k, v in sizes.items() if v is not None}
        if scale:
            from reprogram.speed.scale import ScaleOptions, format_scale, run_scale

            scale_options = ScaleOptions(
                method=method,
                train_per_class=train_per_class,
                descriptions_per_class=descriptions_per_class,
                batch_size=batch_size,
                precision=precision,
                **given,
            )
            result = run_scale(
                scale_options, json_path=json_out, command=command, log=log, quiet=quiet
            )
            typer.echo(format_scale(result))
            if json_out is not None:
                typer.echo(f"results written to {json_out}")
            return
        defaults = BenchOptions()
        sizes = {k: getattr(defaults, k) if v is None else v for k, v in sizes.items()}
        options = BenchOptions(
            method=method,
            batch_size=batch_size,
            train_per_class=train_per_class,
            **sizes,
            epochs=epochs,
            reference_epochs=reference_epochs,
            steps=steps,
            precision=precision,
            compile=compile,
            grad_checkpointing=grad_checkpointing,
            skip_reference=skip_reference,
            data=data,
        )
        result = run_bench(options, json_path=json_out, command=command, log=log)
        typer.echo(format_table(result))
        if json_out is not None:
            typer.echo(f"results written to {json_out}")
        if not result["equivalence_passed"]:
            raise typer.Exit(code=1)
