"""The offline benchmark: every method on every toy task for several seeds, one table.

Tasks come from :mod:`reprogram.toy.tasks` (written once into ``OUT/data/<task>/``); the backbone
is the committed toy CLIP. Each (task, method, seed) is an ordinary run folder under
``OUT/runs/<task>/<method>/seed-N`` — finished runs are skipped, so a killed benchmark resumes.
The table (test accuracy mean ± std over seeds, and mean wall time per run) is written as
``OUT/benchmark.md`` and ``OUT/benchmark.json``.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reprogram.engine.config import TrainConfig, load_config
from reprogram.engine.progress import Reporter
from reprogram.engine.runs import check_reusable as reusable
from reprogram.engine.runs import comparison_table, format_cell, row_name
from reprogram.engine.seeds import check_seeds
from reprogram.engine.train import fit
from reprogram.storage.files import atomic_write_json, atomic_write_text

ALL_METHODS = ("zero-shot", "vp", "ar", "attrvr", "dvp-cse", "dvp-cls")


@dataclass
class BenchmarkSettings:
    """What the toy benchmark runs; the training settings apply to every trained method."""

    tasks: list[str] = field(default_factory=list)  # empty: every toy task
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    epochs: int = 30
    shots: int = 16
    batch_size: int = 32
    lr: float = 40.0
    train_pool: int = 48  # images per class written for train: seeds draw different shots from it
    val_pool: int = 8
    test_per_class: int = 50
    image_size: int = 64  # size of the written task images
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)


def prepare_task(name: str, data_dir: Path, settings: BenchmarkSettings) -> Path:
    """Write a toy task once (data seed 0); reuse it when it is already there."""
    from reprogram.toy.tasks import make_task

    folder = data_dir / name
    if not (folder / "task.json").is_file():
        make_task(
            name,
            folder,
            image_size=settings.image_size,
            seed=0,
            shots=settings.train_pool,
            val_shots=settings.val_pool,
            test_per_class=settings.test_per_class,
            overwrite=True,
        )
    return folder


def run_config(task_dir: Path, method: str, seed: int, settings: BenchmarkSettings, quiet: bool):
    from reprogram.toy import ARCH, pretrained_weights_path

    values = {
        "method": method,
        "dataset": f"folder:{task_dir}",
        "backbone": ARCH,
        "weights": str(pretrained_weights_path()),
        "shots": settings.shots,
        "seed": seed,
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "device": settings.device,
        "quiet": quiet,
        **settings.overrides,
    }
    return load_config(None, values)


def check_reusable(run_dir: Path, wanted: TrainConfig) -> None:
    """Refuse to reuse (or resume) a run folder made with other settings than ``wanted``."""
    reusable(run_dir, wanted, "choose another --out, or delete that folder to train it again")


def run_benchmark(
    out: str | Path, settings: BenchmarkSettings, quiet: bool = False
) -> dict[str, Any]:
    """Train every method on every task for every seed and write the table."""
    from reprogram.toy.tasks import task_names

    check_seeds(settings.seeds)
    out = Path(out)
    reporter = Reporter(quiet)
    tasks = settings.tasks or [t for t in task_names() if t != "heldout"]
    started = time.perf_counter()
    run_dirs = []
    for task in tasks:
        task_dir = prepare_task(task, out / "data", settings)
        for method in settings.methods:
            for seed in settings.seeds:
                run_dir = out / "runs" / task / method / f"seed-{seed}"
                run_dirs.append(run_dir)
                config = run_config(task_dir, method, seed, settings, True)
                started_before = (run_dir / "checkpoint.pt").is_file()
                if started_before or (run_dir / "results.json").is_file():
                    check_reusable(run_dir, config)
                if (run_dir / "results.json").is_file():
                    continue
                reporter.line(f"[{task}] {method} seed {seed}")
                fit(config, run_dir, resume=started_before)
    table = comparison_table(run_dirs)
    table["settings"] = settings.__dict__
    table["environment"] = {
        "device": settings.device
        if settings.device != "auto"
        else ("cuda" if torch.cuda.is_available() else "cpu"),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "benchmark_wall_time_s": time.perf_counter() - started,
    }
    atomic_write_json(out / "benchmark.json", table)
    atomic_write_text(out / "benchmark.md", benchmark_markdown(table))
    reporter.line(benchmark_markdown(table))
    return table


def benchmark_markdown(table: dict[str, Any]) -> str:
    """Tasks as rows, methods as columns: test accuracy (%) mean ± std, then mean wall time."""
    datasets = table["datasets"]
    methods = [row_name(row) for row in table["rows"]]
    cells = {(row_name(row), d): row["cells"].get(d) for row in table["rows"] for d in datasets}
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for dataset in datasets:
        name = dataset.rstrip("/").split("/")[-1]
        row = [format_cell(cells[(method, dataset)], wall_time=False) for method in methods]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines.append(
        "| mean wall time per run (s) | "
        + " | ".join(f"{_mean_wall_time([cells[(m, d)] for d in datasets]):.0f}" for m in methods)
        + " |"
    )
    settings = table.get("settings", {})
    if settings:
        lines.append("")
        lines.append(
            f"Test accuracy in % (mean ± std over seeds {settings.get('seeds')}), "
            f"{settings.get('shots')} shots, {settings.get('epochs')} epochs, "
            f"batch {settings.get('batch_size')}, lr {settings.get('lr')}."
        )
    return "\n".join(lines) + "\n"


def _mean_wall_time(cells: list[dict | None]) -> float:
    times = [cell["wall_time_s"] for cell in cells if cell]
    return sum(times) / max(1, len(times))
