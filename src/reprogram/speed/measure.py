"""Measurements for ``reprogram bench``: device, matmul peak, memory, FLOPs, step throughput."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

from reprogram.model.methods import Reprogrammer
from reprogram.model.precision import Precision


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """A readable name of the device (GPU model, or CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"CPU {model} ({torch.get_num_threads()} threads of {os.cpu_count()} cores)"


def record_header(schema: str, device: torch.device, **fields) -> dict:
    """The first keys of every speed record: schema, date (UTC), device, torch, then ``fields``."""
    return {
        "schema": schema,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "torch": torch.__version__,
        **fields,
    }


def matmul_peak(
    device: torch.device, dtype: torch.dtype, *, seconds: float, size: int | None = None
) -> dict:
    """FLOP/s of a timed large square matmul in ``dtype`` (the device's practical peak)."""
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    iterations, started = 0, time.perf_counter()
    while True:
        for _ in range(5):
            a @ b
        iterations += 5
        synchronize(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    flops = 2.0 * size**3 * iterations / elapsed
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "flops_per_s": flops}


class PeakMemory:
    """Peak memory over a region: CUDA's max allocated bytes, or the process's peak RSS on CPU
    (reset through /proc/self/clear_refs where Linux allows it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS"
        self.peak_bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")
            except OSError:
                self.kind = "process peak RSS (since start)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self.peak_bytes = _peak_rss_bytes()


def _peak_rss_bytes() -> int | None:
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (forward and backward) as PyTorch's FlopCounterMode counts
    them (matmuls, convolutions and attention; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def ours_step_fn(
    model: Reprogrammer, images: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype
):
    """Forward + input-gradient backward of our model on a batch (what a training step costs)."""
    device = images.device

    def step() -> None:
        model.zero_grad(set_to_none=True)
        output = model(images, Precision.of(dtype, device))
        F.cross_entropy(output.logits.float(), labels, reduction="sum").backward()

    return step


def weight_gradients(module: torch.nn.Module) -> list[str]:
    """Names of parameters of ``module`` that hold a gradient or would receive one."""
    return [n for n, p in module.named_parameters() if p.requires_grad or p.grad is not None]


@dataclass
class Throughput:
    images_per_s: float
    seconds: float
    steps: int
    first_step_s: float  # the first (warm-up / compile) step, not counted

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def time_steps(
    step: Callable[[], object],
    images_per_step: int,
    steps: int,
    device: torch.device,
    warmup: int = 2,
) -> Throughput:
    """Images per second of ``step`` after ``warmup`` untimed calls (the first is reported)."""
    synchronize(device)
    started = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - started
    for _ in range(max(0, warmup - 1)):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - started
    return Throughput(images_per_step * steps / max(seconds, 1e-9), seconds, steps, first)
