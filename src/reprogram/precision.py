"""Device and precision policy in one place."""

from __future__ import annotations

import contextlib

import torch

from reprogram.errors import ReprogramError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ReprogramError(f"unknown device '{name}'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReprogramError(f"device '{name}' asked for, but no CUDA GPU is available")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: fp32 on CPU by default; bf16 on GPUs that support it, else fp16."""
    if precision not in PRECISIONS:
        raise ReprogramError(f"unknown precision '{precision}' (expected {', '.join(PRECISIONS)})")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for the forward pass (a no-op in fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cuda" and dtype == torch.float16
