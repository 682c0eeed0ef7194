"""The training loop: few-shot prompt training with validation-based model selection.

One epoch = one pass over the few-shot training images in a seeded order. Methods with a PRM
collect top-k counts during that same pass and re-estimate omega after it; the first
``prm_warmup_epochs`` only estimate omega (the paper's epoch 0). Validation is evaluated every
``eval_every`` epochs and the best validation state is kept (ties keep the earliest); the test
split is evaluated once, at the end, with that state. ``select_on='test'`` reproduces the
official scripts instead: the test split after every training epoch, the best one kept.
``skip_test`` (tuning) never reads the test split: any use of it is an error.

An ``on_epoch`` observer passed to :func:`fit` sees each epoch's metrics row (with the selection
so far) and may end the run by raising :class:`StopRun` (early stopping, a tuner's pruning): the
run then finishes as after its last epoch, with ``stopped`` in its results.

:func:`fit` reads top-down: build (data → model → optimiser and schedule) → resume → for each
epoch :func:`train_one_epoch`, maybe evaluate, checkpoint → finish (test once, results).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from reprogram.data.fewshot import shots_per_class
from reprogram.data.images import DecodedImages, decode_center
from reprogram.engine.batches import TrainData, load_train_data
from reprogram.engine.checkpoint import write_metrics, write_results
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
from reprogram.engine.state import (
    Checkpointer,
    RunState,
    cosine_schedule,
    initial_best,
    preserved_global_state,
    schedule_steps,
)
from reprogram.errors import ReprogramError
from reprogram.model.methods import Reprogrammer
from reprogram.model.precision import Precision
from reprogram.text.packaged import file_record

__all__ = [
    "StopRun",
    "TrainData",
    "cosine_schedule",
    "epoch_generator",
    "fit",
    "train_one_epoch",
]

OnEpoch = Callable[[dict[str, Any]], None]


class StopRun(Exception):
    """Raised by an ``on_epoch`` observer to end the run after this epoch (see the module)."""


class NotRead:
    """A split the run must not read (``skip_test``): any use of it is an error."""

    def __init__(self, split: str) -> None:
        self.split = split

    def _refuse(self) -> ReprogramError:
        return ReprogramError(f"the {self.split} split is not read in this run (skip_test)")

    def __getattr__(self, name: str) -> Any:
        raise self._refuse()

    def __len__(self) -> int:
        raise self._refuse()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Data order and augmentation depend only on (seed, epoch): resuming replays them exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _no_progress(n: int = 1, **_: Any) -> None:
    pass


def train_one_epoch(
    model: Reprogrammer,
    data: TrainData,
    state: RunState,
    config: TrainConfig,
    precision: Precision | torch.dtype,
    advance=_no_progress,
    world: World = World(),
) -> dict[str, float]:
    """Epoch ``state.epoch`` (0-based): one pass over the training images. Without an optimiser,
    or in a PRM-estimation epoch, it only estimates the PRM. ``state.epoch`` is not advanced.

    The loss is the sum over this process's share divided by the global batch size, and
    gradients are summed across processes: the same maths as one process on the whole batch.
    """
    device = data.device
    precision = Precision.of(precision, device)
    training = not state.estimating
    generator = epoch_generator(config.seed, state.epoch)
    order = torch.randperm(len(data.labels), generator=generator)
    model.aggregator.reset_counts()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    started = time.perf_counter()
    for start in range(0, len(order), config.optim.batch_size):
        index = order[start : start + config.optim.batch_size]
        images, labels = data.batch(index, generator, world.shard(index))
        if len(labels) == 0:  # a last batch smaller than the world leaves this process nothing
            if training:
                state.step_without_samples(model, world)
            continue
        with torch.set_grad_enabled(training):
            output = model(images, precision)  # fp32 scores and logits
        loss = F.cross_entropy(output.logits, labels, reduction="sum") / len(index)
        if training:
            state.step(loss, model, world)
        model.aggregator.observe(output.scores.detach(), labels)
        loss_sum += loss.detach() * len(index)
        correct += (output.logits.detach().argmax(dim=1) == labels).sum()
        done = min(start + config.optim.batch_size, len(order))
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


@dataclass
class Run:
    """What one ``fit`` works with: its parts, where it writes, how it computes and reports."""

    parts: RunParts
    run_dir: Path
    precision: Precision
    world: World
    reporter: Reporter
    started: float  # perf_counter at the start
    val_images: DecodedImages
    test_images: DecodedImages | NotRead
    skipped: list[str]  # undecodable images (validation, training)
    stopped: dict[str, Any] | None = None  # {"epoch", "reason"}: by on_epoch

    @property
    def config(self) -> TrainConfig:
        return self.parts.config

    @property
    def model(self) -> Reprogrammer:
        return self.parts.model


def fit(
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch: OnEpoch | None = None,
) -> dict[str, Any]:
    """Train (or only evaluate, for zero-shot methods) and write the run folder. Returns results.

    The run folder is locked for the whole run: a second run into it fails at once. With
    ``resume``, the run's identity comes from its checkpoint and only the execution settings
    (``config.runtime``: device, compile, quiet, …) from ``config``; with ``overwrite``, a run
    already in the folder is replaced (its files deleted), else it is refused. ``on_epoch(row)``
    is called (in the main process) after each recorded epoch and may raise :class:`StopRun`.
    The deterministic-algorithms flags and the global RNGs are left as they were found. Python
    warnings (``UserWarning``, ``RuntimeWarning``) raised during the run are the run's own."""
    warnings = RunWarnings()
    with run_lock(run_dir), preserved_global_state(), warnings.catching():
        return _fit(config, Path(run_dir), resume, overwrite, warnings, on_epoch)


def _fit(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    warnings: RunWarnings,
    on_epoch: OnEpoch | None = None,
) -> dict[str, Any]:
    """Build → resume → per epoch: train, maybe evaluate and select, record, checkpoint → finish."""
    notes: list[str] = []  # what loading the checkpoint had to say (a fallback)
    checkpoint = Checkpointer.existing(run_dir, resume, notes, overwrite)
    run = _build(config, run_dir, checkpoint, notes, warnings)
    model, config = run.model, run.config
    trainable = model.recipe.trainable and config.optim.epochs > 0
    warmup = (
        min(config.optim.prm_warmup_epochs, config.optim.epochs)
        if model.recipe.aggregation.estimates
        else 0
    )
    state = RunState(warmup=warmup, best=initial_best(model), warnings=run.parts.warnings)
    checkpointer = Checkpointer(run_dir, run.parts, run.world)
    checkpointer.newest_damaged = bool(notes)  # resumed from checkpoint.prev.pt
    if trainable:
        data = _train_data(run)
        state = _optimisation(run, state, data)
        if checkpoint is not None:
            _resume(run, state, checkpoint, checkpointer)
        curves = CurveWriter(
            run_dir, config.runtime.tensorboard and run.world.is_main
        )  # --tensorboard
        while state.epoch < config.optim.epochs:
            row = _train_epoch(run, data, state)  # advances state.epoch
            checkpointer.check_finite(row, state.epoch)
            if not row["estimate_only"]:  # every process evaluates its shard
                checkpointer.select(state, _evaluate_epoch(run, row), model)
            if run.world.is_main:
                _record(run, state, row, curves)
                checkpointer.after_epoch(state)
            if on_epoch is not None and _stopped(run, state, row, on_epoch):
                break
        curves.close()
        if state.best["epoch"] > 0:  # nothing selected (only PRM-estimation epochs): keep the last
            model.load_trainable_state(state.best["state"])
    return run.world.broadcast_object(_finish(run, state, checkpointer))


def _stopped(run: Run, state: RunState, row: dict[str, Any], on_epoch: OnEpoch) -> bool:
    """Show the observer the epoch's row and the selection so far; whether it ended the run."""
    reason = None
    if run.world.is_main:
        try:
            best = state.best
            on_epoch({**row, "selected_epoch": best["epoch"], "selected_score": best["score"]})
        except StopRun as stop:
            reason = str(stop) or "stopped by on_epoch"
    reason = run.world.broadcast_object(reason)
    if reason is not None:
        run.stopped = {"epoch": row["epoch"], "reason": reason}
        run.reporter.line(f"stopped after epoch {row['epoch']}: {reason}")
    return reason is not None


def _build(
    config: TrainConfig,
    run_dir: Path,
    checkpoint: dict[str, Any] | None,
    notes: list[str],
    warnings: RunWarnings,
) -> Run:
    """Resolve the config, seed, build the run's parts, write config.yaml and decode the
    evaluation images (every test image before training: a bad one fails now)."""
    if checkpoint is not None:  # identity from the checkpoint, execution from the caller
        config = resumed_config(checkpoint["config"], config)
    config.validate()
    # the device this process uses (under torchrun: its own GPU); never written to the run
    execution = config.updated(device=local_device_name(config.runtime.device))
    world = init_world("cuda" if execution.runtime.device.startswith("cuda") else "cpu")
    reporter = Reporter(config.runtime.quiet or not world.is_main)
    started = time.perf_counter()
    if config.runtime.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(config.seed)
    warnings.attach(reporter)
    parts = _parts(config, execution, checkpoint, warnings, run_dir)
    for note in notes:  # after those of the first start
        warnings.add(note)
    config, model = parts.config, parts.model
    if config.runtime.compile:
        model.enable_compile()
    precision = Precision.resolve(
        config.backbone.precision, parts.backbone.device
    )  # one policy per run
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    val = decode_center(parts.splits.val, model.image_size, skip_bad=config.data.skip_bad_images)
    skip_bad = config.data.skip_bad_images
    test = (
        NotRead("test")
        if config.runtime.skip_test
        else decode_center(parts.splits.test, model.image_size, skip_bad=skip_bad)
    )
    return Run(parts, run_dir, precision, world, reporter, started, val, test, list(val.skipped))


def _parts(
    config: TrainConfig,
    execution: TrainConfig,
    checkpoint: dict[str, Any] | None,
    warnings: RunWarnings,
    run_dir: Path,
) -> RunParts:
    """Data, backbone and model: new, or rebuilt from the checkpoint's exact texts."""
    if checkpoint is None:
        parts = prepare(execution, warnings)
        parts.config = parts.config.updated(device=config.runtime.device)
        return parts
    for message in checkpoint.get("warnings", []):  # those of the first start, in order
        warnings.add(message)
    splits = load_data(config, warnings)
    backbone = build_backbone(execution)
    if backbone.fingerprint != checkpoint["backbone"]["fingerprint"]:
        raise ReprogramError(
            f"{run_dir}: checkpoint was made with another backbone ({checkpoint['backbone']})"
        )
    from reprogram.text.descriptions import TextBank

    bank = TextBank.from_dict(checkpoint["text_bank"])
    model = build_model(config, backbone, splits.classnames, bank)
    return RunParts(config, splits, backbone, model, warnings)


def _train_data(run: Run) -> TrainData:
    data = load_train_data(run.parts, run.parts.backbone.device)
    run.skipped += data.skipped
    classnames = run.parts.splits.classnames
    warn_small_classes(run.parts.warnings, data.labels.tolist(), classnames, 1, "training")
    return data


def _optimisation(run: Run, state: RunState, data: TrainData) -> RunState:
    """The prompts: SGD with momentum and a per-step cosine schedule, as the published scripts.
    A trained head (the model's ``head_parameters``): its own optimiser (``head_optimizer``,
    ``head_lr``) and schedule (``head_schedule``: the same cosine, or constant)."""
    config = run.config
    steps_per_epoch = math.ceil(len(data.labels) / config.optim.batch_size)
    steps = schedule_steps(config, state.warmup, steps_per_epoch)
    optimizer = scheduler = head_optimizer = head_scheduler = None
    if run.model.prompt_parameters():
        optimizer = torch.optim.SGD(
            run.model.prompt_parameters(),
            lr=config.optim.lr,
            momentum=config.optim.momentum,
            weight_decay=config.optim.weight_decay,
        )
        scheduler = cosine_schedule(optimizer, steps)
    if run.model.head_parameters():
        head_optimizer = _head_optimizer(run.model.head_parameters(), config)
        if config.optim.head_schedule == "cosine":
            head_scheduler = cosine_schedule(head_optimizer, steps)
    return replace(
        state,
        optimizer=optimizer,
        scheduler=scheduler,
        head_optimizer=head_optimizer,
        head_scheduler=head_scheduler,
        scaler=run.precision.grad_scaler(),
    )


def _head_optimizer(parameters: list[torch.nn.Parameter], config: TrainConfig):
    """Adam (default) or SGD with the prompts' momentum, at ``head_lr``, no weight decay."""
    if config.optim.head_optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.optim.head_lr, momentum=config.optim.momentum)
    return torch.optim.Adam(parameters, lr=config.optim.head_lr)


def _resume(
    run: Run, state: RunState, checkpoint: dict[str, Any], checkpointer: Checkpointer
) -> None:
    state.restore(checkpoint, run.model)
    checkpointer.resumed(state)
    write_metrics(run.run_dir, state.history)
    run.reporter.line(
        f"resuming {run.run_dir} at epoch {state.epoch + 1}/{run.config.optim.epochs}"
    )


def _train_epoch(run: Run, data: TrainData, state: RunState) -> dict[str, Any]:
    """Train (or only estimate the PRM in) the next epoch, advance ``state.epoch``, its row."""
    config, estimate_only = run.config, state.estimating
    run.model.prompts.train()
    label = "estimate PRM" if estimate_only else "train"
    title = f"epoch {state.epoch + 1}/{config.optim.epochs} {label}"
    with run.reporter.bar(title, len(data.labels)) as advance:
        row = train_one_epoch(run.model, data, state, config, run.precision, advance, run.world)
    row = {**row, "lr": state.lr, "estimate_only": estimate_only}  # the lr after its steps
    if state.head_lr is not None:
        row["head_lr"] = state.head_lr
    state.epoch += 1
    return {"epoch": state.epoch, **row}


def _evaluate_epoch(run: Run, row: dict[str, Any]) -> float | None:
    """Validation every ``eval_every`` epochs and after the last; with ``select_on='test'``
    the test split after every training epoch (the official protocol). Returns the score."""
    config, score = run.config, None
    epoch = row["epoch"]
    if epoch % config.optim.resolved_eval_every() == 0 or epoch == config.optim.epochs:
        row["val_acc"] = score = _accuracy(run, run.val_images)
    if config.optim.select_on == "test":
        row["test_acc"] = score = _accuracy(run, run.test_images)
    return score


def _accuracy(run: Run, images: DecodedImages) -> float:
    batch = run.config.runtime.eval_batch_size
    return evaluate(run.model, images, batch, run.precision, world=run.world).accuracy


def _record(run: Run, state: RunState, row: dict[str, Any], curves: CurveWriter) -> None:
    row["time_s"] = time.perf_counter() - run.started
    state.history.append(row)
    run.reporter.line(_epoch_line(row))
    write_metrics(run.run_dir, state.history)
    curves.write(row)


def _epoch_line(row: dict[str, Any]) -> str:
    fields = [f"epoch {row['epoch']}", f"loss {row['loss']:.4f}"]
    for key in ("train_acc", "val_acc", "test_acc"):
        if key in row:
            fields.append(f"{key.replace('_', ' ')} {row[key]:.3f}")
    return "  ".join([*fields, f"{row['images_per_s']:.0f} img/s"])


def _finish(run: Run, state: RunState, checkpointer: Checkpointer) -> dict[str, Any]:
    """Test once with the selected state, then write the final checkpoint and results.json."""
    config, model, batch = run.config, run.model, run.config.runtime.eval_batch_size
    test = None
    if not config.runtime.skip_test:
        with run.reporter.bar("test", len(run.test_images)) as advance:
            test = evaluate(model, run.test_images, batch, run.precision, advance, run.world)
    val = evaluate(model, run.val_images, batch, run.precision, world=run.world)
    if not run.world.is_main:  # the others took part in the sharded evaluations; main writes
        return {}
    skipped = sorted(set(run.skipped) | set(_test_skipped(run)))
    results = _results(run, state, val, test, skipped)
    if skipped:
        run.reporter.line(f"skipped {len(skipped)} undecodable images (e.g. {skipped[0]})")
    state.epoch = config.optim.epochs
    checkpointer.save(state, finished=True)
    write_results(run.run_dir, results)
    selected = state.best["epoch"]
    run.reporter.line(
        f"{config.method.name} on {config.data.dataset}: val acc {val.accuracy:.4f}  "
        + (f"test acc {test.accuracy:.4f}" if test else "test not read (skip_test)")
        + (f"  (selected epoch {selected} on {config.optim.select_on})" if selected > 0 else "")
    )
    return results


def _test_skipped(run: Run) -> list[str]:
    return [] if run.config.runtime.skip_test else run.test_images.skipped


def _results(
    run: Run, state: RunState, val: Evaluation, test: Evaluation | None, skipped: list[str]
) -> dict[str, Any]:
    config, model, parts = run.config, run.model, run.parts
    classnames = parts.splits.classnames
    return {
        "method": config.method.name,
        "dataset": config.data.dataset,
        "seed": config.seed,
        "shots": config.data.shots,
        "epochs": config.optim.epochs,
        "backbone": parts.backbone.describe(),
        "select_on": config.optim.select_on,
        "selected_epoch": state.best["epoch"] if state.best["epoch"] > 0 else None,
        "val_accuracy": val.accuracy,
        "test_accuracy": test.accuracy if test else None,  # None: skip_test
        "per_class_accuracy": dict(zip(classnames, test.per_class, strict=True)) if test else {},
        "test_confusion": test.confusion.tolist() if test else None,
        "test_count": test.count if test else 0,
        "val_count": val.count,
        "train_count": len(parts.splits.train),
        "train_shots_per_class": shots_per_class(parts.splits.train, classnames, skipped),
        "skipped_images": len(skipped),
        "trainable_parameters": model.trainable_parameters,
        "head_parameters": model.head_parameter_count,
        "prompts": model.prompts.count if model.recipe.prompt.trains else 0,
        "description_sampling": model.bank.sampling,  # published | distinct | None (templates)
        "classnames": classnames,
        "descriptions": [file_record(spec) for spec in config.data.descriptions],
        "template_descriptions": model.bank.template,
        "wall_time_s": time.perf_counter() - run.started,
        "warnings": parts.warnings.messages,
        **({"stopped": run.stopped} if run.stopped else {}),
    }
