"""Weights that ship with the package: the toy CLIP of the offline reference world."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from reprogram.errors import ReprogramError

TOY_WEIGHTS_NAME = "toy-clip.safetensors"


def toy_weights_path() -> Path:
    """Path of the committed pretrained toy CLIP (fp16 safetensors, architecture ``toy``)."""
    path = Path(str(resources.files("reprogram") / "assets" / "toy" / TOY_WEIGHTS_NAME))
    if not path.is_file():
        raise ReprogramError(
            f"the packaged toy CLIP is missing ({path}); make one with "
            "`reprogram toy pretrain --out FILE` and pass --weights FILE"
        )
    return path
