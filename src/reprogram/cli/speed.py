"""The ``reprogram bench`` command (registered by ``reprogram.cli``)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from reprogram.cli.options import QuietOpt, arguments_for, options_of, with_options

# The bench's options, in --help order: each a field of BenchOptions or ScaleOptions (which
# hold the types and defaults; --help shows the --scale preset's where it differs).
BENCH_HELP = {
    "backbone": "architecture; random weights: random:ARCH",
    "method": "a prompt-training method (dvp-cse, dvp-cls, ar, …)",
    "batch_size": "training batch size",
    "classes": "synthetic dataset: classes",
    "train_per_class": "training images per class",
    "test_images": "synthetic dataset: test images",
    "image_size": "synthetic dataset: JPEG side in px",
    "descriptions_per_class": "--scale: descriptions per class and cause file",
    "epochs": "epochs of the end-to-end runs (first = PRM only)",
    "reference_epochs": "reference epochs actually run, then projected",
    "steps": "timed training steps for the step throughput",
    "peak_seconds": "seconds the matmul of the device's practical peak is timed (MFU's divisor)",
    "device": "auto, cpu, cuda, cuda:1",
    "compile": "torch.compile our model",
    "precision": "ours: auto (bf16 on GPUs), fp32, bf16, fp16",
    "grad_checkpointing": "ours: checkpoint the encoder",
    "data": "a class-per-folder dataset instead of synthetic JPEGs",
    "skip_reference": "no end-to-end run of the reference loop",
    "eval_methods": "methods whose evaluation images/s are timed side by side, model and "
    "folded export (comma-separated, e.g. rvp,dvp-cse)",
}


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to the ``reprogram`` application."""
    from reprogram.speed.run import BenchOptions
    from reprogram.speed.scale import ScaleOptions

    presets = {"": BenchOptions, "--scale": ScaleOptions}
    app.command("bench")(with_options(bench, options_of(BENCH_HELP, presets)))


def bench(
    scale: Annotated[
        bool,
        typer.Option(
            "--scale",
            help="the ImageNet-sized preset: time and peak memory of each step of a run "
            "(decode, text encoding, an epoch, evaluation) instead of the comparison",
        ),
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the results to this JSON file")
    ] = None,
    quiet: QuietOpt = False,
    **values: Any,
) -> None:
    """Time our engine against a loop in the official scripts' structure, on one device."""
    from reprogram.speed.run import BenchOptions, format_table, run_bench
    from reprogram.speed.scale import ScaleOptions, format_scale, run_scale

    command = "reprogram " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    def log(text: str) -> None:
        if not quiet:
            typer.echo(f"bench: {text}", err=True)

    if scale:
        options = ScaleOptions(**arguments_for(ScaleOptions, values))
        result = run_scale(options, json_path=json_out, command=command, log=log, quiet=quiet)
        typer.echo(format_scale(result))
    else:
        result = run_bench(
            BenchOptions(**arguments_for(BenchOptions, values)),
            json_path=json_out,
            command=command,
            log=log,
        )
        typer.echo(format_table(result))
    if json_out is not None:
        typer.echo(f"results written to {json_out}")
    if not (scale or result["equivalence_passed"]):
        raise typer.Exit(code=1)
