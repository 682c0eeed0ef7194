"""Optional TensorBoard event files for the training curves (``tensorboard: true``).

The events go to ``RUN/tensorboard/`` beside ``metrics.jsonl`` and hold the same numbers: one
scalar per metric and epoch (``train/loss``, ``train/acc``, ``val/acc``, ``test/acc``, ``lr``,
``images_per_s``). ``tensorboard --logdir RUN`` shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError

FOLDER = "tensorboard"
# metrics.jsonl key -> TensorBoard tag
TAGS = {
    "loss": "train/loss",
    "train_acc": "train/acc",
    "val_acc": "val/acc",
    "test_acc": "test/acc",
    "lr": "lr",
    "images_per_s": "images_per_s",
}


class CurveWriter:
    """Writes each epoch's metrics row as scalars; does nothing when disabled."""

    def __init__(self, run_dir: str | Path, enabled: bool) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ReprogramError(
                "tensorboard: true needs the tensorboard package "
                "(pip install 'reprogram[tensorboard]')"
            ) from err
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / FOLDER))

    def write(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, tag in TAGS.items():
            if isinstance(row.get(key), (int, float)):
                self.writer.add_scalar(tag, float(row[key]), global_step=int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
