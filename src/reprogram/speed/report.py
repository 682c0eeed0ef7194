"""The bench's report: ratios, MFU and targets derived from the raw figures, and the table."""

from __future__ import annotations

import math

from reprogram.speed.options import BenchOptions

# The targets for the H100 configuration (ViT-B-16, dvp-cse, 47 classes, 752/1,692 images).
TARGET_END_TO_END_S = 180.0
TARGET_SPEEDUP = 20.0


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def derive(result: dict, options: BenchOptions) -> None:
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


def fmt(value, kind: str = "") -> str:
    """One figure as printed: ``s`` seconds, ``rate``, ``bytes`` (GiB), ``pct``, ``x`` (ratio)."""
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
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


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
        lines.append(f"{name:{width}}{fmt(a, kind):>14}{fmt(b, kind):>14}{fmt(ratio, 'x'):>10}")
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
    lines += format_rows(result.get("eval_by_method", []))
    load = result.get("load_average_1min")
    if load:
        lines.append(
            f"load average (1 min) at start / end: {load['start']:.1f} / {load['end']:.1f}"
        )
    return "\n".join(lines)


def format_rows(rows: list[dict]) -> list[str]:
    """The table's lines: per method, prompts and evaluation images/s, model and folded."""
    if not rows:
        return []
    width = max(len(r["method"]) for r in rows) + 2
    lines = [
        "",
        "evaluation images/s by method (test split)",
        f"{'':{width}}{'prompts':>8}{'model':>12}{'folded':>12}  folded logits",
    ]
    for row in rows:
        folded = row["folded"]
        note = (
            f"within {row['folded_relative_diff']:.0e} (relative)"
            if folded
            else "not foldable: " + row["not_foldable"].split(": ", 1)[-1].split(", so")[0]
        )
        lines.append(
            f"{row['method']:{width}}{row['prompts']:>8}"
            f"{fmt(row['model']['images_per_s'], 'rate'):>12}"
            f"{fmt(folded['images_per_s'] if folded else None, 'rate'):>12}  {note}"
        )
    return lines
