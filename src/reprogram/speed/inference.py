"""Evaluation throughput by method: the training-time model and its folded export side by side.

For each method named in the bench's ``eval_methods`` (e.g. ``dvp-cse,ar``): its model is built
on the bench's dataset with random prompts and aggregation weights, the test split is decoded
once, then the images/s of the engine's evaluation (prompts → encoder → description scores →
aggregation) and of the folded model (:class:`~reprogram.export.ExportedModel`: prompts →
encoder → one D×C matrix per prompt) are timed: the median of 3 passes after a warm-up pass each.
A method with v prompts runs the encoder v times per image either way; the fold removes the
scoring of C·M texts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from reprogram.errors import ReprogramError
from reprogram.speed import measure


def parse_methods(text: str) -> list[str]:
    """``"rvp, dvp-cse"`` -> ``["rvp", "dvp-cse"]`` (each a registered method)."""
    from reprogram.model.methods import get_recipe

    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        get_recipe(name)
    return names


def _timed(run: Callable[[], object], count: int, device: torch.device, repeats: int = 3) -> dict:
    """Images/s of ``run`` (``count`` images per call): the median of ``repeats`` timed calls
    after an untimed warm-up (a loaded machine disturbs single passes)."""
    run()  # warm-up
    times = []
    for _ in range(repeats):
        measure.synchronize(device)
        started = time.perf_counter()
        run()
        measure.synchronize(device)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"images_per_s": count / max(seconds, 1e-9), "seconds": seconds, "repeats": repeats}


def method_throughput(model, images, batch_size: int, precision: str, seed: int) -> dict:
    """One method's row: prompts, both throughputs and how far the folded logits are from the
    model's (max |difference| / max |logit|, fp32 maths after the encoder)."""
    from reprogram.data.images import as_float
    from reprogram.engine.evaluate import batches, predict_logits
    from reprogram.export import ExportedModel
    from reprogram.model.fold import NotFoldable
    from reprogram.model.precision import resolve_precision
    from reprogram.speed.phases import _randomise

    _randomise(model, seed)
    model.eval()
    device = model.text_features.device
    dtype = resolve_precision(precision, device)
    row = {"method": model.recipe.name, "prompts": model.prompts.count, "images": len(images)}
    logits = {}

    def engine() -> None:
        logits["model"] = predict_logits(model, images, batch_size, dtype)

    row["model"] = _timed(engine, len(images), device)
    try:
        folded = ExportedModel.from_reprogrammer(model, precision=precision)
    except NotFoldable as err:
        row["folded"] = None
        row["not_foldable"] = str(err)
        return row

    def fold() -> None:
        parts = [
            folded(as_float(images.pixels[start:stop].to(device)))
            for start, stop in batches(len(images), batch_size)
        ]
        logits["folded"] = torch.cat(parts)

    row["folded"] = _timed(fold, len(images), device)
    scale = float(logits["model"].abs().max().clamp_min(1e-12))
    row["folded_relative_diff"] = float((logits["folded"] - logits["model"]).abs().max()) / scale
    return row


def eval_throughput_phase(
    methods: Sequence[str], options, dataset: str, tmp: Path, device, say=None
) -> list[dict]:
    """Rows of :func:`method_throughput` for ``methods`` on the bench's ``dataset``."""
    from reprogram.data.images import decode_center
    from reprogram.engine.setup import prepare
    from reprogram.speed.options import method_descriptions

    rows = []
    for method in methods:
        if say is not None:
            say(f"evaluation throughput: {method}, model and folded")
        descriptions = method_descriptions(method, dataset, tmp / f"descriptions-{method}", options)
        config = options.train_config(dataset, method=method, descriptions=descriptions, epochs=0)
        try:
            parts = prepare(config)
        except ReprogramError as err:
            raise ReprogramError(f"bench: eval method '{method}': {err}") from err
        images = decode_center(parts.splits.test, parts.model.image_size)
        rows.append(
            method_throughput(
                parts.model, images, options.eval_batch_size, options.precision, options.seed
            )
        )
        del parts
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows
