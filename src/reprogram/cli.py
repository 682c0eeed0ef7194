"""The ``reprogram`` command line: a thin layer over the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from reprogram.errors import ReprogramError

app = typer.Typer(
    name="reprogram",
    help="Visual reprogramming of frozen CLIP: DVP (decoupled visual prompts) and baselines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Options taking several values after one flag (``--seeds 1 2 3``); typer repeats the flag.
MULTI_VALUE_OPTIONS = ("--descriptions", "--seeds", "--tasks", "--methods")

MethodOpt = Annotated[
    str,
    typer.Option("--method", help="zero-shot, zero-shot-desc, vp, ar, attrvr, dvp-cse, dvp-cls"),
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="a published name (dtd, …), folder:PATH or csv:FILE")
]
RootOpt = Annotated[
    str | None, typer.Option("--root", help="folder holding the published datasets")
]
BackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--backbone", help="architecture (ViT-B-16, …), random:ARCH, local-dir:DIR, hf:DIR"
    ),
]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="local weights file or folder")]
DescriptionsOpt = Annotated[
    list[str] | None,
    typer.Option("--descriptions", help="description files (one per cause for dvp-cse)"),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="any config key: --set key=value")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:1")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")]


def _overrides(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _config(config_file: Path | None, sets: list[str] | None, **values):
    from reprogram.engine.config import load_config, parse_set_options

    overrides = _overrides(**values)
    overrides.update(parse_set_options(sets or []))
    return load_config(config_file, overrides)


@app.command()
def train(
    method: MethodOpt = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    descriptions: DescriptionsOpt = None,
    shots: Annotated[int | None, typer.Option(help="shots per class (0 = all)")] = None,
    seed: Annotated[
        int | None, typer.Option(help="random seed (few-shot draw, order, init)")
    ] = None,
    seeds: Annotated[
        list[int] | None, typer.Option("--seeds", help="several seeds: one run each + table")
    ] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    eval_every: Annotated[
        int | None, typer.Option("--eval-every", help="validate every N epochs")
    ] = None,
    select_on: Annotated[
        str | None,
        typer.Option("--select-on", help="val (default) or test (official scripts' protocol)"),
    ] = None,
    clusters: Annotated[
        int | None, typer.Option(help="DVP-cls: number of clusters/prompts")
    ] = None,
    device: DeviceOpt = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, bf16, fp16")] = None,
    config_file: ConfigOpt = None,
    sets: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/run"),
    resume: Annotated[
        bool, typer.Option("--resume", help="continue an interrupted run in --out")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a method's prompts (or evaluate a zero-shot method) and write a run folder."""
    from reprogram.engine.train import fit, fit_seeds

    if resume and not seeds:
        from reprogram.engine.config import TrainConfig

        results = fit(TrainConfig(), out, resume=True)
        _print_results(results)
        return
    config = _config(
        config_file,
        sets,
        method=method,
        dataset=dataset,
        root=root,
        backbone=backbone,
        weights=weights,
        descriptions=descriptions or None,
        shots=shots,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        eval_every=eval_every,
        select_on=select_on,
        clusters=clusters,
        device=device,
        precision=precision,
        quiet=quiet or None,
    )
    if seeds:
        from reprogram.engine.runs import table_markdown

        table = fit_seeds(config, list(seeds), out, resume=resume)
        typer.echo(table_markdown(table))
        return
    _print_results(fit(config, out))


def _print_results(results: dict) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun, the main process speaks
        return
    typer.echo(
        f"{results['method']}  val_accuracy {results['val_accuracy']:.4f}  "
        f"test_accuracy {results['test_accuracy']:.4f}"
    )


@app.command("eval")
def eval_command(
    checkpoint: Annotated[
        Path | None, typer.Option(help="a run folder (from 'reprogram train')")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    method: Annotated[
        str | None, typer.Option(help="without --checkpoint: a zero-shot method")
    ] = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    descriptions: DescriptionsOpt = None,
    shots: Annotated[int | None, typer.Option(help="few-shot draw used for --split val")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: DeviceOpt = None,
    config_file: ConfigOpt = None,
    sets: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a trained run, or a zero-shot method, on a dataset split; print the accuracy."""
    from reprogram.engine.config import apply_overrides
    from reprogram.engine.runs import evaluate_split, load_run
    from reprogram.engine.setup import build_backbone, build_model
    from reprogram.methods import get_recipe

    if checkpoint is not None:
        run = load_run(checkpoint, device=device)
        config = apply_overrides(
            run.config, _overrides(dataset=dataset, root=root, quiet=quiet or None), "command line"
        )
        model, classnames = run.model, run.classnames
    else:
        config = _config(
            config_file,
            sets,
            method=method or "zero-shot",
            dataset=dataset,
            root=root,
            backbone=backbone,
            weights=weights,
            descriptions=descriptions or None,
            shots=shots,
            seed=seed,
            device=device,
            quiet=quiet or None,
        ).validate()
        if get_recipe(config.method).trainable:
            raise ReprogramError(
                f"method '{config.method}' must be trained first: use --checkpoint RUN"
            )
        from reprogram.data import load_dataset

        classnames = load_dataset(config.dataset, config.root, config.split_seed).classnames
        model = build_model(config, build_backbone(config), classnames)
    result = evaluate_split(model, config, split, classnames)
    typer.echo(
        f"{config.method} on {config.dataset} [{split}]: "
        f"accuracy {result.accuracy:.4f} ({result.count} images)"
    )


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="image files")],
    checkpoint: Annotated[Path, typer.Option(help="a run folder")],
    top_k: Annotated[int, typer.Option("--top-k")] = 5,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Top-k classes for images; for description methods, the prompt and description behind it."""
    from reprogram.engine.runs import load_run, predict_images

    run = load_run(checkpoint, device=device)
    predictions = predict_images(
        run.model, run.classnames, [str(p) for p in images], top_k, run.config.precision
    )
    if as_json:
        typer.echo(json.dumps([p.__dict__ for p in predictions], indent=2))
        return
    for prediction in predictions:
        typer.echo(prediction.path)
        for name, probability in prediction.top:
            typer.echo(f"  {probability:6.3f}  {name}")
        if prediction.prompt:
            shares = ", ".join(f"{k} {v:.0%}" for k, v in (prediction.prompt_shares or {}).items())
            typer.echo(f"  top prompt: {prediction.prompt} ({shares})")
        if prediction.description:
            typer.echo(f"  top description: {prediction.description}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="run folders, or folders holding runs")],
    out: Annotated[Path | None, typer.Option(help="also write summary.md/.json here")] = None,
) -> None:
    """A table of methods × datasets: test accuracy mean ± std over seeds."""
    from reprogram.engine.runs import comparison_table, find_runs, table_markdown, write_summary

    run_dirs = find_runs(list(runs))
    table = write_summary(out, run_dirs) if out else comparison_table(run_dirs)
    typer.echo(table_markdown(table))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where runs are written")] = Path("runs/demo"),
    quiet: QuietOpt = False,
) -> None:
    """The main job on an embedded default (see README)."""
    from reprogram.demo import run_demo

    run_demo(out, quiet=quiet)


benchmark_app = typer.Typer(help="Benchmark suites: every method on every task for several seeds.")
app.add_typer(benchmark_app, name="benchmark")


@benchmark_app.command("toy")
def benchmark_toy(
    out: Annotated[Path, typer.Option(help="data, runs and the table go here")] = Path(
        "runs/benchmark-toy"
    ),
    tasks: Annotated[
        list[str] | None, typer.Option("--tasks", help="toy tasks (default: all shifted ones)")
    ] = None,
    methods: Annotated[
        list[str] | None, typer.Option("--methods", help="methods (default: all six)")
    ] = None,
    seeds: Annotated[list[int] | None, typer.Option("--seeds")] = None,
    epochs: Annotated[int, typer.Option()] = 30,
    shots: Annotated[int, typer.Option()] = 16,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    lr: Annotated[float, typer.Option()] = 40.0,
    device: Annotated[str, typer.Option()] = "auto",
    sets: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Every method × every toy task × seeds on the committed toy CLIP → benchmark.md/.json."""
    from reprogram.benchmark import ALL_METHODS, BenchmarkSettings, run_benchmark
    from reprogram.engine.config import parse_set_options

    settings = BenchmarkSettings(
        tasks=list(tasks or []),
        methods=list(methods or ALL_METHODS),
        seeds=list(seeds or [1, 2, 3]),
        epochs=epochs,
        shots=shots,
        batch_size=batch_size,
        lr=lr,
        device=device,
        overrides=parse_set_options(sets or []),
    )
    run_benchmark(out, settings, quiet=quiet)


def register_subcommands(target: typer.Typer) -> None:
    """Add the command groups that live in their own modules (explicitly, not by import)."""
    from reprogram.bench import cli as bench_cli
    from reprogram.describe import cli as describe_cli
    from reprogram.report import cli as report_cli
    from reprogram.toy import cli as toy_cli

    for module in (describe_cli, toy_cli, report_cli, bench_cli):
        module.register(target)


def expand_multi_value_options(argv: list[str]) -> list[str]:
    """``--seeds 1 2 3`` -> ``--seeds 1 --seeds 2 --seeds 3`` (typer repeats the flag instead)."""
    result: list[str] = []
    current = None
    for token in argv:
        if token in MULTI_VALUE_OPTIONS:
            current = token
            continue
        if current is not None:
            if token.startswith("-"):
                current = None
            else:
                result += [current, token]
                continue
        result.append(token)
    return result


def main(argv: list[str] | None = None) -> None:
    register_subcommands(app)
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="reprogram", standalone_mode=True)
    except ReprogramError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is saved (use --resume to continue)", err=True)
        sys.exit(130)
