"""The main job on an embedded default: reprogram the packaged toy CLIP on a shifted task.

The toy CLIP (``reprogram.toy``) was pretrained contrastively on a procedural world of coloured
shapes; the demo task shows it real photos of clothes (Fashion-MNIST), a domain it never saw,
where its zero-shot accuracy is near chance, and trains VP and DVP-cse prompts on 16 shots per
class on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from reprogram.benchmark import BenchmarkSettings, run_benchmark
from reprogram.engine.progress import Reporter

DEMO_TASK = "fashion-mnist"
DEMO_METHODS = ("zero-shot", "vp", "dvp-cse")
DEMO_EPOCHS = 30


def _fashion_mnist_available() -> bool:
    from reprogram.errors import ReprogramError
    from reprogram.toy.tasks import fashion_mnist_dir

    try:
        fashion_mnist_dir()
    except ReprogramError:
        return False
    return True


def run_demo(
    out: Path, quiet: bool = False, task: str = DEMO_TASK, epochs: int = DEMO_EPOCHS
) -> dict[str, float]:
    """Train the demo methods on one seed; return test accuracy (%) per method."""
    reporter = Reporter(quiet)
    if task == "fashion-mnist" and not _fashion_mnist_available():
        reporter.line("Fashion-MNIST is not installed (dataset-fashion-mnist): using digits")
        task = "digits"
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
