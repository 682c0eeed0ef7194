"""One factory for every weight source: ``load_backbone(arch, weights)``.

Specs:
  * ``random:<arch>`` — random weights (seed 0), for tests and smoke runs; no file.
  * ``<arch>`` + ``weights=FILE`` — an open_clip architecture (or one packaged with reprogram)
    with an OpenAI TorchScript/state-dict ``.pt``, an open_clip ``.pt``/``.bin``, or a
    ``.safetensors`` file.
  * ``local-dir:<folder>`` (or ``weights=<folder>`` holding ``open_clip_config.json``) — an
    open_clip folder.
  * ``hf:<folder>`` (or ``weights=<folder>`` holding a CLIPModel ``config.json``) — a Hugging Face
    folder.

Nothing is ever downloaded: a pretrained *tag* such as ``openai`` fails at once.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reprogram.backbones.base import OPENAI_MEAN, OPENAI_STD, Backbone, BackboneSpec
from reprogram.backbones.hf import HFClipBackbone, is_hf_clip_folder
from reprogram.backbones.openclip import (
    OpenClipBackbone,
    architecture_config,
    build_open_clip_model,
    find_weights_in_dir,
    load_weights,
    local_dir_config,
    read_state_dict,
    sibling_quick_gelu,
)
from reprogram.errors import ReprogramError


def _no_download_message(arch: str, weights: str) -> str:
    return (
        f"'{weights}' is not a file: it looks like a pretrained tag, which would need a download, "
        "and reprogram never downloads weights. Pass a local file instead, e.g. "
        f"--backbone {arch} --weights /path/to/{arch}.pt "
        "(OpenAI .pt, open_clip .pt/.bin/.safetensors), "
        "--weights /path/to/folder (open_clip local-dir or Hugging Face CLIPModel folder), "
        f"or --backbone random:{arch} for random weights."
    )


HUB_PREFIXES = ("hf-hub:", "hf_hub:", "http://", "https://", "s3://", "gs://")


def _hub_message(spec: str) -> str:
    return (
        f"'{spec}' names a model on a hub, and reprogram never downloads weights. Download it "
        "yourself, then pass the local folder or file: --backbone hf:/path/to/folder (Hugging Face "
        "CLIPModel), --backbone local-dir:/path/to/folder (open_clip), "
        "or --backbone ARCH --weights FILE."
    )


def _normalise_arch(arch: str) -> str:
    # People write ViT-B/16 as often as ViT-B-16.
    return arch.replace("/", "-")


def load_backbone(
    arch: str,
    weights: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    quick_gelu: bool | None = None,
) -> Backbone:
    """Return a frozen backbone (eval mode, ``requires_grad=False``) from a spec.

    ``quick_gelu=None`` decides automatically: on for weights from OpenAI's release (TorchScript
    archives and state dicts carrying OpenAI's marker keys) or configs that ask for it.
    """
    spec = BackboneSpec(
        arch=arch, weights=str(weights) if weights is not None else None, quick_gelu=quick_gelu
    )
    backbone = _load(spec)
    here = backbone.device.type
    if here != "meta" and torch.device(device).type != here:
        _ = backbone.fingerprint  # hashed while on the host: no weights copied back later
    return backbone.to(device)


def _load(spec: BackboneSpec) -> Backbone:
    arch, weights = spec.arch, spec.weights
    for text in (arch, weights or ""):
        if text.startswith(HUB_PREFIXES):
            raise ReprogramError(_hub_message(text))
    if arch.startswith("hf:"):
        return HFClipBackbone(spec, _existing_dir(arch[len("hf:") :]))
    if arch.startswith("local-dir:"):
        return _load_local_dir(spec, _existing_dir(arch[len("local-dir:") :]))
    if arch.startswith("random:"):
        if weights:
            raise ReprogramError(f"--backbone {arch} takes no weights (got --weights {weights})")
        name = _normalise_arch(arch[len("random:") :])
        config = architecture_config(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_open_clip_model(
                config, bool(spec.quick_gelu or config.get("quick_gelu", False))
            )
        return _wrap(spec, model, config)

    name = _normalise_arch(arch)
    if weights is None and name == "toy":  # the toy CLIP ships with the package
        from dataclasses import replace

        from reprogram.backbones.packaged import toy_weights_path

        return _load(replace(spec, weights=str(toy_weights_path())))
    if weights is None:
        if Path(arch).is_dir():
            return _load_folder(spec, Path(arch))
        raise ReprogramError(
            f"--backbone {arch} needs --weights FILE (weights are never downloaded), "
            f"or use --backbone random:{name} for random weights"
        )
    path = Path(weights).expanduser()
    if not path.exists():
        if (
            "/" not in weights
            and "\\" not in weights
            and path.suffix not in (".pt", ".bin", ".safetensors")
        ):
            raise ReprogramError(_no_download_message(name, weights))
        raise ReprogramError(f"weights file not found: {weights}")
    if path.is_dir():
        return _load_folder(spec, path)
    if not path.is_file():
        raise ReprogramError(f"weights path is neither a file nor a folder: {weights}")
    config = architecture_config(name)
    state, from_openai = read_state_dict(path)
    use_quick_gelu = spec.quick_gelu
    if use_quick_gelu is None:
        beside = sibling_quick_gelu(path)
        use_quick_gelu = bool(config.get("quick_gelu", False)) or from_openai or bool(beside)
    model = build_open_clip_model(config, use_quick_gelu)
    load_weights(model, state, name, path)
    return _wrap(spec, model, config)


def _existing_dir(folder: str) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ReprogramError(f"folder not found: {folder}")
    return path


def _load_folder(spec: BackboneSpec, folder: Path) -> Backbone:
    if (folder / "open_clip_config.json").is_file():
        return _load_local_dir(spec, folder)
    if is_hf_clip_folder(folder):
        return HFClipBackbone(spec, folder)
    raise ReprogramError(
        f"{folder}: neither an open_clip folder (open_clip_config.json) "
        "nor a Hugging Face CLIPModel folder (config.json)"
    )


def _load_local_dir(spec: BackboneSpec, folder: Path) -> Backbone:
    config, preprocess = local_dir_config(folder)
    weights = find_weights_in_dir(folder)
    state, from_openai = read_state_dict(weights)
    use_quick_gelu = spec.quick_gelu
    if use_quick_gelu is None:
        use_quick_gelu = bool(config.get("quick_gelu", False)) or from_openai
    model = build_open_clip_model(config, use_quick_gelu)
    load_weights(model, state, f"local-dir:{folder}", weights)
    return _wrap(spec, model, config, preprocess)


def _wrap(
    spec: BackboneSpec, model: torch.nn.Module, config: dict, preprocess: dict | None = None
) -> Backbone:
    preprocess = preprocess or {}
    return OpenClipBackbone(
        spec,
        model,
        context_length=config["text_cfg"].get("context_length", 77),
        tokenizer_kwargs=config["text_cfg"].get("tokenizer_kwargs"),
        mean=preprocess.get("mean", OPENAI_MEAN),
        std=preprocess.get("std", OPENAI_STD),
    )
