"""The ``reprogram`` command line: a thin layer over the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

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
    causes: Annotated[
        str | None,
        typer.Option(help="dvp-cse on a published dataset: packaged causes, e.g. 4,5,6,7"),
    ] = None,
    description_source: Annotated[
        str | None,
        typer.Option(
            "--description-source",
            help="packaged AttrVR attributes from: gpt4omini_llm, gpt4omini_mllm, llama, phi3",
        ),
    ] = None,
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
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="also write TensorBoard events (RUN/tensorboard)")
    ] = False,
    config_file: ConfigOpt = None,
    sets: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/run"),
    resume: Annotated[
        bool, typer.Option("--resume", help="continue an interrupted run in --out")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a method's prompts (or evaluate a zero-shot method) and write a run folder."""
    try:
        _train(dict(locals()))
    except KeyboardInterrupt:
        # typer would print "Aborted!" and exit 1: say what to do instead
        typer.echo(
            f"interrupted; rerun with --resume to continue (finished epochs are saved in {out})",
            err=True,
        )
        raise typer.Exit(130) from None


def _ignored(command: str, because: str, **given) -> None:
    """Warn about options that have no effect (``--checkpoint`` or ``--resume`` decides)."""
    names = [f"--{k.replace('_', '-')}" for k, v in given.items() if v not in (None, [], False)]
    if names:
        typer.echo(
            f"warning: {command}: {', '.join(names)} ignored with {because} "
            "(the run's own settings are used)",
            err=True,
        )


def _train(options: dict[str, Any]) -> None:
    from reprogram.engine.train import fit, fit_seeds

    out, resume, seeds = options.pop("out"), options.pop("resume"), options.pop("seeds")
    config_file, sets = options.pop("config_file"), options.pop("sets")
    if resume and not seeds:
        from reprogram.engine.config import RUNTIME_FIELDS

        # execution settings (device, quiet, --set compile=…) apply; the run's identity is kept
        runtime = [s for s in sets or [] if s.partition("=")[0].strip() in RUNTIME_FIELDS]
        given = {k: v for k, v in options.items() if k not in ("quiet", "device")}
        others = [s for s in sets or [] if s not in runtime]
        _ignored("train", "--resume", **given, config=config_file, set=others)
        execution = _config(None, runtime, device=options["device"], quiet=options["quiet"] or None)
        results = fit(execution, out, resume=True)
        _print_results(results)
        return
    options.update(descriptions=options["descriptions"] or None, quiet=options["quiet"] or None)
    options.update(tensorboard=options["tensorboard"] or None)
    config = _config(config_file, sets, **options)
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
    targets: Annotated[
        str | None,
        typer.Option(
            "--targets", help="with --checkpoint: several target datasets, a,b,c (one table)"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="transfer results file (default: RUN/eval-TARGET.json and .md)"),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a trained run, or a zero-shot method, on a dataset split; print the accuracy.

    With --checkpoint and another --dataset (or --targets): cross-dataset transfer or domain
    generalisation (see docs/protocols.md); a results JSON and a table are written.
    """
    from reprogram.engine.config import apply_overrides
    from reprogram.engine.runs import evaluate_split, load_run
    from reprogram.engine.setup import build_backbone, build_model
    from reprogram.model.methods import get_recipe

    if checkpoint is not None and (targets or dataset):
        from reprogram.protocols import transfer

        names = [t.strip() for t in (targets or "").split(",") if t.strip()] or [dataset]
        if targets or transfer.is_other_dataset(checkpoint, dataset):
            given = dict(method=method, backbone=backbone, shots=shots, seed=seed)
            _ignored("eval", "--checkpoint", **given, config=config_file, set=sets)
            result = transfer.evaluate_transfer(
                checkpoint, names, root, descriptions or None, split, device, quiet, weights
            )
            target = out or transfer.default_output(checkpoint, names)
            written = transfer.write_transfer(result, target)
            typer.echo(transfer.transfer_markdown(result) + f"\nwritten: {written}")
            return
    if checkpoint is not None:
        _ignored(
            "eval",
            "--checkpoint",
            method=method,
            backbone=backbone,
            descriptions=descriptions,
            shots=shots,
            seed=seed,
            config=config_file,
            set=sets,
        )
        run = load_run(checkpoint, device=device, weights=weights, root=root)
        config = apply_overrides(
            run.config, _overrides(dataset=dataset, quiet=quiet or None), "command line"
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


@app.command("base2novel")
def base2novel_command(
    method: MethodOpt = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    descriptions: DescriptionsOpt = None,
    shots: Annotated[int | None, typer.Option(help="shots per class (0 = all)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    seeds: Annotated[
        list[int] | None, typer.Option("--seeds", help="several seeds: mean ± std")
    ] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    device: DeviceOpt = None,
    config_file: ConfigOpt = None,
    sets: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/base2novel"),
    resume: Annotated[bool, typer.Option("--resume", help="continue in --out")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Base-to-novel (CoCoOp's protocol): train on the first half of the classes, test on base
    and novel classes, report their harmonic mean (OUT/base2novel.json and .md)."""
    from reprogram.protocols.base_to_novel import (
        base_to_novel_markdown,
        run_base_to_novel,
        run_base_to_novel_seeds,
    )

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
        device=device,
        quiet=quiet or None,
    )
    if seeds:
        summary = run_base_to_novel_seeds(config, list(seeds), out, resume=resume)
        typer.echo(base_to_novel_markdown(summary["runs"]))
        return
    typer.echo(base_to_novel_markdown([run_base_to_novel(config, out, resume=resume)]))


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="image files")],
    checkpoint: Annotated[Path, typer.Option(help="a run folder")],
    top_k: Annotated[int, typer.Option("--top-k")] = 5,
    device: DeviceOpt = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="the run's weights file, if it moved")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Top-k classes for images; for description methods, the prompt and description behind it."""
    from reprogram.engine.runs import load_run, predict_images

    if top_k < 1:
        raise ReprogramError(f"--top-k must be at least 1, got {top_k}")
    run = load_run(checkpoint, device=device, weights=weights)
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
    seeds: Annotated[list[int] | None, typer.Option("--seeds", help="default: 1 2 3")] = None,
    epochs: Annotated[int | None, typer.Option(help="default: 30")] = None,
    quiet: QuietOpt = False,
) -> None:
    """The main job on an embedded default, three seeds, mean ± std (see README)."""
    from reprogram.toy.demo import DEMO_EPOCHS, DEMO_SEEDS, run_demo

    run_demo(out, quiet=quiet, epochs=epochs or DEMO_EPOCHS, seeds=tuple(seeds or DEMO_SEEDS))


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
    from reprogram.engine.config import parse_set_options
    from reprogram.toy.benchmark import ALL_METHODS, BenchmarkSettings, run_benchmark

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
    from reprogram.cli import describe as describe_cli
    from reprogram.cli import report as report_cli
    from reprogram.cli import speed as bench_cli
    from reprogram.cli import toy as toy_cli

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


# defaults that TrainConfig leaves to the data (None / empty), as --help should say them
SHOWN_DEFAULTS = {
    "clusters": "the dataset's published v, else 3",
    "causes": "1,2,3",
    "description_source": "the papers' own sets",
    "descriptions": "packaged for published datasets; DIR/descriptions/ for folder:DIR",
}


def show_config_defaults(command: Any) -> Any:
    """Show TrainConfig's defaults in ``--help`` for options left ``None`` (the config decides)."""
    import copy
    import dataclasses
    import inspect

    from reprogram.engine.config import TrainConfig

    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(TrainConfig)
    }
    signature = inspect.signature(command, eval_str=True)
    params = []
    for param in signature.parameters.values():
        meta = getattr(param.annotation, "__metadata__", ())
        if param.name in defaults and param.default is None and meta:
            value = defaults[param.name]
            info = copy.copy(meta[0])
            info.show_default = SHOWN_DEFAULTS.get(param.name) or (
                "none"
                if value in (None, [], "")
                else ",".join(map(str, value))
                if isinstance(value, list)
                else str(value)
            )
            param = param.replace(annotation=Annotated[param.annotation.__origin__, info])
        params.append(param)
    command.__signature__ = signature.replace(parameters=params)
    return command


def main(argv: list[str] | None = None) -> None:
    register_subcommands(app)
    show_config_defaults(train)
    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        from typer import rich_utils

        # not a terminal: no width to fit, so do not wrap help at rich's default 80 columns
        rich_utils.MAX_WIDTH = rich_utils.MAX_WIDTH or 160
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="reprogram", standalone_mode=True)
    except ReprogramError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is saved (use --resume to continue)", err=True)
        sys.exit(130)
