"""Several runs of one config: one per seed (``fit_seeds``), and whether a run folder already
holds the run a config asks for (``reusable_run``: reuse, resume, refuse or replace)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprogram.engine.checkpoint import CHECKPOINT, RESULTS
from reprogram.engine.config import TrainConfig
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError

__all__ = ["Reuse", "check_seeds", "fit_seeds", "reusable_run"]


def check_seeds(seeds: list[int]) -> None:
    """Several seeds run once each: a seed given twice would count one run as two."""
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ReprogramError(f"--seeds: seed {repeated[0]} is given twice (each seed runs once)")


def fit_seeds(
    config: TrainConfig,
    seeds: list[int],
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train one run per seed into ``out_dir/seed-N`` and write a mean ± std summary table.

    A finished seed run already there is reused (and an unfinished one resumed, with
    ``resume``) when it has the settings of ``config``; one of other settings is refused, or
    with ``overwrite`` trained again in its place."""
    from reprogram.engine.runs import write_summary

    check_seeds(seeds)
    out_dir = Path(out_dir)
    run_dirs = [out_dir / f"seed-{seed}" for seed in seeds]
    # every folder checked before any training: a run of other settings stops nothing midway
    runs = [
        reusable_run(config.updated(seed=seed), run_dir, resume, overwrite)
        for seed, run_dir in zip(seeds, run_dirs, strict=True)
    ]
    for run, run_dir in zip(runs, run_dirs, strict=True):
        if not run.finished:
            fit(run.config, run_dir, resume=run.resume, overwrite=run.overwrite)
    return write_summary(out_dir, run_dirs)


@dataclass
class Reuse:
    """What to do with a run folder that may hold a run already (see :func:`reusable_run`)."""

    config: TrainConfig
    finished: bool  # a finished run of these settings: use it as it is
    resume: bool  # an unfinished one of these settings, resumed
    overwrite: bool  # one of other settings, replaced


def reusable_run(config: TrainConfig, run_dir: Path, resume: bool, overwrite: bool) -> Reuse:
    """Whether ``run_dir`` holds the run ``config`` asks for, finished or to resume; a run of
    other settings is refused (one line naming them), or replaced with ``overwrite``."""
    from reprogram.engine.runs import check_reusable

    finished = (run_dir / RESULTS).is_file()
    started = (run_dir / CHECKPOINT).is_file()
    if not (finished or (resume and started)):
        return Reuse(config, False, False, overwrite)
    try:
        check_reusable(run_dir, config)
    except ReprogramError:
        if not overwrite:
            raise
        return Reuse(config, False, False, True)
    return Reuse(config, finished, not finished, False)
