"""``reprogram train`` and ``reprogram base2novel``: train prompts, write run folders."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from reprogram.cli.options import (
    BackboneOpt,
    BatchSizeOpt,
    ConfigOpt,
    DatasetOpt,
    DescriptionsOpt,
    DeviceOpt,
    EpochsOpt,
    LrOpt,
    MethodOpt,
    QuietOpt,
    RootOpt,
    SeedOpt,
    SetOpt,
    ShotsOpt,
    WeightsOpt,
    config_from,
    config_of,
    options_like,
    show_config_defaults,
    warn_ignored,
    with_options,
)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``base2novel`` to ``app``."""
    app.command("train")(show_config_defaults(train))
    # the same options as train, into another folder by default
    b2n_options = train_options(out=Path("runs/base2novel"))
    app.command("base2novel")(with_options(base2novel_command, b2n_options))


def train_options(only: Sequence[str] | None = None, **defaults: Any) -> list[inspect.Parameter]:
    """``train``'s options as its ``--help`` shows them, for the commands that take them too
    (see :func:`reprogram.cli.options.options_like`)."""
    return options_like(show_config_defaults(train), only, **defaults)


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
    shots: ShotsOpt = None,
    seed: SeedOpt = None,
    seeds: Annotated[
        list[int] | None, typer.Option("--seeds", help="several seeds: one run each + table")
    ] = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
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
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="replace a run in --out that is not reused (--seeds and base2novel reuse "
            "finished runs of the same settings)",
        ),
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


# where and how often to run, not the config
RUN_FOLDER_OPTIONS = ("out", "resume", "seeds", "overwrite")


def _train(values: dict[str, Any]) -> None:
    from reprogram.engine.seeds import fit_seeds
    from reprogram.engine.train import fit

    out, resume, seeds, overwrite = (values[k] for k in RUN_FOLDER_OPTIONS)
    if resume and not seeds:
        print_results(fit(_resume_config(values), out, resume=True, overwrite=overwrite))
        return
    config = config_of(values, skip=RUN_FOLDER_OPTIONS)
    if seeds:
        from reprogram.engine.runs import table_markdown

        summary = fit_seeds(config, list(seeds), out, resume=resume, overwrite=overwrite)
        typer.echo(table_markdown(summary))
        return
    print_results(fit(config, out, overwrite=overwrite))


def _resume_config(values: dict[str, Any]):
    """With ``--resume``: execution settings (``--device``, ``--quiet``, ``--tensorboard``,
    ``--set compile=…``: the config's runtime keys) apply; the run's identity is kept, and the
    options that would change it are named as ignored."""
    from reprogram.engine.config import is_runtime_key

    sets = values["sets"] or []
    runtime = [s for s in sets if is_runtime_key(s.partition("=")[0].strip())]
    options = {k: v for k, v in values.items() if is_runtime_key(k)}
    kept = ("config_file", "sets", *RUN_FOLDER_OPTIONS, *options)
    identity = {k: v for k, v in values.items() if k not in kept}
    others = [s for s in sets if s not in runtime]
    warn_ignored("train", "--resume", **identity, config=values["config_file"], set=others)
    return config_from(None, runtime, **options)


def print_results(results: dict) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun, the main process speaks
        return
    typer.echo(
        f"{results['method']}  val_accuracy {results['val_accuracy']:.4f}  "
        f"test_accuracy {results['test_accuracy']:.4f}"
    )


def base2novel_command(**values: Any) -> None:
    """Base-to-novel (CoCoOp's protocol): train on the first half of the classes, test on base
    and novel classes, report their harmonic mean (OUT/base2novel.json and .md)."""
    from reprogram.protocols.base_to_novel import (
        base_to_novel_markdown,
        run_base_to_novel,
        run_base_to_novel_seeds,
    )

    out, resume, seeds, overwrite = (values[k] for k in RUN_FOLDER_OPTIONS)
    config = config_of(values, skip=RUN_FOLDER_OPTIONS)
    if config.data.subsample_classes != "all":
        typer.echo(
            f"warning: base2novel: subsample_classes={config.data.subsample_classes} ignored "
            "(base2novel trains on the base classes and tests base and novel)",
            err=True,
        )
    if seeds:
        summary = run_base_to_novel_seeds(config, list(seeds), out, resume, overwrite)
        typer.echo(base_to_novel_markdown(summary["runs"]))
        return
    result = run_base_to_novel(config, out, resume=resume, overwrite=overwrite)
    typer.echo(base_to_novel_markdown([result]))
