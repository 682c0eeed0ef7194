"""Tables never pool unlike runs; one run shows no spread; the benchmark reuses only like runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from reprogram.engine.config import TrainConfig, save_config
from reprogram.engine.runs import comparison_table, format_cell, row_name, table_markdown
from reprogram.errors import ReprogramError
from reprogram.toy.benchmark import BenchmarkSettings, check_reusable, run_config

BASE = TrainConfig().updated(
    method="ar", dataset="folder:/data/task", backbone="random:tiny", epochs=5
)


def fake_run(folder: Path, config: TrainConfig, accuracy: float, fingerprint: str = "abc") -> Path:
    """A finished run folder (config.yaml + results.json) without training."""
    folder.mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    results = {
        "method": config.method.name,
        "dataset": config.data.dataset,
        "seed": config.seed,
        "shots": config.data.shots,
        "epochs": config.optim.epochs,
        "backbone": {"arch": config.backbone.name, "weights": None, "fingerprint": fingerprint},
        "test_accuracy": accuracy,
        "wall_time_s": 2.0,
    }
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def cells_by_row(table: dict) -> dict[str, dict]:
    return {row_name(row): row["cells"]["folder:/data/task"] for row in table["rows"]}


def test_runs_that_differ_only_by_seed_and_runtime_settings_are_pooled(tmp_path):
    runs = [
        fake_run(tmp_path / "a", BASE, 0.5),
        fake_run(tmp_path / "b", BASE.updated(seed=2, device="cuda", quiet=True), 0.7),
        fake_run(tmp_path / "c", BASE.updated(seed=3, eval_batch_size=8, compile=True), 0.6),
    ]
    table = comparison_table(runs)
    (cell,) = cells_by_row(table).values()
    assert cell["n"] == 3 and cell["seeds"] == [1, 2, 3]
    assert cell["mean"] == pytest.approx(60.0) and cell["std"] == pytest.approx(10.0)
    assert format_cell(cell, wall_time=False) == "60.0 ± 10.0 (n=3)"


def test_unlike_runs_get_cells_of_their_own(tmp_path):
    runs = [
        fake_run(tmp_path / "a1", BASE, 0.5),
        fake_run(tmp_path / "a2", BASE.updated(seed=2), 0.7),
        fake_run(tmp_path / "epochs", BASE.updated(epochs=9), 0.9),
        fake_run(tmp_path / "lr", BASE.updated(lr=1.0, seed=2), 0.1),
        fake_run(tmp_path / "weights", BASE, 0.3, fingerprint="other"),
    ]
    cells = cells_by_row(comparison_table(runs))
    assert len(cells) == 4
    assert sorted(c["n"] for c in cells.values()) == [1, 1, 1, 2]
    by_mean = {round(c["mean"]): name for name, c in cells.items()}
    assert "epochs=9" in by_mean[90] and "lr=1.0" in by_mean[10] and "other" in by_mean[30]
    assert cells[by_mean[60]]["seeds"] == [1, 2]


def test_a_single_run_shows_no_spread(tmp_path):
    table = comparison_table([fake_run(tmp_path / "a", BASE, 0.5)])
    (cell,) = cells_by_row(table).values()
    assert cell["std"] is None
    markdown = table_markdown(table)
    assert "50.0 (n=1, 2 s)" in markdown and "±" not in markdown


def test_other_datasets_share_a_row(tmp_path):
    other = BASE.updated(dataset="folder:/data/other")
    runs = [fake_run(tmp_path / "a", BASE, 0.5), fake_run(tmp_path / "b", other, 0.4)]
    table = comparison_table(runs)
    assert len(table["rows"]) == 1 and len(table["datasets"]) == 2


def test_benchmark_reuses_only_runs_of_the_same_settings(tmp_path):
    settings = BenchmarkSettings(epochs=3, device="cpu")
    wanted = run_config(tmp_path / "task", "ar", 1, settings, True)
    run = fake_run(tmp_path / "run", wanted.updated(device="cpu", quiet=False), 0.5)
    check_reusable(run, wanted)  # same settings: reused
    for changed in (replace(settings, epochs=4), replace(settings, overrides={"lr": "2"})):
        with pytest.raises(ReprogramError, match="other settings"):
            check_reusable(run, run_config(tmp_path / "task", "ar", 1, changed, True))
    with pytest.raises(ReprogramError, match="other settings"):
        check_reusable(run, run_config(tmp_path / "task", "ar", 2, settings, True))
    # descriptions filled in by the run from the task folder do not count as a difference
    filled = fake_run(tmp_path / "filled", wanted.updated(descriptions=["/t/des.json"]), 0.5)
    check_reusable(filled, wanted)


def test_the_toy_benchmark_runs_one_small_task_then_reuses_its_runs(tmp_path):
    from reprogram.toy.benchmark import run_benchmark

    small = dict(shots=2, train_pool=2, val_pool=1, test_per_class=1, batch_size=8, epochs=1)
    tiny = {"backbone": "random:tiny", "weights": None}  # the loop, not the toy CLIP, is tested
    settings = BenchmarkSettings(
        tasks=["digits"],
        methods=["zero-shot", "vp"],
        seeds=[1],
        device="cpu",
        overrides=tiny,
        **small,
    )
    table = run_benchmark(tmp_path, settings, quiet=True)
    assert [row_name(row) for row in table["rows"]] == ["zero-shot", "vp"]
    runs = {
        m: tmp_path / "runs" / "digits" / m / "seed-1" / "results.json" for m in ("zero-shot", "vp")
    }
    for row in table["rows"]:
        [cell] = row["cells"].values()
        accuracy = json.loads(runs[row_name(row)].read_text())["test_accuracy"]
        assert cell["mean"] == pytest.approx(100 * accuracy) and cell["n"] == 1
    assert json.loads((tmp_path / "benchmark.json").read_text())["rows"] == table["rows"]
    assert (tmp_path / "benchmark.md").read_text().splitlines()[2].startswith("| digits |")
    written = {m: p.stat().st_mtime_ns for m, p in runs.items()}
    again = run_benchmark(tmp_path, settings, quiet=True)  # finished runs are reused, not retrained
    assert {m: p.stat().st_mtime_ns for m, p in runs.items()} == written
    assert again["rows"] == table["rows"]
