"""``reprogram toy …`` (pretrain the toy CLIP, write tasks, check zero-shot accuracy), and the
runs on it: ``reprogram demo`` and ``reprogram benchmark toy``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reprogram.cli.options import QuietOpt, SetOpt, arguments_for, options_of, with_options
from reprogram.toy.tasks import TASKS, get_task, make_task

toy_app = typer.Typer(
    help="The offline reference world: a procedural world, a small CLIP trained on it, tasks.",
    no_args_is_help=True,
)


benchmark_app = typer.Typer(help="Benchmark suites: every method on every task for several seeds.")


def register(app: typer.Typer) -> None:
    """Add the ``toy`` group, ``demo`` and ``benchmark toy`` to ``app``."""
    app.command("demo")(demo)
    app.add_typer(benchmark_app, name="benchmark")
    app.add_typer(toy_app, name="toy")


@toy_app.command("pretrain")
def pretrain_command(
    out: Path = typer.Option(
        ..., "--out", help="Output .safetensors file (fp16 open_clip state dict)."
    ),
    steps: int = typer.Option(2000, help="Optimisation steps."),
    seed: int = typer.Option(
        0, help="Seed of the world sampler, the initialisation and augmentation."
    ),
    batch_size: int = typer.Option(128, help="Images (and captions) per step."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW, warm-up, cosine)."),
    warmup: int = typer.Option(100, help="Warm-up steps."),
    eval_every: int = typer.Option(
        200, help="Held-out zero-shot check every N steps (0: at the end)."
    ),
    eval_per_class: int = typer.Option(20, help="Images per class of that check."),
    frame_prob: float = typer.Option(
        0.0, help="Share of images shrunk and framed by a random border (augmentation)."
    ),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch's default)."),
    arch: str = typer.Option(
        "toy", help="Architecture config (packaged model_configs/<arch>.json)."
    ),
) -> None:
    """Pretrain the toy CLIP contrastively on the world (CPU), and save it."""
    from reprogram.toy.pretrain import PretrainConfig, pretrain

    steps = max(1, steps)
    config = PretrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=min(warmup, max(1, steps // 5)),
        seed=seed,
        arch=arch,
        eval_every=eval_every,
        eval_per_class=eval_per_class,
        frame_prob=frame_prob,
        threads=threads or None,
    )
    result = pretrain(out, config, log=typer.echo)
    typer.echo(
        f"done: {result.path} ({result.file_bytes / 1e6:.2f} MB, {result.params:,} parameters), "
        f"{result.wall_s:.0f}s wall, {result.cpu_s:.0f}s CPU, "
        f"held-out zero-shot {result.heldout_accuracy:.3f}"
    )


@toy_app.command("tasks")
def tasks_command() -> None:
    """List the downstream tasks."""
    for task in TASKS.values():
        typer.echo(f"{task.name:14s} {len(task.classes):3d} classes  {task.shift}")


# make-task's options, in --help order: parameters of toy.tasks.make_task (types, defaults)
MAKE_TASK_HELP = {
    "image_size": "Image side in pixels.",
    "seed": "Seed of the images (and sentence choice).",
    "shots": "Training images per class.",
    "val_shots": "Validation images per class.",
    "test_per_class": "Test images per class.",
    "overwrite": "Replace an existing folder.",
}


def make_task_command(
    name: str = typer.Argument(..., help="Task name (see `reprogram toy tasks`), or 'all'."),
    out: Path = typer.Option(
        ..., "--out", help="Output folder (for 'all': one sub-folder per task)."
    ),
    **values: Any,
) -> None:
    """Write a downstream task in the folder layout (PNG splits, descriptions, task.json)."""
    names = list(TASKS) if name == "all" else [get_task(name).name]
    for task in names:
        folder = out / task if name == "all" else out
        make_task(task, folder, **arguments_for(make_task, values))
        typer.echo(f"wrote {task} to {folder} (use --dataset folder:{folder})")


toy_app.command("make-task")(
    with_options(make_task_command, options_of(MAKE_TASK_HELP, {"": make_task}))
)


@toy_app.command("zeroshot")
def zeroshot_command(
    weights: Path = typer.Option(
        None, "--weights", help="Weights file (default: the packaged toy CLIP)."
    ),
    arch: str = typer.Option("toy", help="Architecture of the weights."),
    per_class: int = typer.Option(40, help="Images per class of the held-out check."),
    task_dir: list[Path] = typer.Option(
        None, "--task-dir", help="Also evaluate these task folders (test)."
    ),
    split: str = typer.Option("test", help="Split of --task-dir to evaluate."),
) -> None:
    """Zero-shot accuracy (class-name prompts) on the held-out pairs, and on task folders."""
    from reprogram.backbones import load_backbone
    from reprogram.toy import pretrained_weights_path
    from reprogram.toy.zeroshot import heldout_accuracy, task_accuracy

    backbone = load_backbone(arch, weights=weights or pretrained_weights_path())
    typer.echo(
        f"held-out pairs (30 classes): {heldout_accuracy(backbone, per_class=per_class):.3f}"
    )
    for folder in task_dir or []:
        typer.echo(f"{folder} ({split}): {task_accuracy(backbone, folder, split):.3f}")


@toy_app.command("preview")
def preview_command(
    out: Path = typer.Option(..., "--out", help="Output PNG (a grid); captions go to OUT.txt."),
    count: int = typer.Option(64, help="Number of images."),
    image_size: int = typer.Option(64, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Render a grid of random world images and their captions, to look at."""
    from PIL import Image

    from reprogram.storage.files import atomic_write, atomic_write_text
    from reprogram.toy.world import preview_grid

    grid, texts = preview_grid(count, image_size, seed)
    atomic_write(out, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
    atomic_write_text(out.with_name(out.name + ".txt"), "\n".join(texts) + "\n")
    typer.echo(f"wrote {out} and {out.name}.txt")


def demo(
    out: Annotated[Path, typer.Option(help="where runs are written")] = Path("runs/demo"),
    seeds: Annotated[list[int] | None, typer.Option("--seeds", help="default: 1 2 3")] = None,
    epochs: Annotated[int | None, typer.Option(help="default: 30")] = None,
    quiet: QuietOpt = False,
) -> None:
    """The main job on an embedded default, three seeds, mean ± std (see README)."""
    from reprogram.toy.demo import DEMO_EPOCHS, DEMO_SEEDS, run_demo

    run_demo(out, quiet=quiet, epochs=epochs or DEMO_EPOCHS, seeds=tuple(seeds or DEMO_SEEDS))


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
