"""The bench's three phases on one device (see :mod:`reprogram.speed.run`): ours end to end,
the same batch through both models, the reference end to end."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from reprogram.model.precision import Precision
from reprogram.speed import measure
from reprogram.speed.options import BenchOptions
from reprogram.speed.reference import (
    FileImages,
    ReferenceModel,
    ReferenceOptimiser,
    compare_logits,
    reference_fit,
    reference_transforms,
    train_step,
)


def _read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if path.is_file()
        else []
    )


def _randomise(model, seed: int) -> None:
    """Non-trivial prompts and PRM weights, so that the logit check means something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        theta = model.prompts.theta
        theta.copy_(torch.randn(theta.shape, generator=generator).to(theta.device))
        prm = getattr(model.aggregator, "prm", None)
        if prm is not None:
            weights = torch.rand(prm.weights.shape, generator=generator) + 0.05
            prm.weights.copy_((weights / weights.sum(dim=1, keepdim=True)).to(prm.weights.device))


def _ours_step_throughput(
    model, options: BenchOptions, config, device, dtype
) -> measure.Throughput:
    """The engine's own ``train_one_epoch`` on in-memory uint8 images of the final size, without
    augmentation, like the reference's step on ready tensors (the epochs as run include it)."""
    from reprogram.engine.state import RunState
    from reprogram.engine.train import TrainData, cosine_schedule, train_one_epoch

    size, batch = model.image_size, options.batch_size

    def data(count: int) -> TrainData:
        generator = torch.Generator().manual_seed(options.seed)
        pixels = torch.randint(
            0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator
        )
        labels = torch.arange(count) % model.bank.num_classes
        return TrainData(
            pixels.to(device), torch.full((count, 2), size), labels.to(device), False, size, []
        )

    optimizer = torch.optim.SGD(
        model.prompt_parameters(), lr=config.optim.lr, momentum=config.optim.momentum
    )
    scheduler = cosine_schedule(optimizer, 10 * options.steps)
    scaler = Precision.of(dtype, device).grad_scaler()
    model.prompts.train()

    def epoch(train_data: TrainData, index: int) -> dict:
        state = RunState(optimizer, scheduler, scaler, epoch=index)
        return train_one_epoch(model, train_data, state, config, dtype)

    started = time.perf_counter()
    epoch(data(2 * batch), 0)  # warm-up (and compilation)
    first = time.perf_counter() - started
    row = epoch(data(options.steps * batch), 1)
    return measure.Throughput(row["images_per_s"], row["train_time_s"], options.steps, first)


def _ours_eval_throughput(model, samples, options: BenchOptions, device, dtype) -> dict:
    from reprogram.data.images import decode_center
    from reprogram.engine.evaluate import evaluate

    images = decode_center(samples, model.image_size)
    evaluate(model, images, options.eval_batch_size, dtype)  # warm-up (and compilation)
    measure.synchronize(device)
    started = time.perf_counter()
    evaluate(model, images, options.eval_batch_size, dtype)
    seconds = time.perf_counter() - started
    return {
        "images_per_s": len(images) / max(seconds, 1e-9),
        "seconds": seconds,
        "images": len(images),
    }


def _reference_batch(samples, size: int, count: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` test images through the reference's test transform."""
    _, test_tf = reference_transforms(size)
    dataset = FileImages(samples[:count], test_tf)
    pairs = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([p[0] for p in pairs]).to(device)
    return images, torch.tensor([p[1] for p in pairs], device=device)


def ours_end_to_end(config, run_dir: Path, device, fit) -> dict:
    with measure.PeakMemory(device) as memory:
        started = time.perf_counter()
        results = fit(config.updated(), run_dir)
        measure.synchronize(device)
        wall = time.perf_counter() - started
    rows = [r for r in _read_metrics(run_dir) if not r.get("estimate_only")]
    rates = [r["images_per_s"] for r in rows]
    return {
        "end_to_end_s": wall,
        "epochs": config.optim.epochs,
        "train_epoch_images_per_s": statistics.median(rates) if rates else None,
        "first_train_epoch_s": rows[0]["train_time_s"] if rows else None,
        "epoch_images_per_s": rates,
        "peak_memory_bytes": memory.peak_bytes,
        "memory_kind": memory.kind,
        "test_accuracy": results.get("test_accuracy"),
    }


def same_batch_phase(options, config, splits, device, ours_dtype, ref_dtype, prepare) -> dict:
    parts = prepare(config.updated(compile=False))
    model = parts.model
    backbone = model.backbone
    _randomise(model, options.seed)
    reference = ReferenceModel.from_reprogrammer(model).to(device)
    images, labels = _reference_batch(
        splits.test, model.image_size, min(options.batch_size, 8), device
    )
    checks = compare_logits(model, reference, images, labels, device, ours_dtype)
    if (
        options.grad_checkpointing
    ):  # FLOPs without recomputation; the official scripts do not checkpoint
        backbone.set_grad_checkpointing(False)

    batch = options.batch_size
    generator = torch.Generator().manual_seed(options.seed)
    step_images = torch.rand(
        (batch, 3, model.image_size, model.image_size), generator=generator
    ).to(device)
    step_labels = (torch.arange(batch) % model.bank.num_classes).to(device)
    ours_flops = measure.count_flops(
        measure.ours_step_fn(model, step_images, step_labels, ours_dtype)
    )
    weight_grads = measure.weight_gradients(backbone)

    def reference_flop_step() -> None:
        reference.zero_grad(set_to_none=True)
        with Precision.of(ref_dtype, device).everywhere():
            logits, _ = reference(step_images)
            loss = torch.nn.functional.cross_entropy(logits, step_labels)
        loss.backward()

    ref_flops = measure.count_flops(reference_flop_step)
    optimiser = ReferenceOptimiser.build(
        reference, config.optim.lr, config.optim.momentum, 10 * options.steps
    )
    ref_step = measure.time_steps(
        lambda: train_step(reference, optimiser, step_images, step_labels, device, ref_dtype),
        batch,
        options.steps,
        device,
    )
    if options.grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    reference = optimiser = None  # the closures above hold them; free them now
    if options.compile:
        model.enable_compile()
    ours_step = _ours_step_throughput(model, options, config, device, ours_dtype)
    ours_eval = _ours_eval_throughput(model, splits.test, options, device, ours_dtype)
    prompts = model.prompts.count
    out = {
        "equivalence": [c.to_dict() for c in checks],
        "equivalence_passed": all(c.passed for c in checks),
        "frozen_backbone": {"parameters_with_gradients": weight_grads},
        "flops": {
            "ours_per_image": ours_flops / batch,
            "reference_per_image": ref_flops / batch,
            "ours_per_image_prompt": ours_flops / batch / prompts,
            "prompts": prompts,
        },
    }
    out["ours_step"] = {"train_step": ours_step.to_dict(), "eval": ours_eval}
    out["reference"] = {"train_step": ref_step.to_dict()}
    del model, parts, backbone
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def reference_end_to_end(options, config, splits, device, ref_dtype, tmp: Path) -> dict:
    from reprogram.backbones import TextFeatureCache
    from reprogram.engine.setup import build_backbone, build_model

    measured_epochs = min(options.reference_epochs, options.epochs)
    with measure.PeakMemory(device) as memory:
        started = time.perf_counter()
        reference_config = config.updated(compile=False, grad_checkpointing=False)
        backbone = build_backbone(reference_config)
        backbone.text_cache = TextFeatureCache(
            tmp / "reference-text"
        )  # no help from our run's cache
        model = build_model(reference_config, backbone, splits.classnames)
        reference = ReferenceModel.from_reprogrammer(model).to(device)
        del model
        measure.synchronize(device)
        setup_s = time.perf_counter() - started
        run = reference_fit(
            reference,
            splits.train,
            splits.test,
            epochs=measured_epochs,
            total_epochs=options.epochs,
            batch_size=options.batch_size,
            lr=config.optim.lr,
            momentum=config.optim.momentum,
            seed=options.seed,
            device=device,
            dtype=ref_dtype,
        )
    rows = run.epoch_rows
    training = [r for r in rows if not r["estimate_only"]]
    per_epoch = statistics.mean(r["epoch_s"] for r in training)
    measured = setup_s + sum(r["epoch_s"] for r in rows)
    projected = setup_s + rows[0]["epoch_s"] + (options.epochs - 1) * per_epoch
    return {
        "setup_s": setup_s,
        "epochs_measured": measured_epochs,
        "measured_s": measured,
        "end_to_end_s": measured if measured_epochs >= options.epochs else projected,
        "projected": measured_epochs < options.epochs,
        "prm_epoch_s": rows[0]["epoch_s"],
        "train_epoch_s": per_epoch,
        "train_epoch_images_per_s": statistics.median(r["train_images_per_s"] for r in training),
        "eval_images_per_s": statistics.median(r["test_images_per_s"] for r in rows),
        "peak_memory_bytes": memory.peak_bytes,
        "memory_kind": memory.kind,
        "epoch_rows": rows,
    }
