"""The training loop: few-shot prompt training with validation-based model selection.

One epoch = one pass over the few-shot training images in a seeded order. Methods with a PRM
collect top-k counts during that same pass and re-estimate omega after it; the first
``prm_warmup_epochs`` only estimate omega (the paper's epoch 0). Validation is evaluated every
``eval_every`` epochs and the best validation state is kept; the test split is evaluated once,
at the end, with that state (``select_on='test'`` reproduces the official scripts instead).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from reprogram.data.images import (
    DecodedImages,
    as_float,
    crop_resize,
    decode_center,
    decode_short_side,
    random_resized_crop_params,
)
from reprogram.engine.checkpoint import (
    CHECKPOINT,
    RESULTS,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_metrics,
    write_results,
)
from reprogram.engine.config import TrainConfig, save_config
from reprogram.engine.distributed import World, init_world, local_device_name
from reprogram.engine.evaluate import Evaluation, evaluate
from reprogram.engine.progress import Reporter
from reprogram.engine.setup import RunParts, build_backbone, build_model, load_data, prepare
from reprogram.errors import ReprogramError
from reprogram.methods import Reprogrammer
from reprogram.precision import autocast, needs_grad_scaler, resolve_precision


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine annealing per step from the base lr to 0 over ``total_steps``."""
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )


@dataclass
class TrainData:
    """Training images ready for batching on the device."""

    pixels: torch.Tensor  # uint8 N×3×H×W (canvas when augmenting)
    sizes: torch.Tensor  # N×2 valid (h, w)
    labels: torch.Tensor
    augment: bool
    image_size: int
    skipped: list[str]

    def batch(
        self, index: torch.Tensor, generator: torch.Generator, part: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of ``index[part]``; augmentation is drawn for the whole ``index``
        so that a process's share of a global batch is the same as in single-process training."""
        device = self.pixels.device
        # non_blocking: small host-to-device copies that do not wait for the GPU's queue
        local = index[part].to(device, non_blocking=True)
        if self.augment:
            boxes = random_resized_crop_params(self.sizes[index], generator)
            flips = torch.rand(len(index), generator=generator) < 0.5
            if len(local) == 0:  # no share of a last batch smaller than the world
                images = torch.zeros(0, 3, self.image_size, self.image_size, device=device)
            else:
                images = crop_resize(
                    self.pixels.index_select(0, local),
                    boxes[part].to(device, non_blocking=True),
                    self.image_size,
                    flips[part].to(device, non_blocking=True),
                )
        else:
            images = as_float(self.pixels.index_select(0, local))
        return images, self.labels.index_select(0, local)


def load_train_data(parts: RunParts, device: torch.device) -> TrainData:
    size = parts.model.image_size
    samples = parts.splits.train
    skip = parts.config.skip_bad_images
    decoded: DecodedImages = (
        decode_short_side(samples, size, skip_bad=skip)
        if parts.config.augment
        else decode_center(samples, size, skip_bad=skip)
    )
    return TrainData(
        decoded.pixels.to(device),
        decoded.sizes,
        decoded.labels.to(device),
        parts.config.augment,
        size,
        decoded.skipped,
    )


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Data order and augmentation depend only on (seed, epoch): resuming replays them exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train_one_epoch(
    model: Reprogrammer,
    data: TrainData,
    optimizer: torch.optim.Optimizer | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler | None,
    config: TrainConfig,
    epoch: int,
    dtype: torch.dtype,
    advance,
    world: World = World(),
) -> dict[str, float]:
    """One pass over the training images; ``optimizer=None`` only estimates the PRM.

    The loss is the sum over this process's share divided by the global batch size, and
    gradients are summed across processes: the same maths as one process on the whole batch.
    """
    device = data.pixels.device
    generator = epoch_generator(config.seed, epoch)
    order = torch.randperm(len(data.labels), generator=generator)
    model.aggregator.reset_counts()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    started = time.perf_counter()
    for start in range(0, len(order), config.batch_size):
        index = order[start : start + config.batch_size]
        images, labels = data.batch(index, generator, world.shard(index))
        if len(labels) == 0:  # a last batch smaller than the world leaves this process nothing
            if optimizer is not None:
                _step_without_samples(model, optimizer, scheduler, scaler, world)
            continue
        with torch.set_grad_enabled(optimizer is not None), autocast(device, dtype):
            output = model(images)
        loss = F.cross_entropy(output.logits.float(), labels, reduction="sum") / len(index)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            for parameter in model.prompt_parameters():
                world.all_reduce_sum(parameter.grad)
            _optimizer_step(optimizer, scheduler, scaler)
        model.aggregator.observe(output.scores.detach(), labels)
        loss_sum += loss.detach() * len(index)
        correct += (output.logits.detach().argmax(dim=1) == labels).sum()
        done = min(start + config.batch_size, len(order))
        advance(len(labels), **{"img/s": f"{done / max(time.perf_counter() - started, 1e-9):.0f}"})
    model.aggregator.reduce_counts(world.all_reduce_sum)
    model.aggregator.update()
    world.all_reduce_sum(loss_sum)
    world.all_reduce_sum(correct)
    seconds = time.perf_counter() - started
    count = len(order)
    return {
        "loss": float(loss_sum) / count,
        "train_acc": float(correct) / count,
        "images_per_s": count / max(seconds, 1e-9),
        "train_time_s": seconds,
    }


def _step_without_samples(model: Reprogrammer, optimizer, scheduler, scaler, world: World) -> None:
    """Take part in the gradient all-reduce (with zeros) and the optimiser step, like the others."""
    optimizer.zero_grad(set_to_none=True)
    for parameter in model.prompt_parameters():
        parameter.grad = world.all_reduce_sum(torch.zeros_like(parameter))
    _optimizer_step(optimizer, scheduler, scaler)


def _optimizer_step(optimizer, scheduler, scaler) -> None:
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()


def _check_resume_target(run_dir: Path, resume: bool) -> dict[str, Any] | None:
    has_checkpoint = (run_dir / CHECKPOINT).is_file()
    if resume:
        if not has_checkpoint:
            raise ReprogramError(f"--resume: no checkpoint in {run_dir}")
        return load_checkpoint(run_dir)
    if (run_dir / RESULTS).is_file():
        raise ReprogramError(f"{run_dir} already holds a finished run; choose another --out")
    if has_checkpoint:
        raise ReprogramError(f"{run_dir} holds an unfinished run; add --resume to continue it")
    return None


def fit(config: TrainConfig, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train (or only evaluate, for zero-shot methods) and write the run folder. Returns results."""
    run_dir = Path(run_dir)
    checkpoint = _check_resume_target(run_dir, resume)
    if checkpoint is not None:
        config = TrainConfig(**checkpoint["config"])
    config.validate()
    config.device = local_device_name(config.device)
    world = init_world("cuda" if config.device.startswith("cuda") else "cpu")
    reporter = Reporter(config.quiet or not world.is_main)
    wall_start = time.perf_counter()
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(config.seed)

    if checkpoint is None:
        parts = prepare(config)
    else:
        splits = load_data(config)
        backbone = build_backbone(config)
        if backbone.fingerprint != checkpoint["backbone"]["fingerprint"]:
            raise ReprogramError(
                f"{run_dir}: checkpoint was made with another backbone ({checkpoint['backbone']})"
            )
        from reprogram.descriptions import TextBank

        model = build_model(
            config, backbone, splits.classnames, TextBank.from_dict(checkpoint["text_bank"])
        )
        parts = RunParts(config, splits, backbone, model)
    model, device = parts.model, parts.backbone.device
    if config.compile:
        model.enable_compile()
    dtype = resolve_precision(config.precision, device)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    val_images = decode_center(parts.splits.val, model.image_size, skip_bad=config.skip_bad_images)
    trainable = model.recipe.trainable and config.epochs > 0
    warmup = (
        min(config.prm_warmup_epochs, config.epochs) if model.recipe.aggregation == "prm" else 0
    )
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "score": -1.0, "state": model.trainable_state()}
    start_epoch = 0
    optimizer = scheduler = scaler = None
    skipped: list[str] = list(val_images.skipped)

    if trainable:
        data = load_train_data(parts, device)
        skipped += data.skipped
        steps_per_epoch = math.ceil(len(data.labels) / config.batch_size)
        optimizer = torch.optim.SGD(
            model.prompt_parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        scheduler = cosine_schedule(optimizer, (config.epochs - warmup) * steps_per_epoch)
        scaler = torch.amp.GradScaler(device.type) if needs_grad_scaler(device, dtype) else None
        if checkpoint is not None:
            model.load_trainable_state(checkpoint["state"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            set_rng_state(checkpoint["rng"])
            history, best, start_epoch = (
                checkpoint["history"],
                checkpoint["best"],
                checkpoint["epoch"],
            )
            write_metrics(run_dir, history)
            reporter.line(f"resuming {run_dir} at epoch {start_epoch + 1}/{config.epochs}")
        test_images = None
        if config.select_on == "test":
            test_images = decode_center(
                parts.splits.test, model.image_size, skip_bad=config.skip_bad_images
            )
        eval_every = config.resolved_eval_every()
        for epoch in range(start_epoch, config.epochs):
            estimate_only = epoch < warmup
            model.prompts.train()
            label = "estimate PRM" if estimate_only else "train"
            with reporter.bar(
                f"epoch {epoch + 1}/{config.epochs} {label}", len(data.labels)
            ) as advance:
                row = train_one_epoch(
                    model,
                    data,
                    None if estimate_only else optimizer,
                    scheduler,
                    scaler,
                    config,
                    epoch,
                    dtype,
                    advance,
                    world,
                )
            lr = 0.0 if estimate_only else optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch + 1, **row, "lr": lr, "estimate_only": estimate_only}
            last = epoch + 1 == config.epochs
            if not world.is_main:
                continue
            if not estimate_only and ((epoch + 1) % eval_every == 0 or last):
                val = evaluate(model, val_images, config.eval_batch_size, dtype)
                row["val_acc"] = val.accuracy
                score = val.accuracy
                if test_images is not None:
                    row["test_acc"] = score = evaluate(
                        model, test_images, config.eval_batch_size, dtype
                    ).accuracy
                if score >= best["score"]:
                    best = {"epoch": epoch + 1, "score": score, "state": model.trainable_state()}
            row["time_s"] = time.perf_counter() - wall_start
            history.append(row)
            reporter.line(_epoch_line(row))
            write_metrics(run_dir, history)
            if (epoch + 1) % config.checkpoint_every == 0 or last:
                save_checkpoint(
                    run_dir,
                    _checkpoint(parts, optimizer, scheduler, history, best, epoch + 1, False),
                )
        model.load_trainable_state(best["state"])

    results = (
        _finish(
            parts,
            run_dir,
            history,
            best,
            dtype,
            val_images,
            skipped,
            reporter,
            wall_start,
            optimizer,
            scheduler,
        )
        if world.is_main
        else {}
    )
    return world.broadcast_object(results)  # every process returns the main one's results


def _epoch_line(row: dict[str, Any]) -> str:
    parts = [
        f"epoch {row['epoch']}",
        f"loss {row['loss']:.4f}",
        f"train acc {row['train_acc']:.3f}",
    ]
    if "val_acc" in row:
        parts.append(f"val acc {row['val_acc']:.3f}")
    if "test_acc" in row:
        parts.append(f"test acc {row['test_acc']:.3f}")
    parts.append(f"{row['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def _checkpoint(
    parts: RunParts, optimizer, scheduler, history, best, epoch: int, finished: bool
) -> dict:
    model = parts.model
    return {
        "config": parts.config.to_dict(),
        "method": parts.config.method,
        "classnames": parts.splits.classnames,
        "backbone": parts.backbone.describe(),
        "text_bank": model.bank.to_dict(),
        "state": model.trainable_state(),
        "best": best,
        "optimizer": optimizer.state_dict() if optimizer else None,
        "scheduler": scheduler.state_dict() if scheduler else None,
        "rng": rng_state(),
        "epoch": epoch,
        "history": history,
        "finished": finished,
    }


def _finish(
    parts,
    run_dir,
    history,
    best,
    dtype,
    val_images,
    skipped,
    reporter,
    wall_start,
    optimizer,
    scheduler,
):
    config, model = parts.config, parts.model
    test_images = decode_center(
        parts.splits.test, model.image_size, skip_bad=config.skip_bad_images
    )
    skipped = sorted(set(skipped) | set(test_images.skipped))
    with reporter.bar("test", len(test_images)) as advance:
        test: Evaluation = evaluate(model, test_images, config.eval_batch_size, dtype, advance)
    val = evaluate(model, val_images, config.eval_batch_size, dtype)
    classnames = parts.splits.classnames
    results = {
        "method": config.method,
        "dataset": config.dataset,
        "seed": config.seed,
        "shots": config.shots,
        "epochs": config.epochs,
        "backbone": parts.backbone.describe(),
        "select_on": config.select_on,
        "selected_epoch": best["epoch"] if best["epoch"] > 0 else None,
        "val_accuracy": val.accuracy,
        "test_accuracy": test.accuracy,
        "per_class_accuracy": dict(zip(classnames, test.per_class, strict=True)),
        "test_confusion": test.confusion.tolist(),
        "test_count": test.count,
        "val_count": val.count,
        "train_count": len(parts.splits.train),
        "skipped_images": len(skipped),
        "trainable_parameters": model.prompts.trainable_parameters,
        "prompts": model.prompts.count if model.recipe.trainable else 0,
        "classnames": classnames,
        "wall_time_s": time.perf_counter() - wall_start,
    }
    if skipped:
        reporter.line(f"skipped {len(skipped)} undecodable images (e.g. {skipped[0]})")
    save_checkpoint(
        run_dir, _checkpoint(parts, optimizer, scheduler, history, best, config.epochs, True)
    )
    write_results(run_dir, results)
    reporter.line(
        f"{config.method} on {config.dataset}: "
        f"val acc {val.accuracy:.4f}  test acc {test.accuracy:.4f}"
        + (f"  (selected epoch {best['epoch']} on {config.select_on})" if best["epoch"] > 0 else "")
    )
    return results


def fit_seeds(
    config: TrainConfig, seeds: list[int], out_dir: str | Path, resume: bool = False
) -> dict[str, Any]:
    """Train one run per seed into ``out_dir/seed-N`` and write a mean ± std summary table."""
    from dataclasses import replace

    from reprogram.engine.runs import write_summary

    out_dir = Path(out_dir)
    run_dirs = []
    for seed in seeds:
        run_dir = out_dir / f"seed-{seed}"
        finished = (run_dir / RESULTS).is_file()
        if not finished:
            fit(
                replace(config, seed=seed),
                run_dir,
                resume=resume and (run_dir / CHECKPOINT).is_file(),
            )
        run_dirs.append(run_dir)
    return write_summary(out_dir, run_dirs)
