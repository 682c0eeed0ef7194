"""What every report section shares: where its files go, and how numbers are written."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Output:
    """A run's folder of PNGs and CSVs, and its path relative to the HTML page."""

    folder: Path
    rel: str

    def path(self, name: str) -> Path:
        return self.folder / name

    def src(self, name: str) -> str:
        return f"{self.rel}/{name}"


def slug(text: str) -> str:
    """``text`` as a file-name part: letters, digits, ``-`` and ``_``."""
    return (
        "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in str(text)).strip("-") or "run"
    )


def dataset_name(dataset: str) -> str:
    """A dataset spec shortened for display (``folder:/a/b/data`` -> ``folder:data``)."""
    if dataset.startswith(("folder:", "csv:")):
        kind, _, location = dataset.partition(":")
        return f"{kind}:{Path(location).name or location}"
    return dataset


def run_title(results: dict[str, Any]) -> str:
    dataset = dataset_name(str(results.get("dataset", "?")))
    return f"{results.get('method', '?')} · {dataset} · seed {results.get('seed', '?')}"


def percent(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.{digits}f}%"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.2f} h"


def median_speed(history: Sequence[dict[str, Any]]) -> float | None:
    """Median training images/s over the epochs that trained (None when none recorded it)."""
    speeds = [
        row["images_per_s"]
        for row in history
        if row.get("images_per_s") and not row.get("estimate_only")
    ]
    return statistics.median(speeds) if speeds else None


def select_rows(keys: Sequence[float], limit: int) -> tuple[list[int], str | None]:
    """Indices of rows to show, sorted by ``keys`` descending: all of them when there are at most
    ``limit``, else the ``limit // 2`` highest and the ``limit // 2`` lowest, with a note."""
    order = sorted(range(len(keys)), key=lambda i: (-keys[i], i))
    if len(order) <= limit:
        return order, None
    half = limit // 2
    return order[:half] + order[-half:], f"showing {2 * half} of {len(order)} classes"


def to_image(chw: torch.Tensor) -> np.ndarray:
    """A 3×H×W tensor in [0, 1] as an H×W×3 float array for matplotlib."""
    return chw.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def save_png(chw: torch.Tensor, path: Path) -> None:
    """A 3×H×W tensor in [0, 1] as an 8-bit PNG at its native resolution."""
    from PIL import Image

    Image.fromarray((to_image(chw) * 255).round().astype(np.uint8)).save(path)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
