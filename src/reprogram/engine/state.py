"""What a run carries from epoch to epoch, when it is saved, and the process state ``fit`` restores.

* :func:`cosine_schedule`: the published per-step cosine, :func:`schedule_steps` its length.
* :class:`RunState`: the prompts' optimiser and schedule, a trained head's own optimiser and
  schedule (if the method has one), the grad scaler, the epochs done, the history, the best
  epoch so far and the RNG state (saved with the checkpoint); the prompts, the PRM and a head's
  parameters are the model's trainable state.
* :class:`Checkpointer`: the selection and saving policy of a run folder: the best epoch by a
  strict ``>`` (ties keep the earliest, NaN is never selected), a checkpoint every
  ``checkpoint_every`` epochs and after the last, the stop at a non-finite epoch.
* :func:`preserved_global_state`: ``fit`` leaves the deterministic-algorithms flags and the
  python, numpy, torch and CUDA RNGs as it found them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reprogram.engine.checkpoint import (
    CHECKPOINT,
    RESULTS,
    discard_run,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from reprogram.engine.distributed import World
from reprogram.errors import ReprogramError

if TYPE_CHECKING:
    from reprogram.engine.config import TrainConfig
    from reprogram.engine.setup import RunParts, RunWarnings
    from reprogram.model.methods import Reprogrammer


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """Cosine annealing per step from the base lr towards 0 over ``total_steps`` (the
    published scripts' ``CosineAnnealingLR``)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))


def schedule_steps(config: TrainConfig, warmup: int, steps_per_epoch: int) -> int:
    """The cosine's length. ``all-epochs`` (published): every epoch's steps, the PRM-only ones
    included, although only training steps advance it, so the last lr is not 0.
    ``training-steps``: the training epochs' steps only (the last step is taken at lr ~0)."""
    if config.optim.lr_schedule_span == "all-epochs":
        return config.optim.epochs * steps_per_epoch
    if config.optim.lr_schedule_span == "training-steps":
        return (config.optim.epochs - warmup) * steps_per_epoch
    raise ReprogramError(
        f"lr_schedule_span must be 'all-epochs' or 'training-steps', "
        f"got '{config.optim.lr_schedule_span}'"
    )


def initial_best(model: Reprogrammer) -> dict[str, Any]:
    """No epoch selected yet: any finite score beats it; the state is the model's as built."""
    return {"epoch": -1, "score": -1.0, "state": model.trainable_state()}


@dataclass
class RunState:
    """A run's resumable state. ``epoch`` counts the epochs done: the next one has that index.

    The first ``warmup`` epochs only estimate the PRM (no optimiser step)."""

    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    warmup: int = 0
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)  # {"epoch", "score", "state"}
    warnings: RunWarnings | None = None
    head_optimizer: torch.optim.Optimizer | None = None  # the model's head_parameters()
    head_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # None: constant lr

    @property
    def estimating(self) -> bool:
        """Whether the next epoch only estimates the PRM (or there is nothing to optimise)."""
        return not self.optimizers() or self.epoch < self.warmup

    @property
    def lr(self) -> float:
        """The prompts' learning rate of the next step (0 in a PRM-estimation epoch or without
        a trained prompt)."""
        if self.estimating or self.optimizer is None:
            return 0.0
        return self.optimizer.param_groups[0]["lr"]

    @property
    def head_lr(self) -> float | None:
        """The head's learning rate of the next step (None without a trained head)."""
        if self.head_optimizer is None:
            return None
        return 0.0 if self.estimating else self.head_optimizer.param_groups[0]["lr"]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.optimizer, self.head_optimizer) if o is not None]

    def step(self, loss: torch.Tensor, model: Reprogrammer, world: World) -> None:
        """Backpropagate ``loss``, sum the gradients across processes, step and schedule."""
        for optimizer in self.optimizers():
            optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        for parameter in _trained(model):
            if parameter.grad is None and world.active:  # unused here, used elsewhere
                parameter.grad = torch.zeros_like(parameter)
            if parameter.grad is not None:
                world.all_reduce_sum(parameter.grad)
        self._apply()

    def step_without_samples(self, model: Reprogrammer, world: World) -> None:
        """Take part in the gradient all-reduce (with zeros) and the step, like the others."""
        for optimizer in self.optimizers():
            optimizer.zero_grad(set_to_none=True)
        for parameter in _trained(model):
            parameter.grad = world.all_reduce_sum(torch.zeros_like(parameter))
        self._apply()

    def _apply(self) -> None:
        for optimizer in self.optimizers():
            if self.scaler is not None:
                self.scaler.step(optimizer)
            else:
                optimizer.step()
        if self.scaler is not None:
            self.scaler.update()
        for scheduler in (self.scheduler, self.head_scheduler):
            if scheduler is not None:
                scheduler.step()

    def to_dict(self, model: Reprogrammer) -> dict[str, Any]:
        """The checkpoint's state entries (the RNG state as it is now)."""
        return {
            "state": model.trainable_state(),
            "best": self.best,
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "head_optimizer": self.head_optimizer.state_dict() if self.head_optimizer else None,
            "head_scheduler": self.head_scheduler.state_dict() if self.head_scheduler else None,
            "rng": rng_state(),
            "epoch": self.epoch,
            "history": self.history,
            "warnings": self.warnings.messages if self.warnings is not None else [],
        }

    def restore(self, checkpoint: dict[str, Any], model: Reprogrammer) -> None:
        """Continue from ``checkpoint``: prompts, PRM, head, optimisers, schedules, RNG,
        history, best."""
        model.load_trainable_state(checkpoint["state"])
        pairs = (
            (self.optimizer, "optimizer"),
            (self.scheduler, "scheduler"),
            (self.head_optimizer, "head_optimizer"),
            (self.head_scheduler, "head_scheduler"),
        )
        for owner, key in pairs:
            if owner is not None:
                if checkpoint.get(key) is None:
                    raise ReprogramError(f"--resume: the checkpoint has no {key} state")
                owner.load_state_dict(checkpoint[key])
        set_rng_state(checkpoint["rng"])
        self.history, self.best = checkpoint["history"], checkpoint["best"]
        self.epoch = checkpoint["epoch"]


def _trained(model: Reprogrammer) -> list[torch.nn.Parameter]:
    """Every parameter the optimisers step: the prompts', then the head's."""
    return [*model.prompt_parameters(), *model.head_parameters()]


class Checkpointer:
    """A run folder's policy: which epoch is kept as the best, when the state is saved."""

    def __init__(self, run_dir: Path, parts: RunParts, world: World = World()) -> None:
        self.run_dir, self.parts, self.world = run_dir, parts, world
        self.last_saved = 0  # the epoch of the newest checkpoint on disk (0: none)
        self.newest_damaged = False  # checkpoint.pt failed to load: never keep it as previous

    @staticmethod
    def existing(
        run_dir: Path, resume: bool, notes: list[str], overwrite: bool = False
    ) -> dict[str, Any] | None:
        """The checkpoint to resume (a damaged newest one falls back to the previous, said in
        ``notes``), or None for a new run; refuses to overwrite a finished or an unfinished run
        unless ``overwrite`` (its files are then deleted)."""
        has_checkpoint = (run_dir / CHECKPOINT).is_file()
        if resume:
            if overwrite:
                raise ReprogramError(
                    "--resume continues the run in --out, --overwrite replaces it: give one"
                )
            if not has_checkpoint:
                raise ReprogramError(f"--resume: no checkpoint in {run_dir}")
            return load_checkpoint(run_dir, notes)
        if overwrite:
            discard_run(run_dir)
            return None
        if (run_dir / RESULTS).is_file():
            raise ReprogramError(
                f"{run_dir} already holds a finished run; choose another --out "
                "(or add --overwrite to replace it)"
            )
        if has_checkpoint:
            raise ReprogramError(
                f"{run_dir} holds an unfinished run; add --resume to continue it "
                "(or --overwrite to replace it)"
            )
        return None

    def resumed(self, state: RunState) -> None:
        self.last_saved = state.epoch

    def select(self, state: RunState, score: float | None, model: Reprogrammer) -> None:
        """Keep the epoch just done if its score beats the best one (strict: ties keep the
        earliest, as the published scripts do; a NaN score is never selected)."""
        if score is not None and math.isfinite(score) and score > state.best["score"]:
            state.best = {"epoch": state.epoch, "score": score, "state": model.trainable_state()}

    def check_finite(self, row: dict[str, Any], epoch: int) -> None:
        """Stop at the first epoch whose loss or learned state is not finite (nothing is saved)."""
        model, config = self.parts.model, self.parts.config
        state = [v for v in model.trainable_state().values() if v.is_floating_point()]
        loss_finite = math.isfinite(row["loss"])
        if loss_finite and all(bool(torch.isfinite(v).all()) for v in state):
            return
        what = (
            "the prompts became non-finite"
            if loss_finite
            else f"the training loss is {row['loss']}"
        )
        cause = (
            f"lr={config.optim.lr} is not a finite number"
            if not math.isfinite(config.optim.lr)
            else f"the learning rate (lr={config.optim.lr:g}) is likely too large, or a method "
            "option degenerate (e.g. attr_top_k=0)"
        )
        kept = (
            f"the checkpoint of epoch {self.last_saved} is kept"
            if self.last_saved
            else "nothing was saved"
        )
        raise ReprogramError(f"epoch {epoch}: {what}; {cause}; fix it and train again ({kept})")

    def after_epoch(self, state: RunState) -> None:
        """Save every ``checkpoint_every`` epochs and after the last one (the main process)."""
        config = self.parts.config
        if state.epoch % config.runtime.checkpoint_every == 0 or state.epoch == config.optim.epochs:
            self.save(state, finished=False)

    def save(self, state: RunState, finished: bool) -> None:
        if not self.world.is_main:
            return
        save_checkpoint(self.run_dir, self.payload(state, finished), keep=not self.newest_damaged)
        self.last_saved, self.newest_damaged = state.epoch, False

    def payload(self, state: RunState, finished: bool) -> dict[str, Any]:
        """The whole checkpoint: the run's identity, then its state."""
        parts = self.parts
        identity = {
            "config": parts.config.to_dict(),
            "method": parts.config.method.name,
            "classnames": parts.splits.classnames,
            "backbone": parts.backbone.describe(),
            "text_bank": parts.model.bank.to_dict(),
        }
        return {**identity, **state.to_dict(parts.model), "finished": finished}


@contextmanager
def preserved_global_state() -> Iterator[None]:
    """Restore torch's deterministic-algorithms flags and the global RNGs on exit.

    CUDA's generators are restored when CUDA was initialised on entry; when it was not and the
    call initialised it, they are seeded as ``torch.manual_seed`` had left them (the CPU's
    initial seed on entry). Resuming never relies on these: a run seeds its RNGs itself and
    takes them from its checkpoint."""
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    python, numpy, cpu, seed = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        torch.initial_seed(),
    )
    cuda = torch.cuda.get_rng_state_all() if _cuda_initialized() else None
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        elif _cuda_initialized():
            torch.cuda.manual_seed_all(seed)


def _cuda_initialized() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()
