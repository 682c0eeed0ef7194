"""``run_bench``: our engine and the reference-style loop, measured in one run on one device.

Phases (all on the same device, random backbone weights, a fresh cache folder):

1. **ours, end to end**: :func:`reprogram.engine.train.fit` on the dataset for ``epochs`` epochs
   (decoding, text features, training, validation, final test, checkpoints), timed; its
   training throughput per epoch comes from the run's metrics.
2. **the same batch through both**: logits (and fp32 prompt gradients) of our model and of the
   reference model built from it must agree; FLOPs of one training step of each
   (``FlopCounterMode``); training-step throughput of each on in-memory tensors (ours through
   the engine's own ``train_one_epoch``, without augmentation); our evaluation throughput.
3. **evaluation by method** (``eval_methods``, optional): images/s of each named method's
   model and of its folded export, side by side (:mod:`reprogram.speed.inference`);
4. **reference, end to end**: the official-structure loop (:mod:`reprogram.speed.reference`)
   for ``reference_epochs`` epochs, then projected to ``epochs`` (set-up + PRM epoch + the mean
   training epoch for the remaining ones), since the full reference run takes an hour on an H100.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from reprogram.speed import measure, phases
from reprogram.speed.inference import eval_throughput_phase, parse_methods
from reprogram.speed.options import BenchOptions, prepare_data, train_config
from reprogram.speed.reference import reference_dtype
from reprogram.speed.report import derive, format_table
from reprogram.storage.cache import Cache

__all__ = ["SCHEMA", "BenchOptions", "format_table", "run_bench"]

SCHEMA = "reprogram-bench/1"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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
    result = measure.record_header(
        SCHEMA,
        device,
        command=command,
        open_clip=open_clip.__version__,
        options=dataclasses.asdict(options),
        precision={"ours": _dtype_name(ours_dtype), "reference": _dtype_name(ref_dtype)},
    )
    with tempfile.TemporaryDirectory(prefix="reprogram-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with Cache(tmp / "cache").activate():
            say("writing the dataset" if options.data is None else f"using {options.data}")
            dataset, descriptions, summary = prepare_data(options, tmp)
            config = train_config(options, dataset, descriptions)
            splits = load_data(config)
            summary.update(
                classes=len(splits.classnames),
                train_images=len(splits.train),
                val_images=len(splits.val),
                test_images=len(splits.test),
            )
            result["dataset"] = summary
            say("timing a large matmul")
            result["matmul_peak"] = measure.matmul_peak(
                device, ours_dtype, seconds=options.peak_seconds
            )
            say(f"ours: {options.epochs} epochs end to end")
            result["ours"] = phases.ours_end_to_end(config, tmp / "run", device, fit)
            say("ours vs reference on the same batch; step throughput")
            result.update(
                phases.same_batch_phase(
                    options, config, splits, device, ours_dtype, ref_dtype, prepare
                )
            )
            methods = parse_methods(options.eval_methods)
            if methods:
                result["eval_by_method"] = eval_throughput_phase(
                    methods, options, dataset, tmp, device, say
                )
            if not options.skip_reference:
                say(
                    f"reference: {min(options.reference_epochs, options.epochs)} epochs, "
                    f"projected to {options.epochs}"
                )
                result["reference"].update(
                    phases.reference_end_to_end(options, config, splits, device, ref_dtype, tmp)
                )
    if hasattr(os, "getloadavg"):  # CPU figures on a shared machine need this context
        result["load_average_1min"] = {"start": start_load, "end": os.getloadavg()[0]}
    derive(result, options)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result
