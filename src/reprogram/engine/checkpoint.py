"""Run folders: config, metrics, results and an atomically written, resumable checkpoint."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprogram.errors import ReprogramError
from reprogram.io import atomic_torch_save, atomic_write_json, atomic_write_text

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
FORMAT = "reprogram-run/1"


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, checkpoint: dict[str, Any]) -> None:
    atomic_torch_save({"format": FORMAT, **checkpoint}, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir)
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.is_file():
        raise ReprogramError(
            f"no checkpoint at {path} (expected a run folder made by 'reprogram train')"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ReprogramError(f"{path}: cannot read checkpoint ({err})") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ReprogramError(f"{path}: not a reprogram run checkpoint")
    return checkpoint


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl from the history (atomically, so a resume never duplicates rows)."""
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in history))


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(run_dir / RESULTS, results)


def read_results(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        raise ReprogramError(f"{run_dir}: no {RESULTS} (is the run finished?)")
    return json.loads(path.read_text())
