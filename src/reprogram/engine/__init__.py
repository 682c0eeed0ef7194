"""Training and evaluation: configs, the loop, run folders, multi-seed tables."""

from reprogram.engine.config import TrainConfig, load_config
from reprogram.engine.runs import comparison_table, evaluate_split, load_run, predict_images
from reprogram.engine.seeds import fit_seeds
from reprogram.engine.train import fit

__all__ = [
    "TrainConfig",
    "comparison_table",
    "evaluate_split",
    "fit",
    "fit_seeds",
    "load_config",
    "load_run",
    "predict_images",
]
