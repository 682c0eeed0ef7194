"""Hugging Face ``CLIPModel`` folders (optional extra ``hf``), read from disk only."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from reprogram.backbones.base import (
    OPENAI_MEAN,
    OPENAI_STD,
    Backbone,
    BackboneSpec,
    key_problems,
)
from reprogram.errors import ReprogramError


def is_hf_clip_folder(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    return data.get("model_type") == "clip" or "CLIPModel" in data.get("architectures", [])


HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _first_line(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def check_hf_folder(folder: Path) -> None:
    """A CLIPModel folder's config.json and weights file are there and real (not LFS pointers)."""
    from reprogram.backbones.openclip import check_weights_file

    config = folder / "config.json"
    if not config.is_file():
        raise ReprogramError(
            f"{folder}: no config.json, so not a Hugging Face model folder "
            "(save one with CLIPModel.save_pretrained, or copy the whole snapshot folder)"
        )
    if not is_hf_clip_folder(folder):
        raise ReprogramError(
            f"{config}: not a CLIPModel config (model_type 'clip' expected), or not valid JSON"
        )
    weights = [folder / name for name in HF_WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        raise ReprogramError(
            f"{folder}: no weights file ({' or '.join(HF_WEIGHT_FILES[::2])}) beside config.json"
        )
    check_weights_file(weights[0])


def check_loading_info(folder: Path, info: dict) -> None:
    """Refuse missing, unexpected or mismatched keys (transformers would only warn)."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda item: str(item[0]))
    parts = key_problems(missing, unexpected, mismatched)
    if parts:
        raise ReprogramError(
            f"weights in {folder} do not match its config.json: " + "; ".join(parts) + ". "
            "The folder is incomplete or mixes two models; copy the snapshot again."
        )


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextlib.contextmanager
def _offline():
    """Hugging Face libraries offline while a folder loads (besides ``local_files_only``), the
    process environment as it was afterwards."""
    before = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    os.environ.update(dict.fromkeys(OFFLINE_VARIABLES, "1"))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report and progress bars (its findings are checked here)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _load_folder(folder: Path):
    """The ``CLIPModel`` and tokenizer of a local folder, checked (one line on any fault)."""
    try:
        from transformers import AutoTokenizer, CLIPModel
    except ImportError as err:
        raise ReprogramError(
            "Hugging Face CLIPModel folders need the optional extra: pip install 'reprogram[hf]'"
        ) from err
    check_hf_folder(folder)
    try:
        with _quiet_transformers():
            model, info = CLIPModel.from_pretrained(
                str(folder),
                local_files_only=True,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported below, by name, then refused
            )
    except Exception as err:
        raise ReprogramError(
            f"{folder}: cannot load a Hugging Face CLIPModel ({_first_line(err)})"
        ) from err
    check_loading_info(folder, info)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:
        raise ReprogramError(
            f"{folder}: cannot load the tokenizer ({_first_line(err)}); the folder needs "
            "the tokenizer files saved with the model (vocab.json and merges.txt, or "
            "tokenizer.json)"
        ) from err
    return model, tokenizer


class HFClipBackbone(Backbone):
    """A frozen ``transformers.CLIPModel`` loaded from a local folder."""

    def __init__(self, spec: BackboneSpec, folder: Path) -> None:
        with _offline():
            model, tokenizer = _load_folder(folder)
        mean, std = OPENAI_MEAN, OPENAI_STD
        preprocess = folder / "preprocessor_config.json"
        if preprocess.is_file():
            data = json.loads(preprocess.read_text())
            mean, std = data.get("image_mean", mean), data.get("image_std", std)
        super().__init__(spec, input_size=model.config.vision_config.image_size, mean=mean, std=std)
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = model.config.text_config.max_position_embeddings
        self.freeze()

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.vision_model.gradient_checkpointing_enable()

    @staticmethod
    def _as_tensor(output) -> torch.Tensor:
        # transformers >= 5 may return a model output instead of a tensor
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._as_tensor(self.model.get_image_features(pixel_values=pixels))

    def _encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        ).to(self.device)
        return self._as_tensor(self.model.get_text_features(**batch))

    def _logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    def _text_identity(self) -> str:
        tokenizer = self.tokenizer
        return json.dumps(
            {
                "tokenizer": type(tokenizer).__name__,
                "vocab": len(tokenizer),
                "lower": bool(getattr(tokenizer, "do_lower_case", True)),
                "context_length": self.context_length,
            },
            sort_keys=True,
        )
