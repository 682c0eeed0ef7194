"""``reprogram bench --scale``: an ImageNet-sized few-shot task through the engine's parts.

A synthetic task (by default 1,000 classes, 16 shots, 50,000 test JPEGs at 224 px, 3 cause files
of 20 descriptions per class = 60 texts per class, the 224-px ``tiny`` backbone) goes through the
steps of a run one by one, each timed with the process's peak host memory (and the device's
peak where there is a GPU): listing the files, loading the backbone, encoding the texts,
decoding the training images (bucketed), decoding the test images, one training epoch and one
evaluation of the test set. Every one-time step shows a progress bar on a terminal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from reprogram.speed import measure
from reprogram.speed.options import SyntheticRunOptions
from reprogram.speed.synthetic import write_dataset
from reprogram.storage.cache import Cache

SCHEMA = "reprogram-bench-scale/1"
TARGET_HOST_BYTES = 12 * 10**9  # the target on the 2-core, 24 GB development machine


@dataclass(frozen=True)
class ScaleOptions(SyntheticRunOptions):
    backbone: str = "random:tiny-224"
    classes: int = 1000
    test_images: int = 50_000
    image_size: int = 224  # side of the synthetic JPEGs
    device: str = "cpu"
    precision: str = "auto"  # fp32 on the CPU (the preset), bf16 autocast on GPUs
    descriptions_per_class: int = 20  # per cause file (m); DVP-cse's 3 files: 60 per class

    LABEL: ClassVar[str] = "bench --scale"
    POSITIVE: ClassVar[tuple[str, ...]] = (
        *SyntheticRunOptions.POSITIVE,
        "descriptions_per_class",
    )


def host_peak_bytes() -> int:
    """The process's peak resident memory so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Steps:
    """Times steps and records the host (and device) peak memory of each."""

    def __init__(self, device: torch.device, reporter, log: Callable[[str], None]) -> None:
        self.device, self.reporter, self.log = device, reporter, log
        self.rows: list[dict] = []

    def run(self, name: str, total: int, work: Callable):
        """``work(advance)`` under a progress bar of ``total`` items (0: no bar)."""
        self.log(f"{name} ({total:,} items)" if total else name)
        with measure.PeakMemory(self.device) as memory, self.reporter.bar(name, total) as advance:
            started = time.perf_counter()
            value = work(advance)
            measure.synchronize(self.device)
            seconds = time.perf_counter() - started
        row = {"step": name, "seconds": seconds, "items": total}
        row["items_per_s"] = total / seconds if total and seconds > 0 else None
        row["host_peak_bytes"] = memory.peak_bytes if self.device.type != "cuda" else None
        row["device_peak_bytes"] = memory.peak_bytes if self.device.type == "cuda" else None
        self.rows.append(row)
        self.log(f"{name}: {seconds:.1f} s, peak host {_gib(host_peak_bytes())} so far")
        return value


def run_scale(
    options: ScaleOptions | None = None,
    *,
    json_path: str | Path | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    quiet: bool = False,
    **overrides,
) -> dict:
    """Run the scale benchmark; returns (and writes to ``json_path``) its figures."""
    from reprogram.engine.progress import Reporter

    options = dataclasses.replace(options or ScaleOptions(), **overrides).validate()
    from reprogram.model.precision import resolve_device

    device = resolve_device(options.device)
    steps = Steps(device, Reporter(quiet), log or (lambda _text: None))
    result = measure.record_header(
        SCHEMA, device, command=command, options=dataclasses.asdict(options)
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reprogram-scale-") as tmp_name:
        tmp = Path(tmp_name)
        with Cache(tmp / "cache").activate():
            result.update(_steps(options, tmp, device, steps))
    result["steps"] = steps.rows
    result["total_s"] = time.perf_counter() - started
    step_peaks = [r["host_peak_bytes"] or 0 for r in steps.rows]
    result["host_peak_bytes"] = max([host_peak_bytes(), *step_peaks])
    device_peaks = [r["device_peak_bytes"] for r in steps.rows if r["device_peak_bytes"]]
    result["device_peak_bytes"] = max(device_peaks) if device_peaks else None
    result["target_host_bytes"] = TARGET_HOST_BYTES
    result["host_target_met"] = result["host_peak_bytes"] < TARGET_HOST_BYTES
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _steps(options: ScaleOptions, tmp: Path, device: torch.device, steps: Steps) -> dict:
    from reprogram.data.images import decode_center, decode_short_side_buckets
    from reprogram.engine.batches import TrainData
    from reprogram.engine.evaluate import evaluate
    from reprogram.engine.setup import build_backbone, build_model, default_description_files
    from reprogram.engine.state import RunState
    from reprogram.engine.train import cosine_schedule, train_one_epoch
    from reprogram.model.methods import build_text_bank, get_recipe
    from reprogram.model.precision import Precision

    spec = options.spec(val_per_class=1, descriptions_per_class=options.descriptions_per_class)
    root = steps.run(
        "write synthetic JPEGs (not an engine step)",
        0,
        lambda _: write_dataset(tmp / "data", spec, workers=min(8, os.cpu_count() or 1)),
    )
    config = options.train_config(
        f"folder:{root}", epochs=2, device=str(device), m=options.descriptions_per_class
    )
    from reprogram.engine.setup import load_data

    splits = steps.run("list files and draw shots", 0, lambda _: load_data(config))
    backbone = steps.run("load backbone", 0, lambda _: build_backbone(config))
    recipe = get_recipe(config.method.name)
    from reprogram.text.descriptions import read_description_file

    files = default_description_files(recipe, config.data.dataset)
    descriptions = [(f, read_description_file(f)) for f in files]
    bank = build_text_bank(
        recipe, splits.classnames, descriptions, config.method.options(), config.seed
    )
    texts = bank.flat()
    steps.run(
        "encode texts", len(texts), lambda advance: backbone.encode_text(texts, progress=advance)
    )
    model = steps.run(
        "build model (text features from the cache)",
        0,
        lambda _: build_model(config, backbone, splits.classnames, bank),
    )
    size = model.image_size

    def decode_train(advance) -> TrainData:
        decoded = decode_short_side_buckets(splits.train, size, progress=advance)
        return TrainData.bucketed(decoded, size, device)

    data = steps.run("decode training images", len(splits.train), decode_train)
    test = steps.run(
        "decode test images",
        len(splits.test),
        lambda advance: decode_center(splits.test, size, progress=advance),
    )
    precision = Precision.resolve(config.backbone.precision, device)
    optimizer = torch.optim.SGD(
        model.prompt_parameters(), lr=config.optim.lr, momentum=config.optim.momentum
    )
    scheduler = cosine_schedule(optimizer, -(-len(data.labels) // config.optim.batch_size))
    model.prompts.train()
    epoch = steps.run(
        "one training epoch",
        len(data.labels),
        lambda advance: train_one_epoch(
            model, data, RunState(optimizer, scheduler, epoch=1), config, precision, advance
        ),
    )
    evaluation = steps.run(
        "evaluate the test set",
        len(test),
        lambda advance: evaluate(model, test, config.runtime.eval_batch_size, precision, advance),
    )
    own = int((3 * data.sizes[:, 0] * data.sizes[:, 1]).sum())
    return {
        "dataset": {
            "classes": len(splits.classnames),
            "train_images": len(splits.train),
            "test_images": len(splits.test),
            "texts": len(texts),
            "texts_per_class": bank.per_class,
            "model_image_size": size,
        },
        "train_pixels": {
            "stored_bytes": data.nbytes,
            "images_bytes": own,
            "ratio": data.nbytes / max(own, 1),
            "buckets": len(data.buckets),
        },
        "test_pixels_bytes": test.pixels.numel(),
        "epoch": {k: v for k, v in epoch.items() if k in ("images_per_s", "train_time_s")},
        "test_accuracy": evaluation.accuracy,
    }


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"


def format_scale(result: dict) -> str:
    """The figures as a plain-text table."""
    data, options = result["dataset"], result["options"]
    lines = [
        f"reprogram bench --scale  {result['device']}  torch {result['torch']}",
        f"{options['backbone']}  {options['method']}  {data['classes']} classes  "
        f"{data['train_images']} train / {data['test_images']} test images  "
        f"{data['texts']} texts ({data['texts_per_class']} per class)  "
        f"model images {data['model_image_size']} px",
        "",
        f"{'step':44}{'time':>10}{'items/s':>12}{'peak host':>12}{'peak device':>13}",
    ]
    for row in result["steps"]:
        rate = f"{row['items_per_s']:,.0f}" if row["items_per_s"] else "-"
        lines.append(
            f"{row['step']:44}{row['seconds']:>9.1f}s{rate:>12}"
            f"{_gib(row['host_peak_bytes']):>12}{_gib(row['device_peak_bytes']):>13}"
        )
    pixels = result["train_pixels"]
    lines += [
        "",
        f"training pixels stored: {_gib(pixels['stored_bytes'])} for "
        f"{_gib(pixels['images_bytes'])} of images ({pixels['ratio']:.3f}x, "
        f"{pixels['buckets']} size buckets); test pixels {_gib(result['test_pixels_bytes'])}",
        f"process peak host memory {_gib(result['host_peak_bytes'])} "
        f"(target under {result['target_host_bytes'] / 1e9:.0f} GB: "
        f"{'met' if result['host_target_met'] else 'NOT met'}); "
        f"peak device memory {_gib(result['device_peak_bytes'])}; total {result['total_s']:.0f} s",
    ]
    return "\n".join(lines)
