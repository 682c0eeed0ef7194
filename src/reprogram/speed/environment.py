"""What a speed record runs on: Python, torch, CUDA, GPU and driver (imports torch only, so that
``scripts/gpu-check.sh`` prints it as its first line before anything is installed)."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys

import torch


def driver_version() -> str | None:
    """The NVIDIA driver's version as ``nvidia-smi`` reports it; None without one."""
    try:
        shown = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = shown.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def environment() -> dict:
    """Python, torch, torchvision, CUDA (torch's build), GPU (the first one) and driver."""
    try:  # its metadata, not an import: this runs before anything else
        torchvision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        torchvision = None
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "driver": driver_version(),
    }


def environment_line(env: dict) -> str:
    """``torch …, CUDA …, GPU …, driver …`` in one line (``none`` for what is missing)."""
    gpu = env["gpu"] or "none visible"
    if env["gpu_count"] > 1:
        gpu += f" (1 of {env['gpu_count']})"
    return (
        f"torch {env['torch']}, CUDA {env['cuda'] or 'none (CPU build)'}, GPU {gpu}, "
        f"driver {env['driver'] or 'none'}; torchvision {env['torchvision']}, "
        f"Python {env['python']}"
    )


def main(argv: list[str]) -> int:
    """Print the line; with ``--require-cuda``, exit 3 (one more line) when torch sees no GPU."""
    env = environment()
    print(f"gpu-check: {environment_line(env)}", flush=True)
    if "--require-cuda" in argv and env["gpu"] is None:
        print("gpu-check: torch sees no CUDA GPU here (try --dry-run)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
