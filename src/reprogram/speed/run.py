"""``run_bench``: our engine and the reference-style loop, measured in one run on one device.

Phases (all on the same device, random backbone weights, a fresh cache folder):

1. **ours, end to end**: :func:`reprogram.engine.train.fit` on the dataset for ``epochs`` epochs
   (decoding, text features, training, validation, final test, checkpoints), timed; its
   training throughput per epoch comes from the run's metrics.
2. **the same batch through both**: logits (and fp32 prompt gradients) of our model and of the
   reference model built from it must agree; FLOPs of one training step of each
   (``FlopCounterMode``); training-step throughput of each on in-memory tensors (ours through
   the engine's own ``train_one_epoch``, without augmentation); our evaluation throughput.
3. **reference, end to end**: the official-structure loop (:mod:`reprogram.speed.reference`)
   for ``reference_epochs`` epochs, then projected to ``epochs`` (set-up + PRM epoch + the mean
   training epoch for the remaining ones), since the full reference run takes an hour on an H100.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from reprogram.errors import ReprogramError
from reprogram.model.precision import Precision
from reprogram.speed import measure
from reprogram.speed.reference import (
    FileImages,
    ReferenceModel,
    ReferenceOptimiser,
    compare_logits,
    reference_dtype,
    reference_fit,
    reference_transforms,
    train_step,
)
from reprogram.speed.synthetic import SyntheticSpec, description_files, write_dataset

SCHEMA = "reprogram-bench/1"
# The targets for the H100 configuration (ViT-B-16, dvp-cse, 47 classes, 752/1,692 images).
TARGET_END_TO_END_S = 180.0
TARGET_SPEEDUP = 20.0


@dataclass
class BenchOptions:
    backbone: str = "random:ViT-B-16"
    method: str = "dvp-cse"
    batch_size: int = 64
    classes: int = 47
    train_per_class: int = 16
    test_images: int = 1692
    image_size: int = 320  # side of the synthetic source JPEGs
    epochs: int = 200
    reference_epochs: int = (
        3  # measured reference epochs (PRM epoch + training epochs), then projected
    )
    steps: int = 20  # timed training steps for the step throughput
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    grad_checkpointing: bool = False
    skip_reference: bool = False
    data: str | None = None  # a class-per-folder dataset instead of synthetic JPEGs
    eval_batch_size: int = 256
    seed: int = 1

    def validate(self) -> BenchOptions:
        for name in (
            "batch_size",
            "classes",
            "train_per_class",
            "test_images",
            "image_size",
            "epochs",
            "steps",
            "eval_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ReprogramError(f"bench: {name} must be at least 1, got {getattr(self, name)}")
        if self.epochs < 2:
            raise ReprogramError(
                "bench: epochs must be at least 2 (epoch 1 only estimates the PRM)"
            )
        if not self.skip_reference and self.reference_epochs < 2:
            raise ReprogramError(
                "bench: reference_epochs must be at least 2 (a PRM epoch and a training epoch)"
            )
        from reprogram.model.methods import get_recipe

        if not get_recipe(self.method).trainable:
            raise ReprogramError(
                f"bench: method '{self.method}' trains nothing; pick a prompt method"
            )
        return self


@contextlib.contextmanager
def _environment(name: str, value: str):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _prepare_data(options: BenchOptions, tmp: Path) -> tuple[str, list[str], dict]:
    """(dataset spec, description files or [] for the defaults, dataset summary)."""
    from reprogram.engine.setup import default_description_files
    from reprogram.model.methods import get_recipe

    if options.data is None:
        spec = SyntheticSpec(
            classes=options.classes,
            train_per_class=options.train_per_class,
            val_per_class=min(options.train_per_class, 4),
            test_images=options.test_images,
            image_size=options.image_size,
            seed=options.seed,
        )
        started = time.perf_counter()
        root = write_dataset(tmp / "data", spec, workers=min(16, os.cpu_count() or 1))
        summary = {
            "source": f"synthetic JPEG {spec.image_size}x{spec.image_size}",
            "write_s": time.perf_counter() - started,
        }
        return f"folder:{root}", [], summary
    dataset = (
        options.data if options.data.startswith(("folder:", "csv:")) else f"folder:{options.data}"
    )
    recipe = get_recipe(options.method)
    try:
        files: list[str] = []
        default_description_files(recipe, dataset)
    except ReprogramError:  # no descriptions beside the images: synthetic ones (speed only)
        from reprogram.data import load_dataset

        names = load_dataset(dataset, None).classnames
        written = description_files(names, tmp / "descriptions", 25, options.seed)
        keys = {"causes": ["cse_1", "cse_2", "cse_3"], "attribute-pair": ["des", "dist"]}.get(
            recipe.texts, ["des"]
        )
        files = [str(written[k]) for k in keys]
    return dataset, files, {"source": dataset}


def _train_config(options: BenchOptions, dataset: str, descriptions: list[str]):
    from reprogram.engine.config import TrainConfig

    return TrainConfig(
        method=options.method,
        dataset=dataset,
        backbone=options.backbone,
        descriptions=descriptions,
        shots=options.train_per_class,
        seed=options.seed,
        epochs=options.epochs,
        batch_size=options.batch_size,
        eval_batch_size=options.eval_batch_size,
        device=options.device,
        precision=options.precision,
        compile=options.compile,
        grad_checkpointing=options.grad_checkpointing,
        quiet=True,
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

    optimizer = torch.optim.SGD(model.prompt_parameters(), lr=config.lr, momentum=config.momentum)
    scheduler = cosine_schedule(optimizer, 10 * options.steps)
    scaler = Precision.of(dtype, device).grad_scaler()
    model.prompts.train()

    def epoch(train_data: TrainData, index: int) -> dict:
        return train_one_epoch(
            model,
            train_data,
            optimizer,
            scheduler,
            scaler,
            config,
            index,
            dtype,
            lambda n=1, **_: None,
        )

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


def run_bench(
    options: BenchOptions | None = None,
    *,
    json_path: str | Path | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    **overrides,
) -> dict:
    """Benchmark our engine against the reference-style loop; returns (and writes) the results."""
    from reprogram.engine.setup import load_data, prepare
    from reprogram.engine.train import fit
    from reprogram.model.precision import resolve_device, resolve_precision

    options = dataclasses.replace(options or BenchOptions(), **overrides).validate()
    say = log or (lambda _text: None)
    device = resolve_device(options.device)
    ours_dtype = resolve_precision(options.precision, device)
    ref_dtype = reference_dtype(device)
    import open_clip

    start_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result: dict = {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "device": measure.device_name(device),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "options": dataclasses.asdict(options),
        "precision": {"ours": _dtype_name(ours_dtype), "reference": _dtype_name(ref_dtype)},
    }
    with tempfile.TemporaryDirectory(prefix="reprogram-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with _environment("REPROGRAM_CACHE", str(tmp / "cache")):
            say("writing the dataset" if options.data is None else f"using {options.data}")
            dataset, descriptions, summary = _prepare_data(options, tmp)
            config = _train_config(options, dataset, descriptions)
            splits = load_data(config)
            summary.update(
                classes=len(splits.classnames),
                train_images=len(splits.train),
                val_images=len(splits.val),
                test_images=len(splits.test),
            )
            result["dataset"] = summary
            say("timing a large matmul")
            result["matmul_peak"] = measure.matmul_peak(device, ours_dtype)
            say(f"ours: {options.epochs} epochs end to end")
            result["ours"] = _ours_end_to_end(config, tmp / "run", device, fit)
            say("ours vs reference on the same batch; step throughput")
            result.update(
                _same_batch_phase(options, config, splits, device, ours_dtype, ref_dtype, prepare)
            )
            if not options.skip_reference:
                say(
                    f"reference: {min(options.reference_epochs, options.epochs)} epochs, "
                    f"projected to {options.epochs}"
                )
                result["reference"].update(
                    _reference_end_to_end(options, config, splits, device, ref_dtype, tmp)
                )
    if hasattr(os, "getloadavg"):  # CPU figures on a shared machine need this context
        result["load_average_1min"] = {"start": start_load, "end": os.getloadavg()[0]}
    _derive(result, options)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _ours_end_to_end(config, run_dir: Path, device, fit) -> dict:
    with measure.PeakMemory(device) as memory:
        started = time.perf_counter()
        results = fit(dataclasses.replace(config), run_dir)
        measure.synchronize(device)
        wall = time.perf_counter() - started
    rows = [r for r in _read_metrics(run_dir) if not r.get("estimate_only")]
    rates = [r["images_per_s"] for r in rows]
    return {
        "end_to_end_s": wall,
        "epochs": config.epochs,
        "train_epoch_images_per_s": statistics.median(rates) if rates else None,
        "first_train_epoch_s": rows[0]["train_time_s"] if rows else None,
        "epoch_images_per_s": rates,
        "peak_memory_bytes": memory.peak_bytes,
        "memory_kind": memory.kind,
        "test_accuracy": results.get("test_accuracy"),
    }


def _same_batch_phase(options, config, splits, device, ours_dtype, ref_dtype, prepare) -> dict:
    parts = prepare(dataclasses.replace(config, compile=False))
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
    optimiser = ReferenceOptimiser.build(reference, config.lr, config.momentum, 10 * options.steps)
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


def _reference_end_to_end(options, config, splits, device, ref_dtype, tmp: Path) -> dict:
    from reprogram.backbones import TextFeatureCache
    from reprogram.engine.setup import build_backbone, build_model

    measured_epochs = min(options.reference_epochs, options.epochs)
    with measure.PeakMemory(device) as memory:
        started = time.perf_counter()
        reference_config = dataclasses.replace(config, compile=False, grad_checkpointing=False)
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
            lr=config.lr,
            momentum=config.momentum,
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


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def _derive(result: dict, options: BenchOptions) -> None:
    """Ratios, MFU and the targets from the raw figures."""
    ours, ref = result["ours"], result.get("reference", {})
    step = result.pop("ours_step")
    ours["train_step_images_per_s"] = step["train_step"]["images_per_s"]
    ours["train_step"] = step["train_step"]
    ours["eval_images_per_s"] = step["eval"]["images_per_s"]
    ref["train_step_images_per_s"] = ref.get("train_step", {}).get("images_per_s")
    peak = result["matmul_peak"]["flops_per_s"]
    flops = result["flops"]
    ours["mfu"] = flops["ours_per_image"] * ours["train_step_images_per_s"] / peak
    if ref.get("train_step_images_per_s"):
        ref["mfu"] = flops["reference_per_image"] * ref["train_step_images_per_s"] / peak
    result["ratios"] = {
        "train_step": _ratio(ours["train_step_images_per_s"], ref.get("train_step_images_per_s")),
        "train_epoch": _ratio(
            ours.get("train_epoch_images_per_s"), ref.get("train_epoch_images_per_s")
        ),
        "eval": _ratio(ours.get("eval_images_per_s"), ref.get("eval_images_per_s")),
        "end_to_end_speedup": _ratio(ref.get("end_to_end_s"), ours["end_to_end_s"]),
    }
    speedup = result["ratios"]["end_to_end_speedup"]
    result["targets"] = {
        "end_to_end_s_max": TARGET_END_TO_END_S,
        "speedup_min": TARGET_SPEEDUP,
        "note": "targets of the H100 configuration (ViT-B-16, dvp-cse, 47 classes, "
        "752/1,692 images, "
        "batch 64, 200 epochs)",
        "end_to_end_met": ours["end_to_end_s"] < TARGET_END_TO_END_S,
        "speedup_met": None if speedup is None else speedup >= TARGET_SPEEDUP,
    }


def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "s":
        return f"{value:.1f} s" if value < 600 else f"{value / 60:.1f} min"
    if kind == "rate":
        return f"{value:,.1f}"
    if kind == "bytes":
        return f"{value / 2**30:.2f} GiB"
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "x":
        return f"{value:.2f}x"
    return str(value)


def format_table(result: dict) -> str:
    """The results as a plain-text table (and a few lines around it)."""
    ours, ref, ratios = result["ours"], result.get("reference", {}), result["ratios"]
    projected = " (projected)" if ref.get("projected") else ""
    rows = [
        (
            "training images/s, step (in memory)",
            ours["train_step_images_per_s"],
            ref.get("train_step_images_per_s"),
            "rate",
            ratios["train_step"],
        ),
        (
            "training images/s, epoch (as run)",
            ours.get("train_epoch_images_per_s"),
            ref.get("train_epoch_images_per_s"),
            "rate",
            ratios["train_epoch"],
        ),
        (
            "evaluation images/s (as run)",
            ours.get("eval_images_per_s"),
            ref.get("eval_images_per_s"),
            "rate",
            ratios["eval"],
        ),
        (
            f"end to end, {result['options']['epochs']} epochs{projected}",
            ours["end_to_end_s"],
            ref.get("end_to_end_s"),
            "s",
            None if ratios["end_to_end_speedup"] is None else 1 / ratios["end_to_end_speedup"],
        ),
        (
            f"peak memory ({ours['memory_kind']})",
            ours["peak_memory_bytes"],
            ref.get("peak_memory_bytes"),
            "bytes",
            _ratio(ours["peak_memory_bytes"], ref.get("peak_memory_bytes")),
        ),
        (
            "model FLOP utilisation (step)",
            ours["mfu"],
            ref.get("mfu"),
            "pct",
            _ratio(ours["mfu"], ref.get("mfu")),
        ),
    ]
    width = max(len(r[0]) for r in rows) + 2
    options, data, precision = result["options"], result["dataset"], result["precision"]
    lines = [
        f"reprogram bench  {result['device']}  torch {result['torch']}",
        f"{options['backbone']}  {options['method']}  batch {options['batch_size']}  "
        f"{data.get('train_images')} train / {data.get('test_images')} test images  "
        f"ours {precision['ours']}{' + compile' if options['compile'] else ''}"
        f"{' + checkpointing' if options['grad_checkpointing'] else ''}, "
        f"reference {precision['reference']}",
        "",
        f"{'':{width}}{'ours':>14}{'reference':>14}{'ours/ref':>10}",
    ]
    for name, a, b, kind, ratio in rows:
        lines.append(f"{name:{width}}{_fmt(a, kind):>14}{_fmt(b, kind):>14}{_fmt(ratio, 'x'):>10}")
    flops = result["flops"]
    peak = result["matmul_peak"]
    lines += [
        "",
        "FLOPs per training image (forward + input-gradient backward): "
        f"ours {flops['ours_per_image'] / 1e9:.2f} G, "
        f"reference {flops['reference_per_image'] / 1e9:.2f} G "
        f"({flops['ours_per_image_prompt'] / 1e9:.2f} G per image-prompt)",
        f"matmul peak {peak['flops_per_s'] / 1e12:.2f} TFLOP/s ({peak['dtype']}, {peak['size']}^3)",
    ]
    if ratios["end_to_end_speedup"] is not None:
        lines.append(f"end-to-end speed-up over the reference: {ratios['end_to_end_speedup']:.1f}x")
    for check in result["equivalence"]:
        grad = (
            f", prompt gradients {check['grad_relative']:.1e}"
            if check["grad_relative"] is not None
            else ""
        )
        lines.append(
            f"same batch, {check['precision']}: logits differ by {check['max_abs_diff']:.2e} "
            f"(relative {check['relative']:.1e}{grad}; tolerance {check['tolerance']:.0e}) "
            + ("PASS" if check["passed"] else "FAIL")
        )
    grads = result["frozen_backbone"]["parameters_with_gradients"]
    lines.append(
        "backbone parameters with gradients: " + (", ".join(grads[:5]) if grads else "none")
    )
    load = result.get("load_average_1min")
    if load:
        lines.append(
            f"load average (1 min) at start / end: {load['start']:.1f} / {load['end']:.1f}"
        )
    return "\n".join(lines)
