"""Device and precision policy in one place."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Precision:
    """A run's precision policy, resolved once: only the image encoder runs in ``dtype``
    (autocast); description scoring, aggregation, PRM counting and the loss run in fp32."""

    device_type: str = "cpu"
    dtype: torch.dtype = torch.float32

    @classmethod
    def resolve(cls, name: str, device: torch.device) -> Precision:
        """The policy for a config's ``precision`` name on ``device``."""
        return cls(device.type, resolve_precision(name, device))

    @classmethod
    def of(cls, value: Precision | torch.dtype | None, device: torch.device) -> Precision:
        """``value`` as a policy: a dtype means the encoder in that dtype; ``None`` means fp32."""
        if isinstance(value, Precision):
            return value
        return cls(device.type, value or torch.float32)

    @property
    def reduced(self) -> bool:
        return self.dtype != torch.float32

    def encoder(self) -> contextlib.AbstractContextManager:
        """Context for the image encoder: autocast in ``dtype`` (a no-op in fp32)."""
        if not self.reduced:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def fp32(self) -> contextlib.AbstractContextManager:
        """Context for the maths that needs full precision: autocast off, a caller's too."""
        return torch.autocast(device_type=self.device_type, enabled=False)

    def everywhere(self) -> contextlib.AbstractContextManager:
        """Autocast over a whole region, as the official scripts do (their re-implementation
        in ``reprogram.speed`` only; the engine uses :meth:`encoder`)."""
        return self.encoder()

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler where fp16 needs one (CUDA); ``None`` otherwise."""
        if self.device_type == "cuda" and self.dtype == torch.float16:
            return torch.amp.GradScaler(self.device_type)
        return None
