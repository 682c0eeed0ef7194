"""``reprogram describe``: class descriptions from an LLM endpoint or templates, a thin layer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from reprogram.cli.options import (
    ClassListOpt,
    PublishedDatasetOpt,
    arguments_for,
    options_of,
    with_options,
)
from reprogram.errors import ReprogramError
from reprogram.text.describe.classes import describe_inputs
from reprogram.text.describe.client import ChatClient
from reprogram.text.describe.generate import (
    MODES,
    GenerationResult,
    ProgressInfo,
    Sampling,
    generate_descriptions,
)
from reprogram.text.describe.prompts import SYSTEM_PROMPT, parse_list
from reprogram.text.describe.templates import template_descriptions

PAPER_CAUSES = 3  # DVP-cse uses the first three causes of a dataset


# describe's options for the endpoint client and the sampling, in --help order: parameters of
# ChatClient and fields of Sampling (their types and defaults)
CLIENT_HELP = {
    "base_url": "OpenAI-compatible base URL (env OPENAI_BASE_URL).",
    "model": "Model name.",
    "api_key": "API key (env OPENAI_API_KEY).",
    "timeout": "Seconds to wait for the server to send data.",
    "deadline": "Seconds for a whole request, answer included.",
    "max_backoff": "Longest wait between retries (and Retry-After).",
    "max_retries": "Retries on 429/5xx/time-outs.",
}
SAMPLING_HELP = {
    "temperature": "Sampling temperature.",
    "max_tokens": "Tokens per answer at most.",
    "n_per_request": "Cap on answers asked per request (n).",
}


def register(app: typer.Typer) -> None:
    """Add ``describe`` to ``app``."""
    options = options_of(SAMPLING_HELP, {"": Sampling}) + options_of(CLIENT_HELP, {"": ChatClient})
    app.command("describe")(with_options(describe_command, options, first=False))


@contextmanager
def _progress(enabled: bool, label: str) -> Iterator[Callable[[ProgressInfo], None]]:
    """A rich progress bar (classes done, requests, tokens) as an ``on_progress`` callback."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
    task_id = bar.add_task(label, total=None, stats="")

    def update(info: ProgressInfo) -> None:
        u = info.usage
        stats = f"{u.requests} requests, {u.retries} retried, {u.total_tokens:,} tokens"
        bar.update(task_id, completed=info.done, total=info.total, stats=stats)

    with bar:
        yield update


def _print_result(result: GenerationResult, out: Path) -> None:
    for warning in result.warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    names = ", ".join(p.name for p in result.files)
    typer.echo(f"{out}: {names}")
    per_file = result.total // max(len(result.files), 1)
    typer.echo(
        f"{len(result.files)} files x {per_file} classes: {result.complete}/{result.total} complete"
        + ("" if result.source == "template" else f"; {result.usage.summary()}")
    )
    for filename, short in result.incomplete.items():
        shown = ", ".join(f"{c} ({k})" for c, k in list(short.items())[:10])
        more = f" (+{len(short) - 10} more)" if len(short) > 10 else ""
        typer.secho(
            f"{filename}: {len(short)} classes short of valid answers: {shown}{more}",
            fg="yellow",
            err=True,
        )
    if not result.ok:
        typer.secho(
            "rerun the same command to ask again for what is missing", fg="yellow", err=True
        )


def _retrying(line: str) -> None:
    typer.secho(f"  {line}", fg="yellow", err=True)


def describe_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the description files.")],
    classes: ClassListOpt = None,
    dataset: PublishedDatasetOpt = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Task noun for the prompt, e.g. 'texture'.")
    ] = None,
    causes: Annotated[
        str | None, typer.Option("--causes", help="Comma-separated causes, one file each.")
    ] = None,
    num_causes: Annotated[
        int, typer.Option("--num-causes", help="With --dataset: how many of its causes.")
    ] = PAPER_CAUSES,
    mode: Annotated[
        str, typer.Option("--mode", help="'causes' (DVP-cse) or 'attributes' (DVP-cls, AttrVR).")
    ] = "causes",
    attributes: Annotated[
        str, typer.Option("--attributes", help="Attribute files: des (descriptive), dist.")
    ] = "des,dist",
    key: Annotated[
        str | None, typer.Option("--key", help="File prefix (default: dataset key or file stem).")
    ] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", help="Answers per class (default 20, attributes 25).")
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", help="Prompt template: {class}, {task}, {cause}, {article}."),
    ] = None,
    system: Annotated[
        str, typer.Option("--system", help="System message ('' for none).")
    ] = SYSTEM_PROMPT,
    stop: Annotated[str, typer.Option("--stop", help="Stop string ('' for none).")] = ".",
    max_failed: Annotated[
        int, typer.Option("--max-failed", help="Per class: requests with no valid answer allowed.")
    ] = 3,
    workers: Annotated[int, typer.Option("--workers", help="Requests in flight at once.")] = 1,
    template: Annotated[
        bool,
        typer.Option("--template", help="No LLM: template sentences from names (weaker)."),
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    **values: Any,
) -> None:
    """Generate class descriptions with an OpenAI-compatible LLM (resumable), or templates."""
    if mode not in MODES:
        raise ReprogramError(f"unknown --mode '{mode}' (known: {', '.join(MODES)})")
    names, task_noun, cause_list, file_prefix = describe_inputs(
        classes, dataset, task, causes, num_causes, key, mode
    )
    kinds = parse_list(attributes)
    # what both writers take: the classes, their files and how many answers per class
    files = dict(mode=mode, key=file_prefix, samples=samples, attributes=kinds)
    if template:
        _print_result(template_descriptions(names, task_noun, cause_list, out, **files), out)
        return
    client = ChatClient(**arguments_for(ChatClient, values), on_retry=_retrying)
    sampling = Sampling(
        **arguments_for(Sampling, values),
        stop=(stop,) if stop else (),
        system=system or None,
        max_failed_requests=max_failed,
    )
    n_files = len(cause_list) if mode == "causes" else len(kinds)
    label = f"{file_prefix}: {len(names)} classes x {n_files} files"
    try:
        with _progress(progress, label) as on_progress:
            result = generate_descriptions(
                names,
                task_noun,
                cause_list,
                out,
                **files,
                client=client,
                prompt=prompt,
                sampling=sampling,
                workers=workers,
                on_progress=on_progress,
            )
    except KeyboardInterrupt:
        typer.secho(
            f"interrupted; answers received so far are saved in {out}. {client.usage.summary()}. "
            "Rerun the same command to continue.",
            fg="yellow",
            err=True,
        )
        raise typer.Exit(130) from None
    _print_result(result, out)
    if not result.ok:
        raise typer.Exit(1)
