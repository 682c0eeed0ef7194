"""``reprogram eval``, ``predict``, ``compare`` and ``export``: use and compare finished runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from reprogram.cli.options import (
    DeviceOpt,
    arguments_for,
    config_of,
    options_of,
    overrides,
    warn_ignored,
    with_options,
)
from reprogram.errors import ReprogramError


def register(app: typer.Typer) -> None:
    """Add ``eval``, ``predict``, ``compare`` and ``export`` to ``app``."""
    from reprogram.cli.train import train_options
    from reprogram.export import export_run

    # without --checkpoint, eval builds a zero-shot model from train's options
    shared = train_options(only=CONFIG_OPTIONS.split())
    app.command("eval")(with_options(eval_command, shared, first=False))
    app.command("predict")(predict)
    app.command("compare")(compare)
    app.command("export")(
        with_options(export_command, options_of(EXPORT_HELP, {"": export_run}), first=False)
    )


# export's options, in --help order: each a parameter of reprogram.export.export_run
EXPORT_HELP = {
    "device": "where the run is loaded to fold its head (auto, cpu, cuda, cuda:1)",
    "weights": "the run's weights file, if it moved (the export records it)",
}


# train's options that eval takes too (the data, the backbone, the runtime)
CONFIG_OPTIONS = "dataset root backbone weights descriptions seed device config_file sets quiet"


def eval_command(
    checkpoint: Annotated[
        Path | None, typer.Option(help="a run folder (from 'reprogram train')")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    method: Annotated[
        str | None, typer.Option(help="without --checkpoint: a zero-shot method")
    ] = None,
    shots: Annotated[int | None, typer.Option(help="few-shot draw used for --split val")] = None,
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
    **shared: Any,
) -> None:
    """Evaluate a trained run, or a zero-shot method, on a dataset split; print the accuracy.

    With --checkpoint and another --dataset (or --targets): cross-dataset transfer or domain
    generalisation (see docs/protocols.md); a results JSON and a table are written.
    """
    values = dict(locals())
    values.update(values.pop("shared"))  # every option by name
    from reprogram.engine.config import apply_overrides
    from reprogram.engine.runs import NonFiniteScores, evaluate_split, load_run, zero_shot_model

    if checkpoint is not None and (targets is not None or values["dataset"]) and _transfer(values):
        return
    if checkpoint is None:
        why = "it names the datasets a trained run is evaluated on"
        warn_ignored("eval", "no --checkpoint", why, targets=targets)
    if checkpoint is not None:
        identity = {k: values[k] for k in ("method", "backbone", "descriptions", "shots", "seed")}
        ignored = dict(config=values["config_file"], set=values["sets"])
        warn_ignored("eval", "--checkpoint", **identity, **ignored)
        moved = {k: values[k] for k in ("device", "weights", "root")}
        run = load_run(checkpoint, **moved)
        changes = overrides(dataset=values["dataset"], quiet=values["quiet"])
        config = apply_overrides(run.config, changes, "command line")
        model, classnames = run.model, run.classnames
    else:
        values["method"] = method or "zero-shot"
        config = config_of(values, skip=("checkpoint", "split", "targets", "out")).validate()
        model, classnames = zero_shot_model(config)
    try:
        result = evaluate_split(model, config, split, classnames)
    except NonFiniteScores as err:
        raise ReprogramError(f"{checkpoint}: {err}") from err
    typer.echo(
        f"{config.method.name} on {config.data.dataset} [{split}]: "
        f"accuracy {result.accuracy:.4f} ({result.count} images)"
    )


def _transfer(values: dict) -> bool:
    """``eval --checkpoint RUN`` on other datasets (``--targets`` or another ``--dataset``):
    evaluate, write the results and print the table; False when the dataset is the run's own."""
    from reprogram.engine.runs import NonFiniteScores
    from reprogram.protocols import transfer

    checkpoint, targets, dataset = values["checkpoint"], values["targets"], values["dataset"]
    names = [t.strip() for t in (targets or "").split(",") if t.strip()]
    if targets is not None and not names:
        raise ReprogramError(f"--targets {targets!r} names no dataset: give them as a,b,c")
    names = names or [dataset]
    if not (targets or transfer.is_other_dataset(checkpoint, dataset)):
        return False
    identity = {k: values[k] for k in ("method", "backbone", "shots", "seed")}
    ignored = dict(config=values["config_file"], set=values["sets"])
    warn_ignored("eval", "--checkpoint", **identity, **ignored)
    try:
        result = transfer.evaluate_transfer(
            checkpoint,
            names,
            root=values["root"],
            descriptions=values["descriptions"] or None,
            split=values["split"],
            device=values["device"],
            quiet=values["quiet"],
            weights=values["weights"],
        )
    except NonFiniteScores as err:
        raise ReprogramError(f"{checkpoint}: {err}") from err
    written = transfer.write_transfer(
        result, values["out"] or transfer.default_output(checkpoint, names)
    )
    typer.echo(transfer.transfer_markdown(result) + f"\nwritten: {written}")
    return True


def predict(
    images: Annotated[list[Path], typer.Argument(help="image files")],
    checkpoint: Annotated[Path | None, typer.Option(help="a run folder")] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="an exported model folder (reprogram export)")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k")] = 5,
    device: DeviceOpt = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="the backbone's weights file, if it moved")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Top-k classes for images, from a run (--checkpoint) or an exported model (--model); for
    several prompts the prompt behind the top class, for a run's descriptions the description."""
    from reprogram.engine.runs import NonFiniteScores

    if top_k < 1:
        raise ReprogramError(f"--top-k must be at least 1, got {top_k}")
    if (checkpoint is None) == (model is None):
        raise ReprogramError("predict needs one of --checkpoint RUN or --model DIR")
    paths = [str(p) for p in images]
    try:
        if model is not None:
            from reprogram.export import load_exported

            exported = load_exported(model, device=device or "auto", weights=weights)
            predictions = exported.predict(paths, top_k)
        else:
            from reprogram.engine.runs import load_run, predict_images

            run = load_run(checkpoint, device=device, weights=weights)
            precision = run.config.backbone.precision
            predictions = predict_images(run.model, run.classnames, paths, top_k, precision)
    except NonFiniteScores as err:
        raise ReprogramError(f"{checkpoint or model}: {err}") from err
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


def export_command(
    run: Annotated[Path, typer.Argument(help="a run folder (from 'reprogram train')")],
    out: Annotated[
        Path, typer.Option("--out", help="folder for manifest.json and model.safetensors")
    ],
    **values: Any,
) -> None:
    """Fold a run's head into one linear layer per prompt and write what inference needs
    (prompts, head, class names, backbone, preprocessing); use it with predict --model."""
    from reprogram.export import export_run

    path = export_run(run, out, **arguments_for(export_run, values))
    typer.echo(f"exported {run} to {path.parent} ({path.name}, model.safetensors)")


def compare(
    runs: Annotated[list[Path], typer.Argument(help="run folders, or folders holding runs")],
    out: Annotated[Path | None, typer.Option(help="also write summary.md/.json here")] = None,
) -> None:
    """A table of methods × datasets: test accuracy mean ± std over seeds."""
    from reprogram.engine.runs import comparison_table, find_runs, table_markdown, write_summary

    run_dirs = find_runs(list(runs))
    table = write_summary(out, run_dirs) if out else comparison_table(run_dirs)
    typer.echo(table_markdown(table))
