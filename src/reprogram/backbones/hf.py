"""Hugging Face ``CLIPModel`` folders (optional extra ``hf``), read from disk only."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from reprogram.backbones.base import OPENAI_MEAN, OPENAI_STD, Backbone, BackboneSpec
from reprogram.errors import ReprogramError


def is_hf_clip_folder(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except json.JSONDecodeError:
        return False
    return data.get("model_type") == "clip" or "CLIPModel" in data.get("architectures", [])


class HFClipBackbone(Backbone):
    """A frozen ``transformers.CLIPModel`` loaded from a local folder."""

    def __init__(self, spec: BackboneSpec, folder: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as err:
            raise ReprogramError(
                "Hugging Face CLIPModel folders need the optional extra: "
                "pip install 'reprogram[hf]'"
            ) from err
        try:
            model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as err:
            raise ReprogramError(f"{folder}: cannot load a Hugging Face CLIPModel ({err})") from err
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
