"""Data-parallel training over processes started by ``torchrun`` (PyTorch distributed).

Every process holds the same prompts; each takes its share of every global batch, gradients
and PRM counts are summed across processes, so the result equals single-process training on
the same global batch. Only the main process writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def shard(self, index: torch.Tensor) -> slice:
        """This process's part of a global batch of ``len(index)`` samples."""
        per = -(-len(index) // self.size)
        return slice(self.rank * per, min((self.rank + 1) * per, len(index)))

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj):
        """The main process's ``obj`` in every process (also a barrier)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_world(device_type: str = "cpu") -> World:
    """Join the process group that ``torchrun`` describes in the environment (or run alone)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    if not dist.is_initialized():
        if device_type == "cuda":  # NCCL's barrier and object broadcasts use the current device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def close_world() -> None:
    """Leave the process group, if this process joined one (before it exits: a process that
    exits inside a gloo or NCCL group may abort)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device_name(requested: str) -> str:
    """Under torchrun, ``auto``/``cuda`` means this process's own GPU."""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank}"
    return requested
