"""The main job on an embedded default: reprogram a small CLIP on a generated task."""

from __future__ import annotations

from pathlib import Path

from reprogram.engine.config import load_config
from reprogram.engine.progress import Reporter
from reprogram.engine.runs import comparison_table, table_markdown
from reprogram.engine.train import fit


def make_demo_dataset(root: Path, seed: int = 0) -> Path:
    """A small generated dataset (coloured noise per class) with descriptions."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = ["red", "green", "blue", "yellow"]
    colours = {
        "red": (200, 40, 40),
        "green": (40, 200, 40),
        "blue": (40, 40, 200),
        "yellow": (200, 200, 40),
    }
    for split, count in (("train", 16), ("val", 4), ("test", 20)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 120, (48, 48, 3)) + np.array(colours[name]) // 2
                Image.fromarray(image.clip(0, 255).astype("uint8")).save(folder / f"{i}.png")
    folder = root / "descriptions"
    folder.mkdir(exist_ok=True)
    for key in ("cse_1", "cse_2", "cse_3", "des", "dist"):
        data = {
            c: [
                f"a {key.replace('_', ' ')} view of something mostly {c} (variant {j})"
                for j in range(20)
            ]
            for c in classes
        }
        (folder / f"{key}.json").write_text(json.dumps(data))
    return root


def run_demo(out: Path, quiet: bool = False) -> dict:
    reporter = Reporter(quiet)
    dataset = make_demo_dataset(Path(out) / "data")
    run_dirs = []
    for method in ("zero-shot", "vp", "dvp-cse"):
        run_dir = Path(out) / method
        if not (run_dir / "results.json").is_file():
            config = load_config(
                None,
                {
                    "method": method,
                    "dataset": f"folder:{dataset}",
                    "backbone": "random:tiny",
                    "epochs": 5,
                    "shots": 16,
                    "batch_size": 16,
                    "quiet": quiet,
                },
            )
            fit(config, run_dir, resume=(run_dir / "checkpoint.pt").is_file())
        run_dirs.append(run_dir)
    table = comparison_table(run_dirs)
    reporter.line(table_markdown(table))
    return table
