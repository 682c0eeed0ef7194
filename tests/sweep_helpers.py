"""What the sweep tests share: a tiny sweep (2 methods × 2 datasets × 2 seeds) and its
reference, made run by run in this process (one torch thread, as every executor's worker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import assert_same_run, make_folder_dataset

EPOCHS = 4


def tiny_spec(data: Path, out: Path, **changes) -> dict:
    """Two folder datasets × vp, dvp-cse × seeds 1, 2: a few seconds a run on one thread."""
    spec = {
        "out": str(out),
        "methods": ["vp", "dvp-cse"],
        "datasets": [f"folder:{data / 'alpha'}", f"folder:{data / 'beta'}"],
        "backbones": ["random:tiny"],
        "shots": 4,
        "seeds": [1, 2],
        "epochs": EPOCHS,
        "batch_size": 4,
        "m": 5,
        "local": {"workers": 2, "threads": 1},
        "slurm": {"cpus_per_task": 1, "runs_per_task": 4, "time": 10},
    }
    spec.update(changes)
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def make_data(data: Path) -> Path:
    make_folder_dataset(data / "alpha", seed=0)
    make_folder_dataset(data / "beta", seed=1)
    return data


def make_reference(base: Path) -> tuple[Path, list]:
    """The tiny sweep's data, and its runs trained one after another into ``base/reference``."""
    from reprogram.sweep import expand, parse_spec, run_many

    data = make_data(base / "data")
    out = base / "reference"
    with pytest.MonkeyPatch.context() as patch:  # before the per-test cache fixture applies
        patch.setenv("REPROGRAM_CACHE", str(base / "reprogram-cache"))
        runs = expand(parse_spec(tiny_spec(data, out)), out)
        outcomes = run_many(runs, out, runtime={"quiet": True})
    assert [o.state for o in outcomes] == ["done"] * len(runs)
    return data, runs


def assert_same_sweep(out: Path, reference: Path, names: list[str]) -> None:
    for name in names:
        assert_same_run(out / name, reference / name, epochs=EPOCHS)
