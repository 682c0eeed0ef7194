"""Contrastive pretraining of the small ``toy`` open_clip CLIP on the procedural world, on CPU.

Every step draws a fresh batch of scenes (never one of the held-out (shape, colour) pairs in
:data:`~reprogram.toy.world.HELD_OUT_PAIRS`), renders them, writes one caption per image naming a
random subset of its factors, and minimises a symmetric multi-positive InfoNCE: a caption is a
positive for every image in the batch it truthfully describes ("a red shape" matches all red
objects), so partial captions are not punished as negatives for look-alike images.

With ``frame_prob > 0`` that share of the images is shrunk to 80–95 % and framed by a random
border (a flat grey or colour, or noise), as a padding visual prompt does; the committed model
was made with ``frame_prob = 0`` (no frames). The result is saved as an fp16 ``.safetensors``
open_clip state dict that ``load_backbone("toy", weights=PATH)`` reads.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reprogram.backbones.base import OPENAI_MEAN, OPENAI_STD
from reprogram.backbones.openclip import architecture_config, build_open_clip_model
from reprogram.storage.files import atomic_write
from reprogram.toy import world
from reprogram.toy.zeroshot import TrainingEncoder, heldout_accuracy


@dataclass
class PretrainConfig:
    """Defaults: the recipe of the committed toy CLIP."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    arch: str = "toy"
    frame_prob: float = 0.0
    eval_every: int = 200  # 0: only at the end
    eval_per_class: int = 20
    threads: int | None = None


@dataclass
class PretrainResult:
    path: Path
    steps: int
    wall_s: float
    cpu_s: float  # process CPU time (all threads): comparable across loaded and idle machines
    params: int
    file_bytes: int
    heldout_accuracy: float
    final_loss: float


def build_model(arch: str = "toy", seed: int = 0) -> tuple[torch.nn.Module, dict]:
    config = architecture_config(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_open_clip_model(config, quick_gelu=False)
    return model, config


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim < 2 or "embedding" in name or "logit_scale" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def frame_augment(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Shrink a random ``prob`` share of images (N×3×S×S in [0, 1]) and frame them by a border."""
    n, _, size, _ = x.shape
    chosen = torch.nonzero(torch.rand(n, generator=gen) < prob).flatten().tolist()
    if not chosen:
        return x
    x = x.clone()
    for i in chosen:
        inner = int(round(size * float(torch.empty(1).uniform_(0.8, 0.95, generator=gen))))
        pad = size - inner
        left = int(torch.randint(0, pad + 1, (1,), generator=gen)) if pad else 0
        top = int(torch.randint(0, pad + 1, (1,), generator=gen)) if pad else 0
        kind = float(torch.rand(1, generator=gen))
        if kind < 0.4:  # flat grey
            canvas = torch.full((3, size, size), float(torch.rand(1, generator=gen)))
        elif kind < 0.7:  # flat colour
            canvas = torch.rand(3, 1, 1, generator=gen).expand(3, size, size).clone()
        else:  # noise
            canvas = torch.rand(3, size, size, generator=gen)
        small = F.interpolate(x[i : i + 1], size=(inner, inner), mode="bilinear", antialias=True)
        canvas[:, top : top + inner, left : left + inner] = small[0]
        x[i] = canvas
    return x


def multi_positive_loss(logits: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where ``match[i, j]`` marks caption j as a true description of image i."""
    target = match.float()
    image_to_text = (
        -(F.log_softmax(logits, dim=1) * (target / target.sum(1, keepdim=True))).sum(1).mean()
    )
    text_to_image = (
        -(F.log_softmax(logits, dim=0) * (target / target.sum(0, keepdim=True))).sum(0).mean()
    )
    return (image_to_text + text_to_image) / 2


METADATA_KEY = "reprogram_toy"


def save_fp16_safetensors(
    weights: torch.nn.Module | dict[str, torch.Tensor], path: str | Path, info: dict
) -> Path:
    """Save a model (or state dict) as fp16 safetensors with ``info`` as JSON metadata.

    The metadata is a single key holding JSON with sorted keys: safetensors writes several
    metadata keys in a random order, so the same weights would otherwise give different files.
    """
    from safetensors.torch import save_file

    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    state = {  # floating tensors in fp16; integer buffers (BatchNorm counters) as they are
        k: (v.to(torch.float16) if v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in state.items()
    }
    metadata = {METADATA_KEY: json.dumps(info, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def read_info(path: str | Path) -> dict:
    """The ``info`` saved by :func:`save_fp16_safetensors` (empty for other files)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}


def pretrain(
    out: str | Path,
    config: PretrainConfig | None = None,
    log: Callable[[str], None] = print,
) -> PretrainResult:
    """Pretrain the toy CLIP and write it to ``out`` (fp16 safetensors). Seeded and CPU-only;
    torch's thread count, deterministic flags and global RNGs are as they were afterwards."""
    from reprogram.engine.state import preserved_global_state

    config = config or PretrainConfig()
    threads = torch.get_num_threads()
    try:
        with preserved_global_state():
            if config.threads:
                torch.set_num_threads(config.threads)
            return _pretrain(out, config, log)
    finally:
        torch.set_num_threads(threads)


def _pretrain(
    out: str | Path, config: PretrainConfig, log: Callable[[str], None]
) -> PretrainResult:
    from open_clip.tokenizer import SimpleTokenizer

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed + 1)
    model, arch_config = build_model(config.arch, config.seed)
    size = int(arch_config["vision_cfg"]["image_size"])
    tokenizer = SimpleTokenizer(
        context_length=int(arch_config["text_cfg"].get("context_length", 77))
    )
    params = sum(p.numel() for p in model.parameters())
    log(
        f"toy pretrain: {params / 1e6:.2f}M parameters, "
        f"{config.steps} steps of {config.batch_size}, "
        f"seed {config.seed}, {torch.get_num_threads()} threads"
    )
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98)
    )

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.min_lr + 0.5 * (config.lr - config.min_lr) * (
            1 + math.cos(math.pi * progress)
        )

    mean = torch.tensor(OPENAI_MEAN)[None, :, None, None]
    std = torch.tensor(OPENAI_STD)[None, :, None, None]
    encoder = TrainingEncoder(model, tokenizer, size, OPENAI_MEAN, OPENAI_STD)

    def evaluate() -> float:
        model.eval()
        accuracy = heldout_accuracy(encoder, per_class=config.eval_per_class)
        model.train()
        return accuracy

    start, cpu_start = time.time(), time.process_time()
    running, accuracy, loss_value = None, float("nan"), float("nan")
    model.train()
    for step in range(config.steps):
        scenes = world.sample_scenes(config.batch_size, rng, exclude_pairs=world.HELD_OUT_PAIRS)
        images = (
            torch.from_numpy(world.render(scenes, size)).permute(0, 3, 1, 2).float().div_(255.0)
        )
        images = frame_augment(images, config.frame_prob, gen)
        texts, mask = world.captions_for(scenes, rng)
        match = torch.from_numpy(world.caption_match(scenes.factors(), mask))
        tokens = tokenizer(texts)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        image_features = F.normalize(model.encode_image((images - mean) / std), dim=-1)
        text_features = F.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        loss = multi_positive_loss(logits, match)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_value = float(loss.detach())
        running = loss_value if running is None else 0.98 * running + 0.02 * loss_value
        last = step + 1 == config.steps
        if (config.eval_every and (step + 1) % config.eval_every == 0) or last:
            accuracy = evaluate()
            elapsed = time.time() - start
            log(
                f"step {step + 1}/{config.steps}  loss {running:.3f}  "
                f"scale {float(model.logit_scale.detach().exp()):.1f}  "
                f"held-out zero-shot {accuracy:.3f}  {elapsed:.0f}s wall, "
                f"{time.process_time() - cpu_start:.0f}s CPU"
            )
    wall, cpu = time.time() - start, time.process_time() - cpu_start
    info = {
        "arch": config.arch,
        "pretrain": {**asdict(config), "threads": torch.get_num_threads()},
        "heldout_accuracy": round(accuracy, 4),
    }
    path = save_fp16_safetensors(model.eval(), out, info)
    log(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) after {wall:.0f}s wall, {cpu:.0f}s CPU")
    return PretrainResult(
        path=Path(path),
        steps=config.steps,
        wall_s=wall,
        cpu_s=cpu,
        params=params,
        file_bytes=Path(path).stat().st_size,
        heldout_accuracy=accuracy,
        final_loss=loss_value,
    )
