"""The main job on an embedded default: reprogram the packaged toy CLIP on a shifted task.

The toy CLIP (``reprogram.toy``) was pretrained contrastively on a procedural world; the demo
task shows it images under a shift it never saw, where its zero-shot accuracy is poor, and
trains VP and DVP-cse prompts on 16 shots per class on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from reprogram.benchmark import BenchmarkSettings, run_benchmark
from reprogram.engine.progress import Reporter

DEMO_TASK = "channels"
DEMO_METHODS = ("zero-shot", "vp", "dvp-cse")
DEMO_EPOCHS = 20


def run_demo(
    out: Path, quiet: bool = False, task: str = DEMO_TASK, epochs: int = DEMO_EPOCHS
) -> dict[str, float]:
    """Train the demo methods on one seed; return test accuracy (%) per method."""
    reporter = Reporter(quiet)
    reporter.line(
        f"reprogram demo: the packaged toy CLIP on the '{task}' task (a shift it never saw), "
        f"16 shots per class, {epochs} epochs, CPU-friendly"
    )
    settings = BenchmarkSettings(
        tasks=[task], methods=list(DEMO_METHODS), seeds=[1], epochs=epochs, device="cpu"
    )
    table = run_benchmark(out, settings, quiet=quiet)
    accuracy = {
        row["method"]: next(iter(row["cells"].values()))["mean"] for row in table["rows"]
    }
    base = accuracy["zero-shot"]
    lines = [f"{'method':<10} test accuracy"]
    for method, value in accuracy.items():
        gain = "" if method == "zero-shot" else f"  ({value - base:+.1f} points over zero-shot)"
        lines.append(f"{method:<10} {value:5.1f} %{gain}")
    print("\n".join(lines))
    reporter.line(f"runs, data and the table are in {out}/ (open {out}/benchmark.md)")
    return accuracy
