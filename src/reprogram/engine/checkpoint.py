"""Run folders: config, metrics, results and an atomically written, resumable checkpoint.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``: nothing from a run folder is ever unpickled as an arbitrary
object. Each save keeps the previous checkpoint as ``checkpoint.prev.pt`` until the new one is
complete; a damaged ``checkpoint.pt`` falls back to it (with a warning) and is never kept as the
previous one in its place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprogram.errors import ReprogramError
from reprogram.storage.files import (
    DISK_FULL,
    StorageError,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temps,
)

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
FORMAT = "reprogram-run/2"  # /2: RNG states as plain values (loads with weights_only=True)
OLD_FORMATS = ("reprogram-run/1",)  # numpy RNG state pickled as an array: read with numpy allowed


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain values (nothing that needs unpickling)."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _python_state(state) -> tuple:
    version, internal, gauss = state
    return (int(version), tuple(int(x) for x in internal), gauss)


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_python_state(state["python"]))
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        key = numpy_state["key"]
        key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        np.random.set_state(
            (
                "MT19937",
                key.astype(np.uint32),
                numpy_state["pos"],
                numpy_state["has_gauss"],
                numpy_state["gauss"],
            )
        )
    else:  # reprogram-run/1: numpy's legacy tuple
        np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, checkpoint: dict[str, Any], keep: bool = True) -> None:
    """Write ``checkpoint.pt`` atomically, keeping the one it replaces as ``checkpoint.prev.pt``
    unless that one is damaged (not a whole archive, or ``keep`` false: it failed to load), so
    the previous checkpoint stays the fallback."""
    path, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    complete = run_dir / f".{CHECKPOINT}.complete"  # the new checkpoint, whole and synced
    clean_stale_temps(previous)
    try:
        atomic_torch_save({"format": FORMAT, **checkpoint}, complete)
        if keep and _is_whole(path):
            _keep_as_previous(path, previous)
        os.replace(complete, path)
    except OSError as err:
        if complete.exists():
            complete.unlink()
        raise _save_failure(run_dir, err) from err


def _is_whole(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint archive (torch's zip format, its directory
    readable): an empty, truncated or overwritten file is not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _keep_as_previous(path: Path, previous: Path) -> None:
    """Make ``previous`` a copy of ``path`` (a hard link where possible), atomically."""
    staging = previous.with_name(f".{previous.name}.{os.getpid()}.link.rp-tmp")
    if staging.exists():
        staging.unlink()
    try:
        os.link(path, staging)
    except OSError:
        shutil.copyfile(path, staging)
    os.replace(staging, previous)


def _save_failure(run_dir: Path, err: OSError) -> ReprogramError:
    epoch = _saved_epoch(run_dir)
    intact = (
        f"the previous checkpoint (epoch {epoch}) is intact"
        if epoch is not None
        else "no checkpoint was saved before"
    )
    if err.errno in DISK_FULL:
        return StorageError(
            f"{run_dir / CHECKPOINT}: no space left on device; {intact}; "
            "free space and rerun with --resume",
            err.errno,
        )
    return StorageError(f"{run_dir / CHECKPOINT}: cannot write the checkpoint ({err}); {intact}")


def _saved_epoch(run_dir: Path) -> int | None:
    for name in (CHECKPOINT, PREVIOUS):
        try:
            return int(_read(run_dir / name)["epoch"])
        except (ReprogramError, KeyError, TypeError, ValueError):
            continue
    return None


def _numpy_globals() -> list:
    """What a reprogram-run/1 checkpoint's numpy RNG state needs (an array of uint32)."""
    multiarray = getattr(np, "_core", None) or np.core
    return [
        multiarray.multiarray._reconstruct,
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
    ]


def _read(path: Path) -> dict[str, Any]:
    """Load one checkpoint file safely; ReprogramError if it is damaged or of another format."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:
        try:  # a reprogram-run/1 checkpoint: its numpy RNG array is the only non-tensor object
            with torch.serialization.safe_globals(_numpy_globals()):  # torch >= 2.5
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            reason = (str(first).splitlines() or [type(first).__name__])[0]
            if "weights_only" in reason or "Weights only" in reason:
                reason = "it holds objects other than tensors and plain values"
            raise ReprogramError(f"{path}: damaged or not a checkpoint ({reason})") from first
        if not (isinstance(checkpoint, dict) and checkpoint.get("format") in OLD_FORMATS):
            raise ReprogramError(
                f"{path}: not a reprogram run checkpoint (it holds other Python objects)"
            ) from first
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise ReprogramError(f"{path}: not a reprogram run checkpoint")
    if checkpoint["format"] not in (FORMAT, *OLD_FORMATS):
        raise ReprogramError(
            f"{path}: checkpoint format {checkpoint['format']!r} is not one this version of "
            f"reprogram reads ({', '.join((FORMAT, *OLD_FORMATS))}); use the reprogram version "
            "that made it, or train the run again"
        )
    return checkpoint


def load_checkpoint(run_dir: str | Path, notes: list[str] | None = None) -> dict[str, Any]:
    """Load a run's checkpoint; fall back to ``checkpoint.prev.pt`` if the newest is damaged,
    saying so in ``notes`` when given (a resumed run prints and records it), else as a Python
    warning."""
    path = Path(run_dir)
    path = path / CHECKPOINT if path.is_dir() else path
    previous = path.with_name(PREVIOUS)
    if not path.is_file() and not previous.is_file():
        raise ReprogramError(
            f"no checkpoint at {path} (expected a run folder made by 'reprogram train')"
        )
    try:
        if not path.is_file():
            raise ReprogramError(f"{path}: missing")
        return _read(path)
    except ReprogramError as err:
        if path.name != CHECKPOINT or not previous.is_file():
            if path.name == CHECKPOINT:
                raise ReprogramError(
                    f"{err}; there is no earlier checkpoint to fall back to, so the run cannot "
                    f"be resumed: train it again into a new --out (or delete {path.parent})"
                ) from err
            raise
        try:
            checkpoint = _read(previous)
        except ReprogramError as second:
            raise ReprogramError(
                f"{err}; the previous checkpoint is damaged too ({second}): the run cannot be "
                f"resumed: train it again into a new --out (or delete {path.parent})"
            ) from second
        note = f"{err}; using the previous checkpoint {previous} (epoch {checkpoint.get('epoch')})"
        if notes is None:
            warnings.warn(note, stacklevel=2)
        else:
            notes.append(note)
        return checkpoint


def discard_run(run_dir: Path) -> None:
    """Delete a run's own files (checkpoints, config, metrics, results, TensorBoard events), so
    that another run is trained in its folder (``--overwrite``); other files are left alone."""
    from reprogram.engine.curves import FOLDER as TENSORBOARD

    for name in (CHECKPOINT, PREVIOUS, CONFIG, METRICS, RESULTS):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / TENSORBOARD, ignore_errors=True)


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl from the history (atomically, so a resume never duplicates rows)."""
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in history))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file, naming the file and line of a damaged row."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ReprogramError(f"cannot read {path} ({err})") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ReprogramError(f"{path}:{number}: damaged line, not JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise ReprogramError(f"{path}:{number}: damaged line, not a JSON object")
        rows.append(row)
    return rows


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(run_dir / RESULTS, results)


def read_results(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        raise ReprogramError(f"{run_dir}: no {RESULTS} (is the run finished?)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        line = f":{err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise ReprogramError(
            f"{path}{line}: damaged results file, not valid JSON; train the run again "
            "or remove it from the comparison"
        ) from err
    if not isinstance(results, dict):
        raise ReprogramError(f"{path}: damaged results file (not a JSON object)")
    return results
