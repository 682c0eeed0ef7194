"""The training loop: few-shot prompt training with validation-based model selection.

One epoch = one pass over the few-shot training images in a seeded order. Methods with a PRM
collect top-k counts during that same pass and re-estimate omega after it; the first
``prm_warmup_epochs`` only estimate omega (the paper's epoch 0). Validation is evaluated every
``eval_every`` epochs and the best validation state is kept (ties keep the earliest); the test
split is evaluated once, at the end, with that state. ``select_on='test'`` reproduces the
official scripts instead: the test split after every training epoch, the best one kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from reprogram.data.fewshot import shots_per_class
from reprogram.data.images import decode_center
from reprogram.engine.batches import TrainData, load_train_data
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
from reprogram.engine.config import TrainConfig, resumed_config, save_config
from reprogram.engine.curves import CurveWriter
from reprogram.engine.distributed import World, init_world, local_device_name
from reprogram.engine.evaluate import Evaluation, evaluate
from reprogram.engine.lock import run_lock
from reprogram.engine.progress import Reporter
from reprogram.engine.setup import (
    RunParts,
    RunWarnings,
    build_backbone,
    build_model,
    load_data,
    prepare,
    warn_small_classes,
)
from reprogram.errors import ReprogramError
from reprogram.model.methods import Reprogrammer
from reprogram.model.precision import Precision
from reprogram.text.packaged import file_record


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
    if config.lr_schedule_span == "all-epochs":
        return config.epochs * steps_per_epoch
    if config.lr_schedule_span == "training-steps":
        return (config.epochs - warmup) * steps_per_epoch
    raise ReprogramError(
        f"lr_schedule_span must be 'all-epochs' or 'training-steps', "
        f"got '{config.lr_schedule_span}'"
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
    precision: Precision | torch.dtype,
    advance,
    world: World = World(),
) -> dict[str, float]:
    """One pass over the training images; ``optimizer=None`` only estimates the PRM.

    The loss is the sum over this process's share divided by the global batch size, and
    gradients are summed across processes: the same maths as one process on the whole batch.
    """
    device = data.device
    precision = Precision.of(precision, device)
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
        with torch.set_grad_enabled(optimizer is not None):
            output = model(images, precision)  # fp32 scores and logits
        loss = F.cross_entropy(output.logits, labels, reduction="sum") / len(index)
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
    """Train (or only evaluate, for zero-shot methods) and write the run folder. Returns results.

    The run folder is locked for the whole run: a second run into it fails at once. With
    ``resume``, the run's identity comes from its checkpoint and only the execution settings
    (``RUNTIME_FIELDS`` in ``engine/config.py``: device, compile, quiet, …) from ``config``."""
    with run_lock(run_dir):
        return _fit_locked(config, run_dir, resume)


def _fit_locked(config: TrainConfig, run_dir: str | Path, resume: bool) -> dict[str, Any]:
    run_dir = Path(run_dir)
    checkpoint = _check_resume_target(run_dir, resume)
    if checkpoint is not None:  # identity from the checkpoint, execution from the caller
        config = resumed_config(checkpoint["config"], config)
    config.validate()
    # the device this process uses (under torchrun: its own GPU); never written to the run
    execution = replace(config, device=local_device_name(config.device))
    world = init_world("cuda" if execution.device.startswith("cuda") else "cpu")
    reporter = Reporter(config.quiet or not world.is_main)
    wall_start = time.perf_counter()
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(config.seed)

    warnings = RunWarnings(reporter)
    if checkpoint is None:
        parts = prepare(execution, warnings)
        config = parts.config = replace(parts.config, device=config.device)
    else:
        for message in checkpoint.get("warnings", []):  # those of the first start, in order
            warnings.add(message)
        splits = load_data(config, warnings)
        backbone = build_backbone(execution)
        if backbone.fingerprint != checkpoint["backbone"]["fingerprint"]:
            raise ReprogramError(
                f"{run_dir}: checkpoint was made with another backbone ({checkpoint['backbone']})"
            )
        from reprogram.text.descriptions import TextBank

        model = build_model(
            config, backbone, splits.classnames, TextBank.from_dict(checkpoint["text_bank"])
        )
        parts = RunParts(config, splits, backbone, model, warnings)
    model, device = parts.model, parts.backbone.device
    if config.compile:
        model.enable_compile()
    precision = Precision.resolve(config.precision, device)  # the run's one precision policy
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    val_images = decode_center(parts.splits.val, model.image_size, skip_bad=config.skip_bad_images)
    # every test image is decoded before training: a bad one fails now, not after the last epoch
    all_test = decode_center(parts.splits.test, model.image_size, skip_bad=config.skip_bad_images)
    trainable = model.recipe.trainable and config.epochs > 0
    warmup = (
        min(config.prm_warmup_epochs, config.epochs) if model.recipe.aggregation == "prm" else 0
    )
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "score": -1.0, "state": model.trainable_state()}
    start_epoch = last_saved = 0
    optimizer = scheduler = scaler = None
    skipped: list[str] = list(val_images.skipped)

    if trainable:
        data = load_train_data(parts, device)
        skipped += data.skipped
        warn_small_classes(warnings, data.labels.tolist(), parts.splits.classnames, 1, "training")
        steps_per_epoch = math.ceil(len(data.labels) / config.batch_size)
        optimizer = torch.optim.SGD(
            model.prompt_parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        scheduler = cosine_schedule(optimizer, schedule_steps(config, warmup, steps_per_epoch))
        scaler = precision.grad_scaler()
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
            last_saved = start_epoch
            write_metrics(run_dir, history)
            reporter.line(f"resuming {run_dir} at epoch {start_epoch + 1}/{config.epochs}")
        test_images = all_test if config.select_on == "test" else None
        eval_every = config.resolved_eval_every()
        curves = CurveWriter(run_dir, config.tensorboard and world.is_main)  # --tensorboard
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
                    precision,
                    advance,
                    world,
                )
            _check_finite(row, model, epoch + 1, config, last_saved)
            lr = 0.0 if estimate_only else optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch + 1, **row, "lr": lr, "estimate_only": estimate_only}
            last = epoch + 1 == config.epochs
            if not estimate_only:  # every process evaluates its shard (sharded evaluation)
                score = None
                if (epoch + 1) % eval_every == 0 or last:
                    val = evaluate(
                        model, val_images, config.eval_batch_size, precision, world=world
                    )
                    row["val_acc"] = score = val.accuracy
                if test_images is not None:  # the official protocol: after every training epoch
                    row["test_acc"] = score = evaluate(
                        model, test_images, config.eval_batch_size, precision, world=world
                    ).accuracy
                if score is not None and math.isfinite(score) and score > best["score"]:
                    # strict: ties keep the earliest epoch, as the published scripts do
                    best = {"epoch": epoch + 1, "score": score, "state": model.trainable_state()}
            if not world.is_main:
                continue
            row["time_s"] = time.perf_counter() - wall_start
            history.append(row)
            reporter.line(_epoch_line(row))
            write_metrics(run_dir, history)
            curves.write(row)
            if (epoch + 1) % config.checkpoint_every == 0 or last:
                save_checkpoint(
                    run_dir,
                    _checkpoint(parts, optimizer, scheduler, history, best, epoch + 1, False),
                )
                last_saved = epoch + 1
        curves.close()
        if best["epoch"] > 0:  # nothing selected (only PRM-estimation epochs): keep the last
            model.load_trainable_state(best["state"])

    results = _finish(
        parts,
        run_dir,
        history,
        best,
        precision,
        val_images,
        all_test,
        skipped,
        reporter,
        wall_start,
        optimizer,
        scheduler,
        world,
    )
    return world.broadcast_object(results)  # every process returns the main one's results


def _check_finite(
    row: dict[str, Any], model: Reprogrammer, epoch: int, config: TrainConfig, last_saved: int
) -> None:
    """Stop at the first epoch whose loss or learned state is not finite (nothing is saved)."""
    state = [v for v in model.trainable_state().values() if v.is_floating_point()]
    loss_finite = math.isfinite(row["loss"])
    if loss_finite and all(bool(torch.isfinite(v).all()) for v in state):
        return
    what = "the prompts became non-finite" if loss_finite else f"the training loss is {row['loss']}"
    cause = (
        f"lr={config.lr} is not a finite number"
        if not math.isfinite(config.lr)
        else f"the learning rate (lr={config.lr:g}) is likely too large, or a method option "
        "degenerate (e.g. attr_top_k=0)"
    )
    kept = f"the checkpoint of epoch {last_saved} is kept" if last_saved else "nothing was saved"
    raise ReprogramError(f"epoch {epoch}: {what}; {cause}; fix it and train again ({kept})")


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
        "warnings": parts.warnings.messages,
    }


def _finish(
    parts,
    run_dir,
    history,
    best,
    precision,
    val_images,
    test_images,
    skipped,
    reporter,
    wall_start,
    optimizer,
    scheduler,
    world: World = World(),
):
    config, model = parts.config, parts.model
    skipped = sorted(set(skipped) | set(test_images.skipped))
    with reporter.bar("test", len(test_images)) as advance:
        test: Evaluation = evaluate(
            model, test_images, config.eval_batch_size, precision, advance, world
        )
    val = evaluate(model, val_images, config.eval_batch_size, precision, world=world)
    if not world.is_main:  # the others took part in the sharded evaluations; main writes
        return {}
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
        "train_shots_per_class": shots_per_class(parts.splits.train, classnames, skipped),
        "skipped_images": len(skipped),
        "trainable_parameters": model.prompts.trainable_parameters,
        "prompts": model.prompts.count if model.recipe.trainable else 0,
        "classnames": classnames,
        "descriptions": [file_record(spec) for spec in config.descriptions],
        "template_descriptions": model.bank.template,
        "wall_time_s": time.perf_counter() - wall_start,
        "warnings": parts.warnings.messages,
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
    from reprogram.engine.runs import write_summary

    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ReprogramError(f"--seeds: seed {repeated[0]} is given twice (each seed runs once)")
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
