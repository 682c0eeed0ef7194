"""open_clip architectures with weights from local files only (never a hub)."""

from __future__ import annotations

import functools
import json
import pickle
import warnings
import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch

from reprogram.backbones.base import (
    OPENAI_MEAN,
    OPENAI_STD,
    Backbone,
    BackboneSpec,
    TextFeatureCache,
    key_problems,
)
from reprogram.errors import ReprogramError

# Keys that OpenAI's released TorchScript checkpoints carry beside the weights.
OPENAI_MARKER_KEYS = ("input_resolution", "context_length", "vocab_size")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def packaged_config_names() -> list[str]:
    folder = resources.files("reprogram") / "model_configs"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def architecture_config(arch: str) -> dict:
    """The model config of an architecture: one packaged with reprogram, or bundled by open_clip."""
    import open_clip

    packaged = resources.files("reprogram") / "model_configs" / f"{arch}.json"
    if packaged.is_file():
        return json.loads(packaged.read_text())
    config = open_clip.get_model_config(arch)
    if config is None:
        known = ", ".join(
            packaged_config_names() + ["ViT-B-16", "ViT-B-32", "RN50", "RN101", "ViT-L-14", "…"]
        )
        raise ReprogramError(
            f"unknown architecture '{arch}' (known: {known}; see open_clip.list_models())"
        )
    check_buildable_offline(config, f"architecture '{arch}'")
    return config


def check_buildable_offline(config: dict, label: str) -> None:
    """Refuse configs whose towers or tokenizer open_clip would fetch from a hub."""
    text_cfg, vision_cfg = config.get("text_cfg", {}), config.get("vision_cfg", {})
    if any(text_cfg.get(k) for k in ("hf_model_name", "hf_tokenizer_name")) or vision_cfg.get(
        "timm_model_name"
    ):
        raise ReprogramError(
            f"{label} needs Hugging Face or timm towers or tokenizers fetched from a hub; "
            "use a plain CLIP architecture or a Hugging Face CLIPModel folder"
        )


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(
            "/code/" in name or name.endswith("constants.pkl") for name in archive.namelist()
        )


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def check_weights_file(path: Path) -> None:
    """Refuse, in one line, a weights file that is empty or a git-LFS pointer."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(LFS_POINTER))
    except OSError as err:
        raise ReprogramError(f"cannot read weights {path} ({err.strerror or err})") from err
    if head.startswith(LFS_POINTER):
        raise ReprogramError(
            f"{path} is a git-LFS pointer, not the weights: run 'git lfs pull' in its repository "
            "(or download the file itself)"
        )
    if not head:
        raise ReprogramError(f"{path} is empty, not a weights file (an interrupted download?)")


def _load_error_reason(err: Exception) -> str:
    """Why torch could not read a file, without torch's advice to unpickle it unsafely."""
    if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err):
        return "it is damaged, or holds Python objects besides tensors, which are never loaded"
    lines = [line for line in str(err).splitlines() if "weights_only" not in line]
    return f"{type(err).__name__}: {(lines or [''])[0]}"


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Read weights in any supported form; return (state dict, came from OpenAI's release).

    OpenAI's release is recognised by its TorchScript archive or, in a plain state dict, by the
    marker entries ``input_resolution``/``context_length``/``vocab_size`` it carries. Files are
    read with ``weights_only=True`` (TorchScript archives with ``torch.jit``, which runs no
    pickled Python code); a git-LFS pointer or a damaged file fails with one line.
    """
    check_weights_file(path)
    from_openai = False
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif is_torchscript(path):
            with warnings.catch_warnings():  # torch.jit is deprecated, but it reads OpenAI's files
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
            from_openai = True
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except ReprogramError:
        raise
    except Exception as err:
        raise ReprogramError(
            f"{path}: cannot read weights ({_load_error_reason(err)}); expected an OpenAI "
            "TorchScript/state-dict .pt, an open_clip .pt/.bin, or a .safetensors file"
        ) from err
    if isinstance(state, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state:
        raise ReprogramError(
            f"{path}: not a CLIP state dict (expected a mapping of names to tensors)"
        )
    if all(str(k).startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    # the markers may be tensors or plain Python ints, depending on who saved the file
    if any(key in state for key in OPENAI_MARKER_KEYS):
        from_openai = True
        state = {k: v for k, v in state.items() if k not in OPENAI_MARKER_KEYS}
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ReprogramError(f"{path}: not a CLIP state dict (it holds no tensors)")
    return state, from_openai


def sibling_quick_gelu(path: Path) -> bool | None:
    """QuickGELU setting of an ``open_clip_config.json`` next to a weights file, if there is one.

    Hub snapshots of OpenAI weights converted by open_clip (e.g. ``timm/vit_base_patch16_clip_224
    .openai``) carry no OpenAI markers; their folder's config is the only hint they need QuickGELU.
    """
    config_path = path.parent / "open_clip_config.json"
    if not config_path.is_file():
        return None
    try:
        model_cfg = json.loads(config_path.read_text()).get("model_cfg", {})
    except (OSError, ValueError, AttributeError):
        return None
    value = model_cfg.get("quick_gelu") if isinstance(model_cfg, dict) else None
    return bool(value) if value is not None else None


def uses_quick_gelu(model: torch.nn.Module) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(module, QuickGELU) for module in model.modules())


def build_open_clip_model(config: dict, quick_gelu: bool) -> torch.nn.Module:
    from open_clip.model import CLIP, CustomTextCLIP

    config = dict(config)
    config["quick_gelu"] = bool(quick_gelu)
    custom_text = config.pop("custom_text", False)
    config.pop("multimodal_cfg", None)
    cls = CustomTextCLIP if custom_text else CLIP
    return cls(**config)


def load_weights(
    model: torch.nn.Module, state: dict[str, torch.Tensor], arch: str, path: Path
) -> None:
    """Load a state dict strictly, explaining a mismatch by architecture and keys."""
    from open_clip.factory import convert_state_dict

    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        from open_clip.model import convert_to_custom_text_state_dict

        state = convert_to_custom_text_state_dict(state)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    # No resize_pos_embed: weights trained at another input size are another architecture
    # (e.g. ViT-L-14 vs ViT-L-14-336) and are reported below rather than silently interpolated.
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        (k, state[k].shape, expected[k].shape)
        for k in sorted(set(expected) & set(state))
        if tuple(expected[k].shape) != tuple(state[k].shape)
    ]
    parts = key_problems(missing, unexpected, mismatched)
    if parts:
        raise ReprogramError(
            f"weights {path} do not match architecture '{arch}': "
            + "; ".join(parts)
            + ". Pick the architecture the file was trained with (--backbone)."
        )
    model.load_state_dict(state, strict=True)


@functools.lru_cache(maxsize=8)
def _tokenizer(context_length: int, kwargs: str):
    """open_clip's BPE tokenizer, built once per setting (building one takes ~0.1 s); it holds
    no state that changes its output."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length, **json.loads(kwargs))


class OpenClipBackbone(Backbone):
    """A frozen open_clip CLIP (any architecture open_clip can build)."""

    def __init__(
        self,
        spec: BackboneSpec,
        model: torch.nn.Module,
        *,
        context_length: int,
        tokenizer_kwargs: dict | None = None,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        text_cache: TextFeatureCache | None = None,
    ) -> None:
        size = model.visual.image_size
        super().__init__(
            spec,
            input_size=size[0] if isinstance(size, (tuple, list)) else size,
            mean=mean,
            std=std,
            text_cache=text_cache,
        )
        self.model = model
        self.context_length = int(context_length)
        self.tokenizer_kwargs = dict(tokenizer_kwargs or {})
        self.tokenizer = _tokenizer(self.context_length, json.dumps(self.tokenizer_kwargs))
        self.quick_gelu = uses_quick_gelu(model)
        self.freeze()

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    def _text_identity(self) -> str:
        return json.dumps(
            {
                "quick_gelu": self.quick_gelu,
                "context_length": self.context_length,
                "tokenizer": self.tokenizer_kwargs,
            },
            sort_keys=True,
        )

    def describe(self) -> dict:
        return {**super().describe(), "quick_gelu_used": self.quick_gelu}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.visual.set_grad_checkpointing(enable)

    def image_blocks(self) -> list[torch.nn.Module]:
        """The residual attention blocks of a ViT image tower ([] for the ResNets)."""
        return list(getattr(getattr(self.model.visual, "transformer", None), "resblocks", []))

    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens)

    def _logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale


def local_dir_config(folder: Path) -> tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) of an open_clip ``local-dir:`` folder."""
    config_path = folder / "open_clip_config.json"
    if not config_path.is_file():
        raise ReprogramError(
            f"{folder}: no open_clip_config.json (expected an open_clip local-dir folder)"
        )
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        raise ReprogramError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ReprogramError(f"{config_path}: missing key 'model_cfg'")
    check_buildable_offline(config["model_cfg"], str(config_path))
    preprocess = config.get("preprocess_cfg") or {}
    check_preprocess(preprocess, config["model_cfg"], config_path)
    return config["model_cfg"], preprocess


# open_clip's preprocess_cfg values that reprogram's pipeline (resize the short side, bicubic,
# centre crop; CLIP's and the published code's) reproduces; mean and std are always honoured.
SUPPORTED_PREPROCESS = {
    "resize_mode": ("shortest",),
    "interpolation": ("bicubic",),
    "mode": ("RGB",),
}


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def check_preprocess(preprocess: dict, model_cfg: dict, config_path: Path) -> None:
    """Refuse, naming the key, a ``preprocess_cfg`` the image pipeline would not reproduce."""
    if not isinstance(preprocess, dict):
        raise ReprogramError(f"{config_path}: 'preprocess_cfg' must be a mapping")
    for key, supported in SUPPORTED_PREPROCESS.items():
        value = preprocess.get(key, supported[0])
        if value not in supported:
            raise ReprogramError(
                f"{config_path}: preprocess_cfg {key} '{value}' is not supported (reprogram "
                "resizes the short side with bicubic interpolation and centre-crops, open_clip's "
                f"resize_mode 'shortest', interpolation 'bicubic'); set {key} to "
                f"'{supported[0]}' only if the model was trained that way"
            )
    for key in ("mean", "std"):
        value = preprocess.get(key)
        if value is not None and not (
            isinstance(value, (list, tuple))
            and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise ReprogramError(
                f"{config_path}: preprocess_cfg {key} must be 3 numbers, got {value!r}"
            )
    if preprocess.get("std") is not None and any(v <= 0 for v in preprocess["std"]):
        raise ReprogramError(
            f"{config_path}: preprocess_cfg std must be > 0, got {preprocess['std']}"
        )
    size = preprocess.get("size")
    model_size = model_cfg.get("vision_cfg", {}).get("image_size")
    if size is not None and model_size is not None and _pair(size) != _pair(model_size):
        raise ReprogramError(
            f"{config_path}: preprocess_cfg size {size} differs from the model's image_size "
            f"{model_size}; reprogram feeds the model its own image_size"
        )


def find_weights_in_dir(folder: Path) -> Path:
    preferred = [
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.safetensors",
        "open_clip_pytorch_model.bin",
        "open_clip_pytorch_model.pth",
        "model.safetensors",
        "pytorch_model.bin",
    ]
    for name in preferred:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not found:
        raise ReprogramError(f"{folder}: no weights file (.safetensors, .bin, .pt) in the folder")
    return found[0]
