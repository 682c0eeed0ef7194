"""Datasets: the paper's 11 (CoOp layout), folders and CSV files; few-shot splits; decoding."""

from reprogram.data.catalog import DATASETS, DatasetInfo, dataset_classnames, dataset_info
from reprogram.data.fewshot import few_shot
from reprogram.data.images import DecodedImages, decode_center, decode_short_side, load_rgb
from reprogram.data.readers import Sample, Splits, load_dataset

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DecodedImages",
    "Sample",
    "Splits",
    "dataset_classnames",
    "dataset_info",
    "decode_center",
    "decode_short_side",
    "few_shot",
    "load_dataset",
    "load_rgb",
]
